"""One entry point for every explanation method of the book (chapters 5, 7 and 8).

    explain(model, encoder, images, caption_ids=None, method="lrp", **options)

explains every word of B captions and returns an `Explanation`. Without caption_ids the
model's own caption is explained: beam search (beam 3, book/method.md §4), re-run with teacher
forcing. Methods live in the registry `METHODS` (name → function); later chapters add
theirs with `register_method`. A method function is called as

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


def _register_builtin_methods() -> None:
    from captionlib.explain.gradients import register_gradient_methods

    register_gradient_methods()


_register_builtin_methods()
