"""Does a pixel explanation depend on the explained word? (chapter 8)

The map of "boat" and the map of "water" answer different questions. A method whose maps of
a caption's different words are nearly the same shows the image more than the word: the
class-insensitivity known from modified-backpropagation methods. `word_dependence`
explains the content words of B captions with several methods and measures, per caption,
the mean correlation between the pixel maps of its different content words
(`summaries.cross_word_correlation`), the share of the maps' `|R|` that is negative
(`summaries.sign_shares`) and, for each object word, the share of its map's positive mass
that lies on the object it names (`summaries.object_word_mass`)::

    study = word_dependence(model, encoder, images, caption_ids, words, split, image_ids)
    study.correlation["lrp"]             # (B,) per caption; NaN with < 2 content words
    study.mass["contrastive_lrp"]        # one ObjectWordMass record per object word

"contrastive_lrp" is LRP started from SGLRP's contrastive initial relevance
(`explain_lrp(..., initial="contrastive")`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from captionlib.data.coco import CocoSplit
from captionlib.explain.api import explain
from captionlib.explain.gradients import GRADIENT_METHODS, explain_gradient_family
from captionlib.explain.lrp import Explanation
from captionlib.explain.summaries import (
    ObjectWordMass,
    content_word_mask,
    cross_word_correlation,
    object_word_mass,
    sign_shares,
)
from captionlib.models.base import Captioner

LRP_STARTS = {"lrp": "logit", "contrastive_lrp": "contrastive"}
WORD_DEPENDENCE_METHODS = (*LRP_STARTS, *GRADIENT_METHODS)


def pixel_explanations(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    caption_ids: Tensor,
    methods: Sequence[str] = WORD_DEPENDENCE_METHODS,
) -> dict[str, Explanation]:
    """Every word of B captions explained down to the pixels by each method (chapter 8).

    methods: ids from WORD_DEPENDENCE_METHODS. "lrp" and "contrastive_lrp" (initial="logit"
    and "contrastive") run through `explain`; the gradient methods share the two backward
    passes of `explain_gradient_family`. Returns method → Explanation, in `methods` order.
    """
    unknown = [method for method in methods if method not in WORD_DEPENDENCE_METHODS]
    if unknown:
        raise ValueError(f"methods must be in {WORD_DEPENDENCE_METHODS}, got {unknown}")
    results = {
        method: explain(model, encoder, images, caption_ids, method="lrp", initial=initial)
        for method, initial in LRP_STARTS.items()
        if method in methods
    }
    gradients = [method for method in methods if method in GRADIENT_METHODS]
    if gradients:
        results |= explain_gradient_family(
            model, caption_ids, images=images, encoder=encoder, methods=gradients
        )
    return {method: results[method] for method in methods}


def content_prefix(keep: Tensor) -> Tensor:
    """(B, K) content-word mask → (B,): how many explained words each caption needs, up to
    and including its last content word (0 for a caption without one)."""
    positions = torch.arange(1, keep.shape[1] + 1)
    return (keep.to(torch.long) * positions).amax(1)


@dataclass
class WordDependence:
    """What `word_dependence` measured for B captions.

    correlation: method → (B,) mean correlation between the pixel maps of a caption's
    different content words (NaN for a caption with fewer than two); negative: method →
    (B,) the mean over those words of the share of a map's `|R|` that is negative (all-zero
    maps left out); mass: method → the object words' `ObjectWordMass` records (caption = row
    in the batch), empty without a split; content_words: (B,) how many content words each
    caption has.
    """

    correlation: dict[str, Tensor]
    negative: dict[str, Tensor]
    mass: dict[str, list[ObjectWordMass]]
    content_words: Tensor


def word_dependence(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    caption_ids: Tensor,
    words: Sequence[Sequence[str]],
    split: CocoSplit | None = None,
    image_ids: Sequence[int] | None = None,
    methods: Sequence[str] = WORD_DEPENDENCE_METHODS,
    batch_size: int = 16,
) -> WordDependence:
    """Cross-word correlation (and object mass) of every method's pixel maps (chapter 8).

    images (B, 3, H, W) normalised; caption_ids (B, T) the captions, <start> first; words:
    the explained words of each caption (`api.explained_words`); the content words are the
    objects, attributes and scene words (`summaries.content_word_mask`). Only captions with
    at least two content words are explained, each cut after its last content word (under
    teacher forcing word t depends only on the words before it), grouped by that length and
    explained `batch_size` captions at a time. With split and image_ids (the B images' ids)
    the object words' pixel maps are measured on their objects too (at pixel resolution).
    """
    if len(words) != caption_ids.shape[0] or images.shape[0] != caption_ids.shape[0]:
        raise ValueError(
            f"got {images.shape[0]} images, {caption_ids.shape[0]} captions and "
            f"{len(words)} word lists"
        )
    if (split is None) != (image_ids is None):
        raise ValueError("give both split and image_ids, or neither")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keep = content_word_mask(words, caption_ids.shape[1] - 1)  # (B, K)
    needed = content_prefix(keep)
    correlation = {
        method: torch.full((len(words),), torch.nan, dtype=torch.float64) for method in methods
    }
    negative = {method: correlation[method].clone() for method in methods}
    mass: dict[str, list[ObjectWordMass]] = {method: [] for method in methods}
    explained = [b for b in range(len(words)) if int(keep[b].sum()) >= 2]
    for length in sorted({int(needed[b]) for b in explained}):
        group = [b for b in explained if int(needed[b]) == length]
        for start in range(0, len(group), batch_size):
            rows = group[start : start + batch_size]
            ids = caption_ids[rows, : length + 1]
            results = pixel_explanations(model, encoder, images[rows], ids, methods)
            cut = [list(words[b][:length]) for b in rows]
            for method, result in results.items():
                heatmap = result.heatmap
                if heatmap is None:
                    raise ValueError(f"method {method!r} returned no pixel maps")
                kept = keep[rows, :length]
                correlation[method][rows] = cross_word_correlation(heatmap, kept)
                _, negative_share = sign_shares(heatmap.flatten(2))  # (R, length)
                negative[method][rows] = negative_share.where(kept, torch.nan).nanmean(1)
                if split is not None and image_ids is not None:
                    records = object_word_mass(
                        heatmap.flatten(2),
                        cut,
                        [image_ids[b] for b in rows],
                        split,
                        (heatmap.shape[2], heatmap.shape[3]),
                    )
                    mass[method] += [
                        dataclasses.replace(record, caption=rows[record.caption])
                        for record in records
                    ]
    for method in methods:
        mass[method].sort(key=lambda record: (record.caption, record.step))
    return WordDependence(
        correlation=correlation, negative=negative, mass=mass, content_words=keep.sum(1)
    )
