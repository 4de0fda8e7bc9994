"""Explaining selected words only (captionlib.explain.api.explain_words) and word relevance
alone (explain_word_relevance) against `explain` on every word (chapters 9 and 10).

Tiny float64 captioners on a tiny CNN with a 4×4 grid; captions of different lengths, padded,
so that the trimmed schedule trims something.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from captionlib.data.vocab import Vocabulary
from captionlib.explain.api import (
    WordExplanations,
    encode,
    explain,
    explain_word_relevance,
    explain_words,
)
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.encoder import SmallVGG
from captionlib.models.multihead import MultiHeadCaptioner

VOCAB, CHANNELS, GRID = 15, 6, 4
CAPTIONS = torch.tensor(
    [[2, 5, 7, 9, 6, 8, 3], [2, 6, 4, 11, 3, 0, 0], [2, 12, 5, 7, 13, 3, 0]]
)  # <start> = 2, <end> = 3, padding 0
ROWS, STEPS = torch.tensor([0, 2, 0, 1, 2, 1]), torch.tensor([4, 1, 0, 2, 3, 3])
EVERY_METHOD = ("attention", "gradient", "gradient_x_input", "guided_backprop", "gradcam")
CASES = [
    ("A", ("lrp", *EVERY_METHOD, "guided_gradcam")),
    ("B", ("attnlrp", "lrp", "gradcam", "guided_gradcam", "gradient_x_input", "attention")),
]


def _captioner(kind: str) -> Captioner:
    torch.manual_seed(0)
    if kind == "A":
        model: Captioner = AdaptiveAttentionCaptioner(VOCAB, CHANNELS, 8, 12, 12)
    else:
        model = MultiHeadCaptioner(VOCAB, CHANNELS, 8, 12, heads=2, head_dim=4)
    return model.double().eval()


def _encoder() -> SmallVGG:
    torch.manual_seed(1)
    return SmallVGG(channels=(4, 5, CHANNELS), convs_per_block=1, in_size=8 * GRID).double().eval()


def _images(count: int = 3) -> Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(count, 3, 8 * GRID, 8 * GRID, dtype=torch.float64, generator=generator)


def _close(actual: Tensor | None, expected: Tensor | None, message: str) -> None:
    assert (actual is None) == (expected is None), message
    if actual is not None:
        torch.testing.assert_close(actual, expected, rtol=1e-8, atol=1e-12, msg=message)


@pytest.mark.parametrize("trim", [False, True])
@pytest.mark.parametrize(("kind", "methods"), CASES)
def test_selected_words_equal_explain_at_those_words(
    kind: str, methods: tuple[str, ...], trim: bool
) -> None:
    model, encoder, images = _captioner(kind), _encoder(), _images()
    explained = explain_words(model, encoder, images, CAPTIONS, ROWS, STEPS, methods, trim=trim)
    assert list(explained) == list(methods)
    for method in methods:
        full = explain(model, encoder, images, CAPTIONS, method=method)
        expected = WordExplanations.gathered(full, ROWS, STEPS)
        found = explained[method]
        assert found.heatmaps.shape == (len(ROWS), 8 * GRID, 8 * GRID)
        for name in ("heatmaps", "locations", "word_relevance", "pixels"):
            _close(getattr(found, name), getattr(expected, name), f"{method} {name}")


def test_word_relevance_alone_equals_explain_on_every_word() -> None:
    for kind, methods in (("A", ("lrp", "gradient")), ("B", ("attnlrp", "gradient_x_input"))):
        model, encoder, images = _captioner(kind), _encoder(), _images()
        relevance = explain_word_relevance(model, encode(model, encoder, images), CAPTIONS, methods)
        assert list(relevance) == list(methods)
        mask = CAPTIONS[:, 1:] != Vocabulary.PAD_ID  # (B, K)
        for method in methods:
            expected = explain(model, encoder, images, CAPTIONS, method=method).word_relevance
            assert relevance[method].shape == expected.shape
            _close(relevance[method][mask], expected[mask], method)
            assert (relevance[method][~mask] == 0).all()  # padding is not explained


def test_bad_selections_and_requests_name_the_argument() -> None:
    model, encoder, images = _captioner("A"), _encoder(), _images()

    def request(**changes: object) -> None:
        arguments = {
            "images": images,
            "caption_ids": CAPTIONS,
            "rows": ROWS,
            "steps": STEPS,
            "methods": ("lrp",),
        } | changes
        explain_words(model, encoder, **arguments)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match=r"rows \(6\) and steps \(5\) differ in length"):
        request(steps=STEPS[:5])
    with pytest.raises(ValueError, match=r"rows must be in \[0, 3\), got values from 0 to 3"):
        request(rows=torch.tensor([0, 3, 0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"steps must be in \[0, 6\), got values from -1 to 4"):
        request(steps=torch.tensor([4, 1, -1, 2, 3, 3]))
    with pytest.raises(ValueError, match="no words selected"):
        request(rows=ROWS[:0], steps=STEPS[:0])
    with pytest.raises(ValueError, match=r"rows must be 1-D \(W,\)"):
        request(rows=ROWS.view(2, 3), steps=STEPS.view(2, 3))
    with pytest.raises(TypeError, match="steps must hold integer indices"):
        request(steps=STEPS.double())
    with pytest.raises(ValueError, match=r"selected words \[1\] .* are padding"):
        request(steps=torch.tensor([4, 5, 0, 2, 3, 3]))
    nan_images = images.clone()
    nan_images[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="images contain NaN"):
        request(images=nan_images)
    with pytest.raises(ValueError, match="images is an empty batch"):
        request(images=images[:0])
    bad_start = CAPTIONS.clone()
    bad_start[2, 0] = Vocabulary.END_ID
    with pytest.raises(ValueError, match=r"rows \[2\] do not start with <start>"):
        request(caption_ids=bad_start)
    with pytest.raises(ValueError, match=r"unknown methods \['lrp2'\]"):
        request(methods=("lrp", "lrp2"))
    with pytest.raises(ValueError, match="methods is empty"):
        request(methods=())
    with pytest.raises(TypeError, match="the string 'lrp'"):
        request(methods="lrp")
    with pytest.raises(ValueError, match="MultiHeadCaptioner only"):
        request(methods=("attnlrp",))
    with pytest.raises(ValueError, match="needs images"):
        explain_words(model, None, images, CAPTIONS, ROWS, STEPS, ("lrp",))  # type: ignore[arg-type]
    grid = encode(model, encoder, images)
    with pytest.raises(ValueError, match=r"unknown methods \['gradcam'\]"):
        explain_word_relevance(model, grid, CAPTIONS, ("gradcam",))
    with pytest.raises(ValueError, match="MultiHeadCaptioner only"):
        explain_word_relevance(model, grid, CAPTIONS, ("attnlrp",))
    with pytest.raises(ValueError, match="features contain NaN"):
        explain_word_relevance(model, grid * float("nan"), CAPTIONS, ("lrp",))
