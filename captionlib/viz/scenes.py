"""Figures of the ShapeWorld data: scenes with boxes, masks and captions; bias plots (chapter 1).

::

    show_scenes(folder, "train", [1, 2, 3])
    plot_cooccurrence(bias_statistics(train_json), bias_statistics(shifted_json))
    plot_caption_statistics(all_training_captions)

Scenes are shown with their raw pixels; mask overlays use one fixed colour per category
(matplotlib's tab10) at a constant opacity. Co-occurrence plots show raw fractions on a fixed
[0, 1] sequential colour scale (one colour bar), so train and shifted panels are directly
comparable; a fraction without images (NaN) is a hatched grey cell.
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
from matplotlib.ticker import MaxNLocator
from PIL import Image
from pycocotools import mask as mask_utils

from captionlib.data.shapeworld import BIAS_FIELDS, CATEGORIES, GROUNDS
from captionlib.data.vocab import tokenize
from captionlib.viz.style import (
    COLUMN_WIDTH,
    FONT_SIZE,
    PANEL_WIDTH,
    SEQUENTIAL_CMAP,
    TITLE_SIZE,
    axes_size,
    characters_per_line,
    hatch_missing,
    missing_handle,
    panel_grid,
    styled,
    with_missing,
)

LINE_HEIGHT = 1.25 * FONT_SIZE / 72  # inches per line of caption text under a scene
CATEGORY_COLOURS = {name: plt.get_cmap("tab10")(index) for index, name in enumerate(CATEGORIES)}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return json.loads(path.read_text())


def _caption_block(texts: Sequence[str], width: float) -> str:
    """The captions under a scene, bulleted and wrapped to `width` inches."""
    limit = characters_per_line(width - 0.1)
    return "\n".join(
        textwrap.fill(text, limit, initial_indent="• ", subsequent_indent="  ") for text in texts
    )


def _axes_for(
    count: int, ax: Axes | Sequence[Axes] | None, columns: int, caption_lines: int
) -> np.ndarray:
    """`count` axes: `ax` itself, or a new figure with room for `caption_lines` lines of
    captions under every row of images."""
    if ax is None:
        rows, shown = panel_grid(count, columns)
        row_height = PANEL_WIDTH + 0.3 + LINE_HEIGHT * caption_lines
        _, axes = plt.subplots(
            rows,
            shown,
            figsize=(max(PANEL_WIDTH * shown, 2 * PANEL_WIDTH), row_height * rows),
            squeeze=False,
            layout="constrained",
        )
        flat = axes.ravel()
        for axis in flat[count:]:
            axis.set_axis_off()
        return flat[:count]
    axes = np.ravel(np.asarray(ax, dtype=object))
    if len(axes) != count:
        raise ValueError(f"got {len(axes)} axes for {count} images")
    return axes


@styled
def show_scenes(
    folder: str | Path,
    split: str,
    image_ids: Sequence[int],
    ax: Axes | Sequence[Axes] | None = None,
    n_captions: int = 3,
    mask_alpha: float = 0.45,
    columns: int = 4,
) -> np.ndarray:
    """Draw images of a COCO-format split with masks, boxes, category labels and captions.

    `folder` holds ``captions_<split>.json``, ``instances_<split>.json`` and ``images/``.
    Without `ax`, a new figure holds `columns` images per row (at most 4). Returns the axes
    (one per image). Chapter 1.
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
    shown = {image_id: texts.get(image_id, [])[:n_captions] for image_id in ids}
    lines = max(_caption_block(t, PANEL_WIDTH).count("\n") + 1 if t else 0 for t in shown.values())
    axes = _axes_for(len(ids), ax, columns, lines)
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
                fontsize=FONT_SIZE,
                va="bottom",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8},
            )
        axis.imshow(overlay)
        axis.set_title(f"id {image_id} · {image.get('ground', '')}", fontsize=FONT_SIZE)
        axis.set_xticks([])
        axis.set_yticks([])
        width = axes_size(axis)[0] if ax is not None else PANEL_WIDTH
        axis.text(
            0.0,
            -0.03,
            _caption_block(shown[image_id], width),
            transform=axis.transAxes,
            va="top",
            ha="left",
            fontsize=FONT_SIZE,
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


def _heatmap(axis: Axes, stats: Mapping[str, Any], title: str, labels: bool) -> tuple[Any, int]:
    """One p(category | ground) matrix; returns the drawn image and its number of NaN cells."""
    matrix, grounds, categories = cooccurrence_table(stats)
    drawn = axis.imshow(
        matrix, vmin=0.0, vmax=1.0, cmap=with_missing(SEQUENTIAL_CMAP), aspect="auto"
    )
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            colour = "black" if value > 0.6 else "white"
            axis.text(column, row, f"{value:.2f}", ha="center", va="center", color=colour)
    missing = hatch_missing(axis, matrix)
    axis.set_xticks(range(len(categories)), categories if labels else [], rotation=45, ha="right")
    axis.set_yticks(range(len(grounds)), grounds)
    axis.set_title(f"{title} (n = {stats['n_images']})", fontsize=TITLE_SIZE)
    return drawn, missing


@styled
def plot_cooccurrence(
    train_stats: Mapping[str, Any],
    shifted_stats: Mapping[str, Any],
    labels: tuple[str, str] = ("train", "shifted"),
) -> Figure:
    """Two p(category | ground) heatmaps (one colour bar) above a bar chart of the controlled
    bias rates; a rate or fraction without support (NaN) is marked "no images".

    Inputs are `bias_statistics` dicts. Chapter 1.
    """
    figure, axes = plt.subplots(
        3,
        1,
        figsize=(COLUMN_WIDTH, 8.4),
        layout="constrained",
        gridspec_kw={"height_ratios": [1.0, 1.0, 1.25]},
    )
    first, missing_first = _heatmap(axes[0], train_stats, labels[0], labels=False)
    _, missing_second = _heatmap(axes[1], shifted_stats, labels[1], labels=True)
    bar = figure.colorbar(first, ax=axes[:2], fraction=0.04, pad=0.02)
    bar.set_label("p(category | ground)", fontsize=FONT_SIZE)
    positions = np.arange(len(BIAS_FIELDS))
    absent = False
    for offset, stats, label in ((-0.2, train_stats, labels[0]), (0.2, shifted_stats, labels[1])):
        rates = np.array([stats["rates"][name] for name in BIAS_FIELDS], dtype=np.float64)
        axes[2].bar(positions + offset, np.nan_to_num(rates), width=0.4, label=label)
        for position in positions[np.isnan(rates)]:
            axes[2].text(position + offset, 0.02, "n/a", ha="center", rotation=90)
            absent = True
    short = [name.removeprefix("p_").replace("_given_", " | ") for name in BIAS_FIELDS]
    axes[2].set_xticks(positions, short, rotation=30, ha="right", rotation_mode="anchor")
    axes[2].set_ylim(0, 1)
    axes[2].set_ylabel("rate")
    axes[2].set_title("controlled co-occurrences", fontsize=TITLE_SIZE)
    handles, names = axes[2].get_legend_handles_labels()
    if missing_first or missing_second:
        handles.append(missing_handle("no images of this ground"))
        names.append("no images of this ground")
    axes[2].legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if absent:
        axes[2].set_xlabel("n/a: no image has the condition")
    return figure


@styled
def plot_caption_statistics(captions: Iterable[str], top: int = 30) -> Figure:
    """Caption lengths (words, after `tokenize`) above the `top` most frequent words (counts).

    Chapter 1.
    """
    tokens = [tokenize(caption) for caption in captions]
    if not tokens:
        raise ValueError("no captions given")
    counts = Counter(word for words in tokens for word in words).most_common(top)
    figure, axes = plt.subplots(
        2,
        1,
        figsize=(COLUMN_WIDTH, 5.6),
        layout="constrained",
        gridspec_kw={"height_ratios": [1.0, 1.3]},
    )
    lengths = [len(words) for words in tokens]
    axes[0].hist(lengths, bins=np.arange(min(lengths), max(lengths) + 2) - 0.5, color="tab:blue")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel("words per caption")
    axes[0].set_ylabel("captions")
    axes[0].set_title(f"{len(tokens)} captions", fontsize=TITLE_SIZE)
    axes[1].bar(range(len(counts)), [count for _, count in counts], color="tab:orange")
    axes[1].set_xticks(range(len(counts)), [word for word, _ in counts], rotation=90)
    axes[1].set_xlim(-0.6, len(counts) - 0.4)
    axes[1].set_ylabel("occurrences")
    axes[1].set_title(f"the {len(counts)} most frequent words", fontsize=TITLE_SIZE)
    return figure
