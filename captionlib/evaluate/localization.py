"""Do explanations point at the object a word names? Localisation scores (chapter 9).

The scores of book/method.md §7.

For a word that names an object category, its explanation map is turned into a
non-negative heatmap H in [0, 1] (`positive_heatmap`: mean over RGB of max(R, 0), divided
by its maximum) and scored three ways:

- correctness (the paper's score) at thresholds τ ∈ {0, 0.1, …, 0.9}: H_τ = H · 1[H > τ],
  score = Σ_{p ∈ box} H_τ / Σ_p H_τ. Every box is scored on the same H_τ: the authors' code
  thresholds H in place, so that a second box of a category saw a map already thresholded
  with the first box's loop (`correctness` keeps H unchanged);
- the pointing game: does the maximum of H fall on the object's mask;
- energy in the mask: Σ_{p ∈ mask} H / Σ_p H (ShapeWorld has exact masks).

Per (image, category) a score is the maximum over the caption's words naming that
category (and, for correctness, over the category's boxes); `summarize` averages over all
(image, category) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from captionlib.data.coco import CocoSplit
from captionlib.explain.lrp import Explanation

THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(10))
Box = Sequence[float]  # COCO [x, y, w, h] in pixels


def positive_heatmap(explanation_map: Tensor) -> Tensor:
    """H = mean over RGB of max(R, 0), divided by its maximum (0 everywhere if H ≤ 0).

    explanation_map: (..., 3, H, W) pixel relevance per colour channel, or (..., H, W) a
    map without colour channels (then H = max(map, 0) / max). Returns (..., H, W) in [0, 1].
    """
    if explanation_map.dim() >= 3 and explanation_map.shape[-3] == 3:
        heat = explanation_map.clamp(min=0).mean(-3)
    else:
        heat = explanation_map.clamp(min=0)
    peak = heat.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, heat / torch.where(peak > 0, peak, 1.0), torch.zeros_like(heat))


def box_mask(box: Box, size: tuple[int, int]) -> Tensor:
    """COCO box [x, y, w, h] → bool mask (H, W) of the pixels whose centre lies in the box."""
    if len(box) != 4 or box[2] < 0 or box[3] < 0:
        raise ValueError(f"box must be [x, y, w, h] with w, h >= 0, got {list(box)}")
    height, width = size
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    x, y, w, h = (float(v) for v in box)
    inside_y = (ys >= y) & (ys <= y + h)
    inside_x = (xs >= x) & (xs <= x + w)
    return inside_y[:, None] & inside_x[None, :]


def _check_heatmap(heatmap: Tensor) -> None:
    if heatmap.dim() != 2:
        raise ValueError(f"heatmap must be (H, W), got {tuple(heatmap.shape)}")
    if bool((heatmap < 0).any()):
        raise ValueError("heatmap must be non-negative (use positive_heatmap)")


def box_correctness(
    heatmap: Tensor, box: Box, thresholds: Sequence[float] = THRESHOLDS
) -> np.ndarray:
    """Correctness of one box at every τ: Σ_box H_τ / Σ H_τ (0 where Σ H_τ = 0).

    heatmap: (H, W) non-negative, normalised to max 1 (`positive_heatmap`). H is never
    modified: each τ thresholds a fresh copy.
    """
    _check_heatmap(heatmap)
    inside = box_mask(box, (heatmap.shape[0], heatmap.shape[1])).to(heatmap.device)
    scores = []
    for tau in thresholds:
        kept = heatmap * (heatmap > tau)  # H_τ, a new tensor
        total = float(kept.sum())
        scores.append(float(kept[inside].sum()) / total if total > 0 else 0.0)
    return np.asarray(scores)


def correctness(
    heatmap: Tensor, boxes: Sequence[Box], thresholds: Sequence[float] = THRESHOLDS
) -> np.ndarray:
    """The paper's correctness for one map and one category: max over its boxes, per τ."""
    if not boxes:
        raise ValueError("correctness needs at least one box")
    return np.max([box_correctness(heatmap, box, thresholds) for box in boxes], axis=0)


def pointing_game(heatmap: Tensor, mask: Tensor) -> bool:
    """Hit when the maximum of the heatmap lies on the mask (first maximum in row-major
    order); an all-zero map never hits."""
    _check_heatmap(heatmap)
    if mask.shape != heatmap.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and heatmap {tuple(heatmap.shape)} differ")
    if not bool((heatmap > 0).any()):
        return False
    return bool(mask.flatten()[int(heatmap.flatten().argmax())])


def energy_in_mask(heatmap: Tensor, mask: Tensor) -> float:
    """Share of the heatmap's mass on the mask, Σ_mask H / Σ H (0 for an all-zero map)."""
    _check_heatmap(heatmap)
    if mask.shape != heatmap.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and heatmap {tuple(heatmap.shape)} differ")
    total = float(heatmap.sum())
    return float(heatmap[mask.bool()].sum()) / total if total > 0 else 0.0


@dataclass
class ObjectAnnotation:
    """One category's ground truth in one image: boxes [x, y, w, h] and the union of the
    instances' masks (H, W) bool."""

    boxes: list[Box]
    mask: Tensor


@dataclass
class LocalizationRecord:
    """Scores of one (image, category) pair: correctness per threshold (len(THRESHOLDS),),
    pointing-game hit, energy in the mask; each the maximum over the words naming it."""

    image_id: int
    category: str
    correctness: np.ndarray
    pointing: bool
    energy: float


def score_caption(
    image_id: int,
    maps: Tensor,
    words: Sequence[str],
    objects: Mapping[str, ObjectAnnotation],
    word_category: Callable[[str], str | None],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[LocalizationRecord]:
    """Score the words of one caption that name an object present in the image.

    maps: (K, H, W) non-negative normalised heatmaps (`positive_heatmap`), one per word;
    words: the K explained words; objects: category → its annotation in this image;
    word_category: word → category it names, or None. Categories named but absent from
    the image (hallucinations) are skipped: there is no box to score against.
    """
    if maps.dim() != 3 or maps.shape[0] != len(words):
        raise ValueError(f"maps must be (K={len(words)}, H, W), got {tuple(maps.shape)}")
    named: dict[str, list[int]] = {}
    for index, word in enumerate(words):
        category = word_category(word)
        if category is not None and category in objects:
            named.setdefault(category, []).append(index)
    records = []
    for category, indices in named.items():
        annotation = objects[category]
        records.append(
            LocalizationRecord(
                image_id=image_id,
                category=category,
                correctness=np.max(
                    [correctness(maps[i], annotation.boxes, thresholds) for i in indices], axis=0
                ),
                pointing=any(pointing_game(maps[i], annotation.mask) for i in indices),
                energy=max(energy_in_mask(maps[i], annotation.mask) for i in indices),
            )
        )
    return records


@dataclass
class LocalizationSummary:
    """Means over (image, category) pairs, with the per-image spread.

    correctness: (len(thresholds),) mean score per τ; correctness_std: standard deviation
    over pairs per τ; pointing: hit rate; energy: mean energy in the mask; pairs: how many
    (image, category) pairs were scored.
    """

    thresholds: tuple[float, ...]
    correctness: np.ndarray
    correctness_std: np.ndarray
    pointing: float
    energy: float
    pairs: int


def summarize(
    records: Sequence[LocalizationRecord], thresholds: Sequence[float] = THRESHOLDS
) -> LocalizationSummary:
    """Average the records over (image, category) pairs."""
    if not records:
        raise ValueError("no (image, category) pairs to summarize")
    scores = np.stack([record.correctness for record in records])  # (P, len(thresholds))
    return LocalizationSummary(
        thresholds=tuple(thresholds),
        correctness=scores.mean(0),
        correctness_std=scores.std(0),
        pointing=float(np.mean([record.pointing for record in records])),
        energy=float(np.mean([record.energy for record in records])),
        pairs=len(records),
    )


def explanation_maps(pixels: Tensor | None, heatmap: Tensor | None) -> Tensor:
    """An Explanation's maps for scoring: `positive_heatmap` of its pixels (B, K, 3, H, W),
    or of its heatmap (B, K, H, W) when there are no per-channel pixels (Grad-CAM,
    attention). Returns (B, K, H, W)."""
    if pixels is not None:
        return positive_heatmap(pixels)
    if heatmap is None:
        raise ValueError("the explanation has neither pixels nor a heatmap (give images)")
    return positive_heatmap(heatmap)


def image_objects(split: CocoSplit, image_id: int) -> dict[str, ObjectAnnotation]:
    """Ground truth of one image from the split's instances: category → boxes and the union
    of the instance masks (decoded with pycocotools; polygons or RLE)."""
    if split.instances is None:
        raise ValueError(f"split {split.captions_file} was loaded without an instances file")
    coco = split.instances
    split.index_of(image_id)  # KeyError for an image outside the split
    objects: dict[str, ObjectAnnotation] = {}
    for annotation in coco.imgToAnns[image_id]:
        category = coco.cats[annotation["category_id"]]["name"]
        mask = torch.from_numpy(coco.annToMask(annotation).astype(bool))
        if category in objects:
            objects[category].boxes.append(list(annotation["bbox"]))
            objects[category].mask = objects[category].mask | mask
        else:
            objects[category] = ObjectAnnotation(boxes=[list(annotation["bbox"])], mask=mask)
    return objects


def score_explanation(
    explanation: Explanation,
    image_ids: Sequence[int],
    split: CocoSplit,
    id_to_word: Callable[[int], str],
    word_category: Callable[[str], str | None],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[LocalizationRecord]:
    """Localisation records of every object word of B explained captions (chapter 9).

    explanation: pixels or heatmaps for B captions; image_ids: the B images (in the split);
    id_to_word: token id → word (e.g. `Vocabulary.id_to_word`); word_category: word → the
    category it names or None (for ShapeWorld: a SYNONYMS lookup).
    """
    if len(image_ids) != explanation.words.shape[0]:
        raise ValueError(
            f"{len(image_ids)} image ids for {explanation.words.shape[0]} explained captions"
        )
    maps = explanation_maps(explanation.pixels, explanation.heatmap).detach().cpu()
    records = []
    for b, image_id in enumerate(image_ids):
        keep = explanation.mask[b].cpu()
        words = [id_to_word(int(i)) for i in explanation.words[b].cpu()[keep]]
        objects = image_objects(split, image_id)
        records += score_caption(image_id, maps[b][keep], words, objects, word_category, thresholds)
    return records
