"""Figures of the ShapeWorld data: scenes with boxes, masks and captions; bias plots (chapter 1).

::

    show_scenes(folder, "train", [1, 2, 3])
    plot_cooccurrence(bias_statistics(train_json), bias_statistics(shifted_json))
    plot_caption_statistics(all_training_captions)

Scenes are shown with their raw pixels; mask overlays use one fixed colour per category
(matplotlib's tab10) at a constant opacity. Co-occurrence plots show raw fractions on a fixed
[0, 1] colour scale, so train and shifted panels are directly comparable.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from pycocotools import mask as mask_utils

from captionlib.data.shapeworld import BIAS_FIELDS, CATEGORIES, GROUNDS
from captionlib.data.vocab import tokenize

CATEGORY_COLOURS = {name: plt.get_cmap("tab10")(index) for index, name in enumerate(CATEGORIES)}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return json.loads(path.read_text())


def _axes_for(count: int, ax: Axes | Sequence[Axes] | None) -> np.ndarray:
    if ax is None:
        _, axes = plt.subplots(1, count, figsize=(2.9 * count, 4.4), squeeze=False)
        return axes.ravel()
    axes = np.ravel(np.asarray(ax, dtype=object))
    if len(axes) != count:
        raise ValueError(f"got {len(axes)} axes for {count} images")
    return axes


def show_scenes(
    folder: str | Path,
    split: str,
    image_ids: Sequence[int],
    ax: Axes | Sequence[Axes] | None = None,
    n_captions: int = 3,
    mask_alpha: float = 0.45,
) -> np.ndarray:
    """Draw images of a COCO-format split with masks, boxes, category labels and captions.

    `folder` holds ``captions_<split>.json``, ``instances_<split>.json`` and ``images/``.
    Returns the axes (one per image). Chapter 1.
    """
    folder = Path(folder)
    captions = _read(folder / f"captions_{split}.json")
    instances = _read(folder / f"instances_{split}.json")
    ids = list(image_ids)
    if not ids:
        raise ValueError("image_ids is empty")
    images = {image["id"]: image for image in instances["images"]}
    names = {category["id"]: category["name"] for category in instances["categories"]}
    objects: dict[int, list[dict[str, Any]]] = {}
    for annotation in instances["annotations"]:
        objects.setdefault(annotation["image_id"], []).append(annotation)
    texts: dict[int, list[str]] = {}
    for annotation in captions["annotations"]:
        texts.setdefault(annotation["image_id"], []).append(annotation["caption"])
    axes = _axes_for(len(ids), ax)
    for axis, image_id in zip(axes, ids, strict=True):
        if image_id not in images:
            raise ValueError(f"image id {image_id} is not in {folder / f'instances_{split}.json'}")
        image = images[image_id]
        pixels = np.asarray(Image.open(folder / "images" / image["file_name"]).convert("RGB"))
        overlay = np.zeros((*pixels.shape[:2], 4))  # [H, W, RGBA]
        axis.imshow(pixels)
        for annotation in objects.get(image_id, []):
            name = names[annotation["category_id"]]
            colour = CATEGORY_COLOURS.get(name, (0.5, 0.5, 0.5, 1.0))
            overlay[mask_utils.decode(annotation["segmentation"]).astype(bool)] = (
                *colour[:3],
                mask_alpha,
            )
            x, y, w, h = annotation["bbox"]
            axis.add_patch(
                Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.2)
            )
            axis.text(
                x - 0.5,
                y - 1.5,
                name,
                color="white",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8},
            )
        axis.imshow(overlay)
        axis.set_title(f"id {image_id} · {image.get('ground', '')}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
        lines = [textwrap.fill(text, 34) for text in texts.get(image_id, [])[:n_captions]]
        axis.text(
            0.0,
            -0.03,
            "\n".join(lines),
            transform=axis.transAxes,
            va="top",
            ha="left",
            fontsize=7.5,
        )
    return axes


def cooccurrence_table(stats: Mapping[str, Any]) -> tuple[np.ndarray, list[str], list[str]]:
    """p(category present | ground) from `bias_statistics`: matrix [grounds, categories].

    Returns (matrix, ground names, category names). Chapter 1.
    """
    try:
        table = stats["category_given_ground"]
    except KeyError as error:
        raise ValueError("stats must come from shapeworld.bias_statistics") from error
    grounds, categories = list(GROUNDS), list(CATEGORIES)
    matrix = np.array([[table[g][c] for c in categories] for g in grounds], dtype=np.float64)
    return matrix, grounds, categories


def _heatmap(axis: Axes, stats: Mapping[str, Any], title: str) -> None:
    matrix, grounds, categories = cooccurrence_table(stats)
    axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            colour = "black" if value > 0.6 else "white"
            axis.text(
                column, row, f"{value:.2f}", ha="center", va="center", fontsize=6.5, color=colour
            )
    axis.set_xticks(range(len(categories)), categories, rotation=60, fontsize=8)
    axis.set_yticks(range(len(grounds)), grounds, fontsize=8)
    axis.set_title(f"{title} (n = {stats['n_images']})", fontsize=10)


def plot_cooccurrence(
    train_stats: Mapping[str, Any],
    shifted_stats: Mapping[str, Any],
    labels: tuple[str, str] = ("train", "shifted"),
) -> Figure:
    """Two p(category | ground) heatmaps and a bar chart of the controlled bias rates.

    Inputs are `bias_statistics` dicts. Chapter 1.
    """
    figure, axes = plt.subplots(
        1, 3, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1.15, 1.15, 1.0]}
    )
    _heatmap(axes[0], train_stats, labels[0])
    _heatmap(axes[1], shifted_stats, labels[1])
    positions = np.arange(len(BIAS_FIELDS))
    for offset, stats, label in ((-0.2, train_stats, labels[0]), (0.2, shifted_stats, labels[1])):
        rates = [stats["rates"][name] for name in BIAS_FIELDS]
        axes[2].bar(positions + offset, rates, width=0.4, label=label)
    short = [name.removeprefix("p_").replace("_given_", " | ") for name in BIAS_FIELDS]
    axes[2].set_xticks(positions, short, rotation=30, ha="right", fontsize=8)
    axes[2].set_ylim(0, 1)
    axes[2].set_ylabel("rate")
    axes[2].set_title("controlled co-occurrences", fontsize=10)
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_caption_statistics(captions: Iterable[str], top: int = 30) -> Figure:
    """Caption lengths (words, after `tokenize`) and the `top` most frequent words (counts).

    Chapter 1.
    """
    tokens = [tokenize(caption) for caption in captions]
    if not tokens:
        raise ValueError("no captions given")
    counts = Counter(word for words in tokens for word in words).most_common(top)
    figure, axes = plt.subplots(1, 2, figsize=(14, 3.6), gridspec_kw={"width_ratios": [1.0, 2.6]})
    lengths = [len(words) for words in tokens]
    axes[0].hist(lengths, bins=np.arange(min(lengths), max(lengths) + 2) - 0.5, color="tab:blue")
    axes[0].set_xlabel("words per caption")
    axes[0].set_ylabel("captions")
    axes[0].set_title(f"{len(tokens)} captions", fontsize=10)
    axes[1].bar(range(len(counts)), [count for _, count in counts], color="tab:orange")
    axes[1].set_xticks(range(len(counts)), [word for word, _ in counts], rotation=70, fontsize=8)
    axes[1].set_ylabel("occurrences")
    axes[1].set_title(f"the {len(counts)} most frequent words", fontsize=10)
    figure.tight_layout()
    return figure
