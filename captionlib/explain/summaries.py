"""Numbers that summarise explanations over many words (chapters 5, 7 and 8).

A heat map shows one word of one image; these functions turn many of them into a few
measured numbers:

- `object_mask`, `cell_coverage`: where an annotated object is, in pixels and on the
  feature grid (share of each grid cell the object covers);
- `mass_inside`: the share of a map's positive mass that lies on the object;
- `object_word_mass`: that share for every caption word naming an object in the image,
  with the object's area as the baseline a uniform map would reach;
- `sign_shares`: how much of a map's `|R|` is positive and how much negative;
- `word_share`, `word_class`, `mean_by_class`: how much relevance an explained word draws
  from the preceding words rather than the image, by kind of word;
- `occluded_logits`, `deletion_effect`, `object_deletion_effect`: what the model's logits
  do when grid locations of the encoder output F are set to zero (the model run on
  features, no explanation rule);
- `map_correlation`: Pearson correlation of two maps of the same word;
- `content_word_mask`, `cross_word_correlation`: how much the maps of a caption's different
  content words resemble each other (does the explanation depend on the word?).

Explainers return raw tensors (`captionlib.explain.lrp.Explanation`); nothing here
normalises a map for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from captionlib.data.coco import CocoSplit
from captionlib.data.shapeworld import COLOURS, GROUNDS, SYNONYMS
from captionlib.explain.lrp import explained_logits
from captionlib.models.base import Captioner

OBJECT_WORDS = {word: category for category, words in SYNONYMS.items() for word in words}
ATTRIBUTE_WORDS = frozenset(
    [*COLOURS, "small", "little", "big", "large", "two", "three"]
)  # colour, size, number
SCENE_WORDS = frozenset(
    [*GROUNDS, "sky", "field", "beach", "street", "snowy", "sandy", "sea", "river", "desert"]
    + ["lake", "grassy", "meadow", "lawn", "landscape"]
)  # the background: ground and sky
FUNCTION_WORDS = frozenset(
    ["a", "an", "the", "on", "in", "of", "with", "and", "there", "is", "are", "to", "at"]
    + ["above", "below", "over", "under", "across", "through", "near", "next", "beside"]
    + ["behind", "front", "left", "right"]
)  # articles, prepositions, conjunctions, auxiliaries
WORD_CLASSES = ("object", "attribute", "scene", "function", "other", "end")
CONTENT_CLASSES = ("object", "attribute", "scene")  # words that name something in the image


def word_class(word: str) -> str:
    """The kind of a ShapeWorld caption word, one of WORD_CLASSES.

    object: names an object category (any synonym); attribute: colour, size or number;
    scene: ground or sky; function: article, preposition, conjunction, auxiliary; end: the
    <end> token; other: the rest (verbs, "picture", "shirt", …).
    """
    if word in OBJECT_WORDS:
        return "object"
    if word in ATTRIBUTE_WORDS:
        return "attribute"
    if word in SCENE_WORDS:
        return "scene"
    if word in FUNCTION_WORDS:
        return "function"
    if word == "<end>":
        return "end"
    return "other"


def object_mask(split: CocoSplit, image_id: int, category: str) -> Tensor:
    """Union of the segmentation masks of every `category` instance in the image, (H, W)
    bool; all False when the image has none."""
    if split.instances is None:
        raise ValueError(f"split {split.captions_file} was loaded without an instances file")
    instances = split.instances
    split.index_of(image_id)  # KeyError for an image outside the split
    names = {cat["name"]: cat_id for cat_id, cat in instances.cats.items()}
    if category not in names:
        raise ValueError(f"unknown category {category!r}; the split has {sorted(names)}")
    info = instances.imgs[image_id]
    mask = torch.zeros(info["height"], info["width"], dtype=torch.bool)
    for annotation in instances.imgToAnns[image_id]:
        if annotation["category_id"] == names[category]:
            mask |= torch.from_numpy(instances.annToMask(annotation).astype(bool))
    return mask


def cell_coverage(mask: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Share of each grid cell's pixels inside a mask: (H, W) → (N,) in [0, 1], row-major.

    H and W must be multiples of the grid size (112 = 8 · 14 for ShapeWorld).
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(mask.shape)}")
    height, width = mask.shape
    rows, columns = grid_size
    if rows < 1 or columns < 1 or height % rows or width % columns:
        raise ValueError(f"a {height}×{width} mask does not tile into a {rows}×{columns} grid")
    blocks = mask.to(torch.float64).view(rows, height // rows, columns, width // columns)
    return blocks.mean((1, 3)).flatten()  # (rows · columns,)


def mass_inside(scores: Tensor, inside: Tensor) -> Tensor:
    """Share of the positive mass of maps that lies inside a region: (..., M) → (...).

    scores: maps over M pixels or grid cells (attention, or signed relevance: only the
    positive part counts, as in the paper's evaluation); inside: (M,) or (..., M) weights in
    [0, 1] (a bool mask or `cell_coverage`). NaN where a map has no positive mass.
    """
    if inside.shape[-1] != scores.shape[-1]:
        raise ValueError(f"inside has {inside.shape[-1]} entries, the maps have {scores.shape[-1]}")
    positive = scores.to(torch.float64).clamp(min=0)
    weights = inside.to(torch.float64)
    if weights.min() < 0 or weights.max() > 1:
        raise ValueError("inside must hold weights in [0, 1]")
    total = positive.sum(-1)
    return (positive * weights).sum(-1) / total.where(total > 0, torch.nan)


def sign_shares(relevance: Tensor) -> tuple[Tensor, Tensor]:
    """Shares `Σ R⁺ / Σ |R|` and `Σ R⁻ / Σ |R|` (as a positive number) of maps (..., M) → (...),
    (...); NaN for an all-zero map."""
    values = relevance.to(torch.float64)
    total = values.abs().sum(-1)
    total = total.where(total > 0, torch.nan)
    return values.clamp(min=0).sum(-1) / total, (-values).clamp(min=0).sum(-1) / total


@dataclass
class ObjectWordMass:
    """One caption word that names an object present in the image.

    caption: row b of the explained batch; step: the word's position t (words[b][t]);
    word, category: the word and the category it names; mass: `mass_inside` of the word's
    map on the object's cells; area: the object's share of the image (the mass a uniform
    map would put on it).
    """

    caption: int
    step: int
    word: str
    category: str
    mass: float
    area: float


def object_word_mass(
    scores: Tensor,
    words: Sequence[Sequence[str]],
    image_ids: Sequence[int],
    split: CocoSplit,
    grid_size: tuple[int, int],
) -> list[ObjectWordMass]:
    """`mass_inside` the named object for every object word of B captions.

    scores: (B, K, N) one grid map per explained word (`Explanation.locations`: attention
    weights or the relevance of F summed over channels); words: the K explained words of
    each caption (shorter lists for shorter captions); image_ids: the B images. Words naming
    a category absent from the image (hallucinations) are skipped: there is no object to
    measure against.
    """
    if scores.dim() != 3 or scores.shape[0] != len(words) or len(words) != len(image_ids):
        raise ValueError(
            f"scores must be (B, K, N) for B = {len(words)} captions and {len(image_ids)} "
            f"images, got shape {tuple(scores.shape)}"
        )
    records = []
    for row, (caption_words, image_id) in enumerate(zip(words, image_ids, strict=True)):
        coverages: dict[str, Tensor] = {}
        for step, word in enumerate(caption_words):
            category = OBJECT_WORDS.get(word)
            if category is None:
                continue
            if category not in coverages:
                coverages[category] = cell_coverage(
                    object_mask(split, int(image_id), category), grid_size
                )
            coverage = coverages[category]
            if coverage.sum() == 0:
                continue
            mass = float(mass_inside(scores[row, step], coverage))
            records.append(ObjectWordMass(row, step, word, category, mass, float(coverage.mean())))
    return records


def word_share(locations: Tensor, word_relevance: Tensor) -> Tensor:
    """Share of an explained word's relevance that comes from the preceding words.

    locations: (B, K, N) relevance per grid location; word_relevance: (B, K, K) relevance
    of each input word → (B, K): `Σ_i |r_i| / (Σ_i |r_i| + Σ_k |R_k|)`, NaN when both are 0.
    """
    if locations.shape[:2] != word_relevance.shape[:2]:
        raise ValueError(
            f"locations {tuple(locations.shape)} and word_relevance "
            f"{tuple(word_relevance.shape)} must share (B, K)"
        )
    words = word_relevance.to(torch.float64).abs().sum(-1)
    total = words + locations.to(torch.float64).abs().sum(-1)
    return words / total.where(total > 0, torch.nan)


def mean_by_class(values: Tensor, words: Sequence[Sequence[str]]) -> dict[str, tuple[float, int]]:
    """Mean of per-word values (B, K) by `word_class`: {class: (mean, count)}, NaNs and the
    positions beyond each caption's words left out; classes in WORD_CLASSES order."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row, caption_words in enumerate(words):
        if len(caption_words) > values.shape[1]:
            raise ValueError(
                f"caption {row} has {len(caption_words)} words, values only "
                f"{values.shape[1]} columns"
            )
        for step, word in enumerate(caption_words):
            value = float(values[row, step])
            if value != value:  # NaN
                continue
            kind = word_class(word)
            sums[kind] = sums.get(kind, 0.0) + value
            counts[kind] = counts.get(kind, 0) + 1
    return {
        kind: (sums[kind] / counts[kind], counts[kind]) for kind in WORD_CLASSES if kind in counts
    }


@dataclass
class OcclusionResult:
    """Teacher-forced scores of the caption words under P occlusions, each (B, P, K).

    logits: the logit of each caption word; log_probs: its log-probability. Entries for
    padding positions are computed but meaningless (mask them with `Explanation.mask`).
    """

    logits: Tensor
    log_probs: Tensor


@torch.no_grad()
def occluded_logits(
    model: Captioner,
    features: Tensor,
    caption_ids: Tensor,
    occlude: Tensor,
    batch_size: int = 1024,
) -> OcclusionResult:
    """Run the captioner on features with some grid locations set to zero.

    features: (B, N, C) encoder grids; caption_ids: (B, T) captions, <start> first;
    occlude: (B, P, N) bool, row p of image b zeroes F_k wherever occlude[b, p, k]. Returns
    the caption words' logits and log-probabilities, (B, P, K) with K = T − 1. A row of all
    False gives the unoccluded model; a row of all True a model that sees no image content
    (its projected features fall back to ReLU of the biases). The B·P runs go through the
    model `batch_size` at a time, in eval mode (restored afterwards).
    """
    if features.dim() != 3 or caption_ids.dim() != 2 or occlude.dim() != 3:
        raise ValueError(
            f"features must be (B, N, C), caption_ids (B, T), occlude (B, P, N); got "
            f"{tuple(features.shape)}, {tuple(caption_ids.shape)}, {tuple(occlude.shape)}"
        )
    batch, locations, _ = features.shape
    if (
        caption_ids.shape[0] != batch
        or occlude.shape[0] != batch
        or (occlude.shape[2] != locations)
    ):
        raise ValueError(
            f"occlude must be ({batch}, P, {locations}) and caption_ids ({batch}, T); got "
            f"{tuple(occlude.shape)} and {tuple(caption_ids.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parameter = next(model.parameters())
    rows = occlude.shape[1]
    keep = (~occlude.reshape(batch * rows, locations)).to(parameter.device, parameter.dtype)
    images = torch.arange(batch).repeat_interleave(rows)  # (B·P,) image of each run
    grid = features.to(device=parameter.device, dtype=parameter.dtype)
    captions = caption_ids.to(parameter.device)
    logits, log_probs = [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, batch * rows, batch_size):
            chunk = images[start : start + batch_size]  # (R,)
            occluded = grid[chunk] * keep[start : start + batch_size].unsqueeze(-1)  # (R, N, C)
            output = model(occluded, captions[chunk]).logits  # (R, K, V)
            logits.append(explained_logits(output, captions[chunk]))
            log_probs.append(explained_logits(output.log_softmax(-1), captions[chunk]))
    finally:
        model.train(was_training)
    steps = caption_ids.shape[1] - 1
    return OcclusionResult(
        logits=torch.cat(logits).view(batch, rows, steps),
        log_probs=torch.cat(log_probs).view(batch, rows, steps),
    )


def top_cells(scores: Tensor, count: int) -> Tensor:
    """The `count` highest-scoring cells of each map: (..., N) → (..., N) bool."""
    if not 0 < count <= scores.shape[-1]:
        raise ValueError(f"count must be in [1, {scores.shape[-1]}], got {count}")
    indices = scores.topk(count, dim=-1).indices
    return torch.zeros(scores.shape, dtype=torch.bool).scatter_(-1, indices.cpu(), True)


def deletion_effect(
    model: Captioner, features: Tensor, caption_ids: Tensor, occlude: Tensor
) -> Tensor:
    """Logit change of each word when its own cells are zeroed: (B, K) = occluded − original.

    features (B, N, C), caption_ids (B, T), occlude (B, K, N) bool: row t says which cells to
    zero when word t is scored (e.g. `top_cells` of word t's map). Negative: the word lost
    support.
    """
    steps = caption_ids.shape[1] - 1
    if occlude.dim() != 3 or occlude.shape[1] != steps:
        raise ValueError(
            f"occlude must be (B, {steps}, N), one row per word; got {tuple(occlude.shape)}"
        )
    rows = torch.cat([torch.zeros_like(occlude[:, :1]), occlude], dim=1)  # (B, 1 + K, N)
    logits = occluded_logits(model, features, caption_ids, rows).logits  # (B, 1 + K, K)
    return logits[:, 1:].diagonal(dim1=1, dim2=2) - logits[:, 0]


def object_deletion_effect(
    model: Captioner,
    features: Tensor,
    caption_ids: Tensor,
    records: Sequence[ObjectWordMass],
    split: CocoSplit,
    image_ids: Sequence[int],
    grid_size: tuple[int, int],
) -> Tensor:
    """Logit change of each object word when its object is removed: (len(records),).

    features (B, N, C), caption_ids (B, T) and image_ids (B) as given to
    `object_word_mass`, which made the records. For each record every grid cell the
    object's mask touches is zeroed and the word re-scored (occluded − original; negative:
    the word lost support). Only the captions with records run, one row per record.
    """
    if not records:
        return torch.zeros(0, dtype=torch.float64)
    by_caption: dict[int, list[int]] = {}
    for index, record in enumerate(records):
        by_caption.setdefault(record.caption, []).append(index)
    rows = list(by_caption)
    occlude = torch.zeros(
        len(rows), 1 + max(map(len, by_caption.values())), features.shape[1], dtype=torch.bool
    )  # (captions with records, 1 + most records per caption, N); row 0: nothing zeroed
    for slot, caption in enumerate(rows):
        for offset, index in enumerate(by_caption[caption], start=1):
            mask = object_mask(split, int(image_ids[caption]), records[index].category)
            occlude[slot, offset] = cell_coverage(mask, grid_size) > 0
    logits = occluded_logits(model, features[rows], caption_ids[rows], occlude).logits
    effect = torch.zeros(len(records), dtype=torch.float64)
    for slot, caption in enumerate(rows):
        for offset, index in enumerate(by_caption[caption], start=1):
            step = records[index].step
            effect[index] = float(logits[slot, offset, step] - logits[slot, 0, step])
    return effect


def map_correlation(first: Tensor, second: Tensor) -> Tensor:
    """Pearson correlation of two maps of the same words, (..., M) and (..., M) → (...);
    NaN where a map is constant."""
    if first.shape != second.shape:
        raise ValueError(f"maps differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
    a = first.to(torch.float64) - first.to(torch.float64).mean(-1, keepdim=True)
    b = second.to(torch.float64) - second.to(torch.float64).mean(-1, keepdim=True)
    norm = a.norm(dim=-1) * b.norm(dim=-1)
    return (a * b).sum(-1) / norm.where(norm > 0, torch.nan)


def content_word_mask(words: Sequence[Sequence[str]], steps: int) -> Tensor:
    """(B, steps) bool: True where word t of caption b is a content word, one whose
    `word_class` is in CONTENT_CLASSES (an object, an attribute or the scene); positions
    beyond a caption's words are False (chapter 8)."""
    mask = torch.zeros(len(words), steps, dtype=torch.bool)
    for row, caption_words in enumerate(words):
        if len(caption_words) > steps:
            raise ValueError(f"caption {row} has {len(caption_words)} words, more than {steps}")
        for step, word in enumerate(caption_words):
            mask[row, step] = word_class(word) in CONTENT_CLASSES
    return mask


def cross_word_correlation(maps: Tensor, keep: Tensor | None = None) -> Tensor:
    """Mean Pearson correlation between the maps of different words of each caption.

    maps: (B, K, ...) one map per explained word (a pixel map (H, W), a grid (N,), …;
    flattened); keep: (B, K) bool, the words to compare (e.g. `content_word_mask`), None for
    all. Returns (B,): the mean of corr(map_i, map_j) over the pairs i < j of kept words
    whose maps are not constant; NaN where a caption has fewer than two such words. 1: every
    word gets the same map up to scale and offset; 0: the maps are unrelated (chapter 8).
    """
    if maps.dim() < 3:
        raise ValueError(f"maps must be (B, K, ...), got shape {tuple(maps.shape)}")
    batch, steps = maps.shape[:2]
    if keep is None:
        keep = torch.ones(batch, steps, dtype=torch.bool)
    if keep.shape != (batch, steps):
        raise ValueError(f"keep must be ({batch}, {steps}), got {tuple(keep.shape)}")
    flat = maps.detach().flatten(2).to(torch.float64)  # (B, K, M)
    centred = flat - flat.mean(-1, keepdim=True)
    norms = centred.norm(dim=-1, keepdim=True)  # (B, K, 1)
    valid = keep.to(maps.device) & (norms[..., 0] > 0)
    unit = centred / norms.where(norms > 0, 1.0)
    correlations = unit @ unit.transpose(1, 2)  # (B, K, K)
    pairs = valid.unsqueeze(2) & valid.unsqueeze(1)
    pairs &= ~torch.eye(steps, dtype=torch.bool, device=maps.device)
    count = pairs.sum((1, 2))
    total = (correlations * pairs).sum((1, 2))
    return (total / count.where(count > 0, 1)).where(count > 0, torch.nan).cpu()


def rank_correlation(first: Tensor, second: Tensor) -> Tensor:
    """Spearman correlation of two maps of the same words, (..., M) and (..., M) → (...): the
    Pearson correlation of their ranks (ties broken by position; chapter 9's sanity check)."""
    return map_correlation(_ranks(first), _ranks(second))


def _ranks(values: Tensor) -> Tensor:
    return values.argsort(-1).argsort(-1).to(torch.float64)


def summarize_mass(
    records: Mapping[str, Sequence[ObjectWordMass]],
) -> dict[str, dict[str, float | int]]:
    """{method: records} → {method: {"words" (count), "mean mass on object", "mean object
    area", "mass > area" (share of words)}}: a table row per method (NaN masses left out)."""
    table: dict[str, dict[str, float | int]] = {}
    for name, rows in records.items():
        kept = [row for row in rows if row.mass == row.mass]
        if not kept:
            raise ValueError(f"no object words with a defined mass for {name!r}")
        table[name] = {
            "words": len(kept),
            "mean mass on object": sum(row.mass for row in kept) / len(kept),
            "mean object area": sum(row.area for row in kept) / len(kept),
            "mass > area": sum(row.mass > row.area for row in kept) / len(kept),
        }
    return table
