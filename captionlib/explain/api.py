"""One entry point for every explanation method of the book (chapters 5, 7 and 8).

::

    explain(model, encoder, images, caption_ids=None, method="lrp", **options)

explains every word of B captions and returns an `Explanation`. Without caption_ids the
model's own caption is explained: beam search (beam 3, book/method.md §4), re-run with teacher
forcing. Methods live in the registry `METHODS` (name → function); later chapters add
theirs with `register_method`. A method function is called as::

    function(model, caption_ids, images=..., encoder=..., features=..., pad_id=..., **options)

and returns an `Explanation`.

Two requests explain less than every word, at a fraction of the cost::

    explain_words(model, encoder, images, caption_ids, rows, steps, methods)
    explain_word_relevance(model, features, caption_ids, methods)

`explain_words` explains the selected words (rows[i], steps[i]) only, pushing only their
relevance or gradients through the CNN (`captionlib.explain.selected`; chapter 10, and
chapter 9 with trim=True), and returns method → `WordExplanations`;
`explain_word_relevance` gives every word's word relevance from the decoder alone
(chapter 9). Every request is validated once by `check_request` (and `check_words`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from captionlib.data.vocab import Vocabulary
from captionlib.explain.attention import explain_attention
from captionlib.explain.gradients import GRADIENT_METHODS, gradient_method
from captionlib.explain.lrp import (
    Explanation,
    check_captions,
    check_lrp_options,
    explain_lrp,
    explaining,
)
from captionlib.explain.selected import (
    LRP_METHODS,
    WORD_RELEVANCE_METHODS,
    WordExplanations,
    batch_schedule,
    every_word_relevance,
    trimmed_schedule,
)
from captionlib.models.base import Captioner
from captionlib.models.decoding import DecodedCaption, beam_search
from captionlib.models.encoder import to_grid

ExplainMethod = Callable[..., Explanation]


def _lrp(model: Captioner, caption_ids: Tensor, **options: Any) -> Explanation:
    if "attention" in options:
        raise ValueError("method 'lrp' uses the paper's attention rule; use method='attnlrp'")
    return explain_lrp(model, caption_ids, **options)


def _attnlrp(model: Captioner, caption_ids: Tensor, **options: Any) -> Explanation:
    if "attention" in options:
        raise ValueError("method 'attnlrp' sets the attention rule itself")
    return explain_lrp(model, caption_ids, attention="attnlrp", **options)


METHODS: dict[str, ExplainMethod] = {
    "lrp": _lrp,
    "attnlrp": _attnlrp,
    "attention": explain_attention,
    **{name: gradient_method(name) for name in GRADIENT_METHODS},
}


def register_method(name: str, function: ExplainMethod, overwrite: bool = False) -> None:
    """Add an explanation method under `name` (e.g. chapter 8's gradient methods)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    if name in METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered (pass overwrite=True)")
    METHODS[name] = function


def captions_to_ids(
    captions: list[DecodedCaption],
    start_id: int,
    end_id: int,
    pad_id: int,
    max_length: int | None = None,
) -> Tensor:
    """Decoded captions → (B, T) ids: <start>, the words, <end> (left out when the caption
    hit `max_length` without ending), padded with pad_id."""
    rows = []
    for caption in captions:
        ended = max_length is None or len(caption.token_ids) < max_length
        rows.append([start_id, *caption.token_ids, *([end_id] if ended else [])])
    length = max(len(row) for row in rows)
    return torch.tensor([row + [pad_id] * (length - len(row)) for row in rows], dtype=torch.long)


def explained_words(explanation: Explanation, vocabulary: Vocabulary, row: int = 0) -> list[str]:
    """The explained words of caption `row`: the model's words and <end>, no padding
    (chapters 5 and 7)."""
    kept = explanation.words[row][explanation.mask[row]]
    return [vocabulary.id_to_word(int(word)) for word in kept]


# normalised images (recipes.normalize) lie within about ±3; raw 0–255 values do not
MAX_NORMALISED_VALUE = 10.0


def _check_tensor(name: str, value: Tensor, dims: int, shape_text: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_text}, got {type(value).__name__}")
    if value.dim() != dims:
        raise ValueError(f"{name} must have shape {shape_text}, got {tuple(value.shape)}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(value.shape)})")


def check_request(
    images: Tensor | None,
    features: Tensor | None,
    caption_ids: Tensor | None,
    start_id: int = Vocabulary.START_ID,
) -> None:
    """Validate one explanation request once, with errors that name the argument
    (chapter 7): images (B, 3, H, W) finite floats, normalised (not 0–255); features
    (B, N, C) finite floats; caption_ids (B, T) integer ids, each row starting with
    <start>; a non-empty batch, the same B everywhere."""
    batch = {}
    if images is not None:
        _check_tensor("images", images, 4, "(B, 3, H, W)")
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 colour channels, got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"images must be normalised floats (recipes.normalize), got {images.dtype}"
            )
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        largest = float(images.abs().max())
        if largest > MAX_NORMALISED_VALUE:
            raise ValueError(
                f"images look unnormalised (|value| up to {largest:g}): pass "
                "recipes.normalize(uint8 images), as for training"
            )
        batch["images"] = images.shape[0]
    if features is not None:
        _check_tensor("features", features, 3, "(B, N, C)")
        if not features.is_floating_point():
            raise TypeError(f"features must be floats, got {features.dtype}")
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or infinite values")
        batch["features"] = features.shape[0]
    if caption_ids is not None:
        _check_tensor("caption_ids", caption_ids, 2, "(B, T)")
        if caption_ids.is_floating_point() or caption_ids.dtype == torch.bool:
            raise TypeError(f"caption_ids must be integer ids, got {caption_ids.dtype}")
        if caption_ids.shape[1] < 2:
            raise ValueError(
                f"caption_ids must hold <start> and at least one word, got shape "
                f"{tuple(caption_ids.shape)}"
            )
        rows = (caption_ids[:, 0] != start_id).nonzero().flatten().tolist()
        if rows:
            raise ValueError(f"caption_ids rows {rows[:10]} do not start with <start> ({start_id})")
        batch["caption_ids"] = caption_ids.shape[0]
    if len(set(batch.values())) > 1:
        raise ValueError(f"batch sizes differ: {batch}")


def explain(
    model: Captioner,
    encoder: nn.Module | None,
    images: Tensor | None,
    caption_ids: Tensor | None = None,
    method: str = "lrp",
    *,
    features: Tensor | None = None,
    beam_size: int = 3,
    max_length: int = 20,
    start_id: int = Vocabulary.START_ID,
    end_id: int = Vocabulary.END_ID,
    pad_id: int = Vocabulary.PAD_ID,
    **options: Any,
) -> Explanation:
    """Explain every word of B captions with `method` (one of `METHODS`).

    model: the captioner; encoder and images (B, 3, H, W), or encoder=None, images=None and
    features (B, N, C) (stage 1 / no pixel maps). caption_ids: (B, T) captions to explain,
    <start> first; None explains the model's own beam-search caption (beam_size,
    max_length, start_id, end_id). options go to the method, e.g. epsilon, head, composite
    (LRP) or mode (attention).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; registered: {sorted(METHODS)}")
    if images is None and features is None:
        raise ValueError("give encoder and images, or features, to explain")
    check_request(images, features, caption_ids, start_id)
    if caption_ids is None:
        grid = features
        if grid is None:
            if encoder is None or images is None:
                raise ValueError("give encoder and images, or features, to caption an image")
            grid = encode(model, encoder, images)
        decoded = beam_search(model, grid, start_id, end_id, beam_size, max_length)
        caption_ids = captions_to_ids(decoded, start_id, end_id, pad_id, max_length)
    return METHODS[method](
        model,
        caption_ids,
        images=images,
        encoder=encoder,
        features=features,
        pad_id=pad_id,
        **options,
    )


def encode(model: Captioner, encoder: nn.Module, images: Tensor) -> Tensor:
    """The grid features (B, N, C) that `model` reads for images (B, 3, H, W): the encoder's
    CNN (its `.features`, or the encoder itself) in eval mode, without gradients
    (chapters 5 and 9)."""
    check_request(images, None, None)
    parameter = next(model.parameters())
    cnn = getattr(encoder, "features", encoder)
    with explaining(model, encoder), torch.no_grad():
        return to_grid(cnn(images.to(device=parameter.device, dtype=parameter.dtype)))


def check_words(rows: Tensor, steps: Tensor, caption_ids: Tensor, pad_id: int) -> None:
    """Validate a selection of words (chapter 10): rows and steps (W,) integer tensors of
    the same non-zero length, rows[i] a caption of caption_ids (B, T), steps[i] one of its
    explained words (0 ≤ step < T − 1), none of them padding."""
    for name, value in (("rows", rows), ("steps", steps)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (W,), got {type(value).__name__}")
        if value.dim() != 1:
            raise ValueError(f"{name} must be 1-D (W,), got shape {tuple(value.shape)}")
        if value.is_floating_point() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer indices, got {value.dtype}")
    if rows.shape != steps.shape:
        raise ValueError(f"rows ({rows.shape[0]}) and steps ({steps.shape[0]}) differ in length")
    if rows.numel() == 0:
        raise ValueError("no words selected: rows and steps are empty")
    batch, explained = caption_ids.shape[0], caption_ids.shape[1] - 1
    for name, value, size in (("rows", rows, batch), ("steps", steps, explained)):
        low, high = int(value.min()), int(value.max())
        if low < 0 or high >= size:
            raise ValueError(f"{name} must be in [0, {size}), got values from {low} to {high}")
    padded = (caption_ids[rows, steps + 1] == pad_id).nonzero().flatten().tolist()
    if padded:
        raise ValueError(f"selected words {padded[:10]} (indices into rows, steps) are padding")


def _chosen_methods(methods: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """The requested methods, each once, in order; clear errors for unknown ones."""
    if isinstance(methods, str):
        raise TypeError(f"methods must be a sequence of method names, got the string {methods!r}")
    chosen = list(dict.fromkeys(methods))
    if not chosen:
        raise ValueError("methods is empty: name at least one method")
    unknown = [method for method in chosen if method not in allowed]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(allowed)}")
    return chosen


def explain_words(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    caption_ids: Tensor,
    rows: Tensor,
    steps: Tensor,
    methods: Sequence[str],
    *,
    trim: bool = False,
    start_id: int = Vocabulary.START_ID,
    pad_id: int = Vocabulary.PAD_ID,
) -> dict[str, WordExplanations]:
    """Explain the selected words (rows[i], steps[i]) of B captions with every method of
    `methods` (chapter 10; chapter 9 with trim=True); returns method → `WordExplanations`.

    model, encoder and images (B, 3, H, W): as for `explain`; caption_ids: (B, T), <start>
    first; rows, steps: (W,) the caption and the step (index into caption_ids[:, 1:]) of each
    selected word. LRP, AttnLRP and SELECTED_GRADIENT_METHODS (all gradient methods with
    trim=True) push only the selected words' relevance or gradients through the CNN
    (`captionlib.explain.selected`: the batch schedule, or with trim=True the trimmed one);
    any other method runs `explain` on every word and keeps the selected ones. The numbers
    equal `explain`'s at the selected words up to rounding, with the methods' defaults.
    """
    chosen = _chosen_methods(methods, list(METHODS))
    if images is None or encoder is None:
        raise ValueError("explain_words needs images (B, 3, H, W) and their encoder")
    check_request(images, None, caption_ids, start_id)
    check_captions(model, caption_ids)
    check_words(rows, steps, caption_ids, pad_id)
    for method in chosen:
        if method in LRP_METHODS:
            check_lrp_options(model, LRP_METHODS[method], None)
    parameter = next(model.parameters())
    images = images.to(device=parameter.device, dtype=parameter.dtype)
    caption_ids = caption_ids.to(parameter.device)
    if trim:
        found = trimmed_schedule(model, encoder, images, caption_ids, rows, steps, chosen, pad_id)
    else:
        found = batch_schedule(model, encoder, images, caption_ids, rows, steps, chosen)
    for method in chosen:
        if method not in found:
            explanation = explain(
                model, encoder, images, caption_ids, method, start_id=start_id, pad_id=pad_id
            )
            found[method] = WordExplanations.gathered(explanation, rows, steps)
    return {method: found[method] for method in chosen}


def explain_word_relevance(
    model: Captioner,
    features: Tensor,
    caption_ids: Tensor,
    methods: Sequence[str],
    *,
    start_id: int = Vocabulary.START_ID,
    pad_id: int = Vocabulary.PAD_ID,
) -> dict[str, Tensor]:
    """Every word's word relevance from the decoder alone, no CNN (chapter 9).

    features: (B, N, C) the images' grid features (`encode`); caption_ids: (B, T), <start>
    first, padded with pad_id at the end; methods: from WORD_RELEVANCE_METHODS ("lrp",
    "attnlrp": LRP's stage 1; "gradient", "gradient_x_input"). Returns method → (B, T−1, T−1)
    as `Explanation.word_relevance`, 0 beyond each caption's length; each caption runs
    without its padding (`captionlib.explain.selected.every_word_relevance`).
    """
    chosen = _chosen_methods(methods, WORD_RELEVANCE_METHODS)
    check_request(None, features, caption_ids, start_id)
    check_captions(model, caption_ids)
    if "attnlrp" in chosen:
        check_lrp_options(model, "attnlrp", None)
    parameter = next(model.parameters())
    features = features.to(device=parameter.device, dtype=parameter.dtype)
    caption_ids = caption_ids.to(parameter.device)
    return every_word_relevance(model, features, caption_ids, chosen, pad_id)
