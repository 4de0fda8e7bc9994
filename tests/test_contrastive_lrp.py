"""LRP's contrastive initial relevance (SGLRP's softmax-gradient start; chapter 8).

`explain_lrp(..., initial="contrastive")` starts every logit z_j of a step with
s_j = ∂p_k/∂z_j instead of the explained logit alone; the rules below the logits are the
ones tested in test_lrp.py. Tiny float64 models from there keep this fast.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_lrp import _captioner, _captions, _encoder, _features, _images, _zero_biases

from captionlib.explain.api import explain
from captionlib.explain.cnn import paper_composite
from captionlib.explain.lrp import contrastive_start, explain_lrp

FIELDS = ("caption_ids", "words", "logits", "mask", "locations", "word_relevance")


def test_contrastive_start_on_a_hand_computed_case() -> None:
    # step 0: z = (0, ln 2, 0) → p = (1/4, 1/2, 1/4), explained word 1
    # step 1: z = (ln 3, 0, 0) → p = (3/5, 1/5, 1/5), explained word 0
    logits = torch.tensor(
        [[[0.0, math.log(2.0), 0.0], [math.log(3.0), 0.0, 0.0]]], dtype=torch.float64
    )
    caption_ids = torch.tensor([[2, 1, 0]])
    start = contrastive_start(logits, caption_ids)
    expected = torch.tensor(
        [[[-1 / 8, 1 / 4, -1 / 8], [3 / 5 * 2 / 5, -3 / 25, -3 / 25]]], dtype=torch.float64
    )
    torch.testing.assert_close(start, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(start.sum(2), torch.zeros(1, 2, dtype=torch.float64))
    assert contrastive_start(logits.float(), caption_ids).dtype == torch.float32


def test_contrastive_start_stays_exact_for_a_confident_word() -> None:
    # p_k = 1 − 2e^−40 rounds to 1, but p_k (1 − p_k) is computed as p_k Σ_{j≠k} p_j
    logits = torch.tensor([[[40.0, 0.0, 0.0]]], dtype=torch.float64)
    start = contrastive_start(logits, torch.tensor([[2, 0]]))
    other = math.exp(-40.0)
    torch.testing.assert_close(start[0, 0, 0], torch.tensor(2 * other, dtype=torch.float64))
    torch.testing.assert_close(start[0, 0, 1:], torch.full((2,), -other, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["A", "B"])
@pytest.mark.parametrize("replicate", [False, True])
def test_logit_start_is_the_default_bit_for_bit(kind: str, replicate: bool) -> None:
    model, encoder = _captioner(kind), _encoder()
    images, captions = _images(2), _captions(2, 6)
    default = explain_lrp(model, captions, images=images, encoder=encoder, replicate=replicate)
    logit = explain_lrp(
        model, captions, images=images, encoder=encoder, replicate=replicate, initial="logit"
    )
    for name in (*FIELDS, "pixels", "heatmap"):
        assert torch.equal(getattr(default, name), getattr(logit, name)), name
    assert default.conservation is not None and logit.conservation is not None
    for name in ("logits", "features", "words", "pixels"):
        assert torch.equal(getattr(default.conservation, name), getattr(logit.conservation, name))
    assert torch.equal(default.conservation.logits, default.logits)
    assert set(logit.extras) == {"feature_relevance"}


@pytest.mark.parametrize("kind", ["A", "B"])
def test_the_explainer_starts_from_the_contrastive_vector(kind: str) -> None:
    model = _captioner(kind)
    features, captions = _features(2), _captions(2, 7)
    explanation = explain_lrp(model, captions, features=features, initial="contrastive")
    with torch.no_grad():
        logits = model(features, captions).logits  # (B, K, V)
    expected = contrastive_start(logits, captions)
    torch.testing.assert_close(explanation.extras["initial_relevance"], expected)
    assert explanation.conservation is not None
    torch.testing.assert_close(explanation.conservation.logits, expected.sum(2))
    # the explained logits are still reported as such
    one_hot = logits.gather(2, captions[:, 1:].unsqueeze(2))[..., 0]
    torch.testing.assert_close(explanation.logits, one_hot)


@pytest.mark.parametrize("kind", ["A", "B"])
def test_contrastive_relevance_is_the_start_weighted_sum_of_logit_explanations(
    kind: str,
) -> None:
    """The last word's contrastive explanation equals Σ_j (s_j / z_j) · LRP(logit j): the
    last token is an input nowhere, so replacing it by every word j leaves the forward
    pass unchanged and explains each logit of the last step in turn."""
    model, encoder = _captioner(kind, seed=7), _encoder(seed=8)
    images, captions = _images(1), _captions(1, 6)
    contrastive = explain_lrp(
        model, captions, images=images, encoder=encoder, initial="contrastive"
    )
    vocabulary = model.vocab_size
    every_word = captions.repeat(vocabulary, 1)
    every_word[:, -1] = torch.arange(vocabulary)
    each = explain_lrp(
        model, every_word, images=images.repeat(vocabulary, 1, 1, 1), encoder=encoder
    )
    start = contrastive.extras["initial_relevance"][0, -1]  # (V,)
    weights = start / each.logits[:, -1]  # (V,): s_j / z_j
    for name in ("locations", "word_relevance", "pixels"):
        combined = torch.einsum("v,v...->...", weights, getattr(each, name)[:, -1])
        expected = getattr(contrastive, name)[0, -1]
        assert (combined - expected).abs().max() <= 1e-9 * expected.abs().max(), name


@pytest.mark.parametrize("kind", ["A", "B"])
def test_contrastive_start_is_conserved_with_zero_biases_and_epsilon_zero(kind: str) -> None:
    model, encoder = _captioner(kind, seed=5), _encoder(seed=6)
    _zero_biases(model)
    _zero_biases(encoder)
    images, captions = _images(2), _captions(2, 8)
    explanation = explain_lrp(
        model,
        captions,
        images=images,
        encoder=encoder,
        epsilon=0.0,
        composite=paper_composite(stabilizer=1e-12),
        initial="contrastive",
    )
    conservation = explanation.conservation
    assert conservation is not None and conservation.pixels is not None
    start = explanation.extras["initial_relevance"]  # (B, K, V)
    torch.testing.assert_close(conservation.logits, start.sum(2))
    assert conservation.logits.abs().max() <= 1e-15  # SGLRP's start sums to zero
    # positive and negative relevance are both large, and cancel as the start vector does
    scale = explanation.extras["feature_relevance"].abs().sum((2, 3)) + (
        explanation.word_relevance.abs().sum(2)
    )
    assert scale.min() > 1e-6
    assert ((conservation.inputs - start.sum(2)).abs() <= 1e-9 * scale).all()
    torch.testing.assert_close(conservation.pixels, conservation.features, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("kind", ["A", "B"])
def test_replicated_contrastive_equals_vectorised(kind: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    images, captions = _images(2), _captions(2, 5)
    options = {"images": images, "encoder": encoder, "initial": "contrastive"}
    vectorised = explain_lrp(model, captions, **options)
    replicated = explain_lrp(model, captions, replicate=True, **options)
    for name in ("locations", "word_relevance", "pixels"):
        torch.testing.assert_close(getattr(vectorised, name), getattr(replicated, name))
    torch.testing.assert_close(
        vectorised.extras["initial_relevance"], replicated.extras["initial_relevance"]
    )


def test_reachable_through_the_api_and_checked() -> None:
    model, encoder = _captioner("B"), _encoder()
    images, captions = _images(1), _captions(1, 5)
    through_api = explain(model, encoder, images, captions, method="lrp", initial="contrastive")
    direct = explain_lrp(model, captions, images=images, encoder=encoder, initial="contrastive")
    assert torch.equal(through_api.heatmap, direct.heatmap)
    attnlrp = explain(model, encoder, images, captions, method="attnlrp", initial="contrastive")
    assert "initial_relevance" in attnlrp.extras
    assert not torch.allclose(
        through_api.heatmap, explain(model, encoder, images, captions).heatmap
    )
    with pytest.raises(ValueError, match="initial must be one of"):
        explain(model, encoder, images, captions, method="lrp", initial="softmax")
