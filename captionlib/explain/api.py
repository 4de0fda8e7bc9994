"""One entry point for every explanation method of the book (chapters 5, 7 and 8).

::

    explain(model, encoder, images, caption_ids=None, method="lrp", **options)

explains every word of B captions and returns an `Explanation`. Without caption_ids the
model's own caption is explained: beam search (beam 3, book/method.md §4), re-run with teacher
forcing. Methods live in the registry `METHODS` (name → function); later chapters add
theirs with `register_method`. A method function is called as::

    function(model, caption_ids, images=..., encoder=..., features=..., pad_id=..., **options)

and returns an `Explanation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from captionlib.data.vocab import Vocabulary
from captionlib.explain.attention import explain_attention
from captionlib.explain.gradients import GRADIENT_METHODS, gradient_method
from captionlib.explain.lrp import Explanation, explain_lrp, explaining
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
            parameter = next(model.parameters())
            cnn = getattr(encoder, "features", encoder)
            with explaining(encoder), torch.no_grad():
                grid = to_grid(cnn(images.to(device=parameter.device, dtype=parameter.dtype)))
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
