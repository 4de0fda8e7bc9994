"""The two-stage LRP explainer of captioners A and B (captionlib.explain.lrp, api, attention).

Tiny float64 models (vocab 20, hidden 16) on a tiny CNN with a 6×6 grid keep this fast.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from captionlib import ops
from captionlib.data.vocab import Vocabulary
from captionlib.explain.api import (
    METHODS,
    captions_to_ids,
    explain,
    explained_words,
    register_method,
)
from captionlib.explain.attention import explain_attention, upsample_grid
from captionlib.explain.cnn import explain_cnn, paper_composite
from captionlib.explain.lrp import explain_lrp
from captionlib.explain.reference import reference_explain
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.decoding import DecodedCaption, beam_search
from captionlib.models.encoder import SmallVGG, to_grid
from captionlib.models.multihead import MultiHeadCaptioner

VOCAB, CHANNELS, GRID = 20, 8, 6


def _captioner(kind: str, seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    if kind == "A":
        model: Captioner = AdaptiveAttentionCaptioner(VOCAB, CHANNELS, 8, 16, 16)
    else:
        model = MultiHeadCaptioner(VOCAB, CHANNELS, 8, 16, heads=2, head_dim=4)
    return model.double().eval()


def _encoder(seed: int = 0) -> SmallVGG:
    torch.manual_seed(seed)
    return SmallVGG(channels=(4, 6, CHANNELS), convs_per_block=1, in_size=8 * GRID).double().eval()


def _zero_biases(module: nn.Module) -> None:
    for name, parameter in module.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(parameter)


def _features(batch: int, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, GRID * GRID, CHANNELS, dtype=torch.float64, generator=generator)


def _captions(batch: int, length: int, seed: int = 2) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, length), generator=generator)
    ids[:, 0] = 2  # <start>
    return ids


def _images(batch: int, seed: int = 3) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 8 * GRID, 8 * GRID, dtype=torch.float64, generator=generator)


CASES = [("A", None), ("B", None), ("B", 0), ("B", 1)]


@pytest.mark.parametrize(("kind", "head"), CASES)
def test_fast_explainer_equals_reference(kind: str, head: int | None) -> None:
    model = _captioner(kind)
    features, captions = _features(3), _captions(3, 7)
    fast = explain_lrp(model, captions, features=features, head=head)
    slow = reference_explain(model, features, captions, epsilon=0.01, head=head)
    relevance = fast.extras["feature_relevance"]
    scale = slow.features.abs().max()
    assert (relevance - slow.features).abs().max() <= 1e-5 * scale
    assert (fast.word_relevance - slow.words).abs().max() <= 1e-5 * slow.words.abs().max()
    torch.testing.assert_close(fast.logits, slow.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.locations, slow.features.sum(3))


def test_heads_get_different_explanations() -> None:
    model = _captioner("B")
    features, captions = _features(2), _captions(2, 5)
    per_head = [explain_lrp(model, captions, features=features, head=m) for m in (0, 1)]
    assert not torch.allclose(per_head[0].locations, per_head[1].locations)


@pytest.mark.parametrize("kind", ["A", "B"])
def test_conservation_with_zero_biases_and_epsilon_zero(kind: str) -> None:
    model = _captioner(kind, seed=4)
    _zero_biases(model)
    features, captions = _features(2), _captions(2, 15)
    explanation = explain_lrp(model, captions, features=features, epsilon=0.0)
    conservation = explanation.conservation
    assert conservation is not None
    assert conservation.logits.abs().min() > 1e-8  # every word is a real test
    assert conservation.relative_error().max() <= 1e-4
    # late words in the long caption also get their full logit back
    torch.testing.assert_close(conservation.inputs[:, -1], conservation.logits[:, -1])
    assert conservation.words.abs().min() > 0 and conservation.features.abs().min() > 0


@pytest.mark.parametrize("kind", ["A", "B"])
def test_without_zero_biases_relevance_is_not_conserved(kind: str) -> None:
    model = _captioner(kind, seed=4)
    explanation = explain_lrp(model, _captions(2, 6), features=_features(2), epsilon=0.0)
    assert explanation.conservation is not None
    assert explanation.conservation.relative_error().max() > 1e-3


@pytest.mark.parametrize("kind", ["A", "B"])
def test_two_stage_conservation_down_to_pixels(kind: str) -> None:
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
    )
    conservation = explanation.conservation
    assert conservation is not None and conservation.pixels is not None
    assert conservation.relative_error().max() <= 1e-4
    torch.testing.assert_close(conservation.pixels, conservation.features, rtol=1e-6, atol=1e-12)
    assert explanation.pixels is not None and explanation.heatmap is not None
    assert explanation.pixels.shape == (2, 7, 3, 8 * GRID, 8 * GRID)
    torch.testing.assert_close(explanation.heatmap, explanation.pixels.sum(2))


def test_global_feature_gets_relevance_and_keys_queries_do_not(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model = _captioner("B")
    features, captions = _features(1), _captions(1, 5)
    captured: dict[str, Tensor] = {}
    prepare = model.prepare

    def recording_prepare(grid: Tensor) -> dict[str, Tensor]:
        memory = prepare(grid)
        for name in ("global", "keys"):
            memory[name].retain_grad()
        captured.update(memory)
        return memory

    monkeypatch.setattr(model, "prepare", recording_prepare)
    grid = features.clone().requires_grad_()
    for attention in ("constant", "attnlrp"):
        with ops.lrp_mode(epsilon=0.0, attention=attention):
            logits = model(grid, captions).logits
        logits[0, 3, captions[0, 4]].backward()
        global_relevance = (captured["global"] * captured["global"].grad).sum()
        assert global_relevance.abs() > 0
        if attention == "constant":
            assert captured["keys"].grad is None  # α constant: no relevance into K or q
        else:
            assert captured["keys"].grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["A", "B"])
def test_forward_logits_are_the_models_own(kind: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    images, captions = _images(2), _captions(2, 6)
    explanation = explain_lrp(model, captions, images=images, encoder=encoder)
    with torch.no_grad():
        logits = model(to_grid(encoder(images)), captions).logits
    expected = logits.gather(2, captions[:, 1:].unsqueeze(2)).squeeze(2)
    assert torch.equal(explanation.logits, expected)
    assert torch.equal(explanation.words, captions[:, 1:])


@pytest.mark.parametrize("kind", ["A", "B"])
def test_degenerate_inputs_give_finite_values(kind: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    captions = _captions(2, 5)
    zero_features = torch.zeros(2, GRID * GRID, CHANNELS, dtype=torch.float64)
    for epsilon in (0.0, 0.01):
        stage1 = explain_lrp(model, captions, features=zero_features, epsilon=epsilon)
        assert torch.equal(stage1.locations, torch.zeros_like(stage1.locations))
        assert stage1.word_relevance is not None
        assert torch.isfinite(stage1.word_relevance).all()
    black = torch.zeros(2, 3, 8 * GRID, 8 * GRID, dtype=torch.float64)
    both = explain_lrp(model, captions, images=black, encoder=encoder, epsilon=0.0)
    assert both.pixels is not None
    for tensor in (both.pixels, both.locations, both.word_relevance, both.logits):
        assert torch.isfinite(tensor).all()
    assert torch.equal(both.pixels, torch.zeros_like(both.pixels))


@pytest.mark.parametrize(("kind", "attention"), [("A", "constant"), ("B", "attnlrp")])
def test_batched_equals_one_word_at_a_time(kind: str, attention: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    images, captions = _images(2), _captions(2, 6)
    batched = explain_lrp(model, captions, images=images, encoder=encoder, attention=attention)
    assert batched.pixels is not None and batched.word_relevance is not None
    feature_map = encoder(images).detach()
    grid = to_grid(feature_map).detach().requires_grad_()
    for t in range(captions.shape[1] - 1):
        embeddings = model.embedding(captions[:, :-1]).detach().requires_grad_()
        with ops.lrp_mode(epsilon=0.01, attention=attention):
            logits = model(grid, captions, embeddings=embeddings).logits
        explained = logits[:, t].gather(1, captions[:, t + 1 : t + 2]).sum()
        grad_grid, grad_words = torch.autograd.grad(explained, (grid, embeddings))
        relevance = grid.detach() * grad_grid  # (B, N, C)
        torch.testing.assert_close(batched.extras["feature_relevance"][:, t], relevance)
        words = (embeddings.detach() * grad_words).sum(-1)
        torch.testing.assert_close(batched.word_relevance[:, t], words)
        relevance_map = relevance.transpose(1, 2).reshape(feature_map.shape)
        pixels = explain_cnn(encoder.features, images, relevance_map)
        torch.testing.assert_close(batched.pixels[:, t], pixels)


@pytest.mark.parametrize("kind", ["A", "B"])
def test_replicated_scheme_equals_vectorised(kind: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    images, captions = _images(2), _captions(2, 5)
    vectorised = explain_lrp(model, captions, images=images, encoder=encoder)
    replicated = explain_lrp(model, captions, images=images, encoder=encoder, replicate=True)
    for name in ("logits", "locations", "pixels", "word_relevance"):
        torch.testing.assert_close(getattr(replicated, name), getattr(vectorised, name))
    stage1 = explain_lrp(model, captions, features=_features(2), replicate=True)
    reference = reference_explain(model, _features(2), captions)
    torch.testing.assert_close(stage1.extras["feature_relevance"], reference.features)


def test_word_relevance_is_causal_and_masked() -> None:
    model = _captioner("A")
    captions = _captions(2, 7)
    captions[1, 4:] = 0  # a shorter caption, padded
    explanation = explain_lrp(model, captions, features=_features(2))
    relevance = explanation.word_relevance
    assert relevance is not None
    future = torch.ones(6, 6).triu(diagonal=1).bool()
    assert torch.equal(relevance[:, future], torch.zeros_like(relevance[:, future]))
    assert (relevance[:, ~future] != 0).all()
    assert explanation.mask[0].all() and explanation.mask[1].tolist() == [True] * 3 + [False] * 3


def test_explainer_restores_model_state() -> None:
    model, encoder = _captioner("A"), _encoder()
    model.train()
    model.output.weight.requires_grad_(True)
    model.project.weight.requires_grad_(False)
    encoder.train()
    encoder.features[0].bias.requires_grad_(False)
    explain_lrp(model, _captions(1, 4), images=_images(1), encoder=encoder)
    assert model.training and encoder.training
    assert model.output.weight.requires_grad and not model.project.weight.requires_grad
    assert encoder.features[0].weight.requires_grad
    assert not encoder.features[0].bias.requires_grad
    assert all(p.grad is None for p in [*model.parameters(), *encoder.parameters()])


def test_bad_options_raise() -> None:
    model_a, model_b = _captioner("A"), _captioner("B")
    features, captions = _features(1), _captions(1, 4)
    with pytest.raises(ValueError, match="attnlrp"):
        explain_lrp(model_a, captions, features=features, attention="attnlrp")
    with pytest.raises(ValueError, match="head"):
        explain_lrp(model_a, captions, features=features, head=0)
    with pytest.raises(ValueError, match="head must be"):
        explain_lrp(model_b, captions, features=features, head=2)
    with pytest.raises(ValueError, match="exactly one"):
        explain_lrp(model_b, captions)
    with pytest.raises(ValueError, match="encoder"):
        explain_lrp(model_b, captions, images=_images(1))
    with pytest.raises(ValueError, match="caption_ids"):
        explain_lrp(model_b, captions[:, :1], features=features)
    with pytest.raises(ValueError, match="caption_ids"):
        explain_lrp(model_b, captions + VOCAB, features=features)
    with pytest.raises(ValueError, match="square"):
        explain_lrp(model_b, captions, features=features[:, :-1])


def test_attnlrp_differs_from_paper_rule() -> None:
    model = _captioner("B")
    features, captions = _features(2), _captions(2, 5)
    paper = explain(model, None, None, captions, method="lrp", features=features)
    attn = explain(model, None, None, captions, method="attnlrp", features=features)
    assert paper.method == "lrp" and attn.method == "attnlrp"
    assert torch.equal(paper.logits, attn.logits)
    assert not torch.allclose(paper.locations, attn.locations)


def test_explain_default_caption_is_the_beam_search_caption() -> None:
    model, encoder = _captioner("B"), _encoder()
    images = _images(2)
    explanation = explain(model, encoder, images, max_length=6)
    decoded = beam_search(model, to_grid(encoder(images)).detach(), 2, 3, 3, 6)
    expected = captions_to_ids(decoded, 2, 3, 0, max_length=6)
    assert torch.equal(explanation.caption_ids, expected)
    assert explanation.pixels is not None
    assert explanation.pixels.shape[:2] == (2, expected.shape[1] - 1)


def test_captions_to_ids_pads_and_ends() -> None:
    decoded = [
        DecodedCaption(token_ids=[5, 6], log_prob=0.0, alpha=torch.zeros(2, 4), beta=None),
        DecodedCaption(token_ids=[7, 8, 9], log_prob=0.0, alpha=torch.zeros(3, 4), beta=None),
    ]
    ids = captions_to_ids(decoded, start_id=2, end_id=3, pad_id=0, max_length=3)
    assert ids.tolist() == [[2, 5, 6, 3], [2, 7, 8, 9]]


def test_registry() -> None:
    assert {"lrp", "attnlrp", "attention"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown method"):
        explain(_captioner("A"), None, None, _captions(1, 3), method="nope", features=_features(1))
    with pytest.raises(ValueError, match="already registered"):
        register_method("lrp", METHODS["lrp"])
    calls = []

    def fake(model: Captioner, caption_ids: Tensor, **options: object):  # type: ignore[no-untyped-def]
        calls.append(options)
        return "explained"

    register_method("fake_for_test", fake)
    try:
        result = explain(
            _captioner("A"),
            None,
            None,
            _captions(1, 3),
            "fake_for_test",
            features=_features(1),
            x=1,
        )
        assert result == "explained" and calls[0]["x"] == 1
    finally:
        del METHODS["fake_for_test"]
    with pytest.raises(ValueError, match="attnlrp"):
        explain(_captioner("B"), None, None, _captions(1, 3), features=_features(1), attention="x")


def test_attention_maps_for_both_captioners() -> None:
    encoder = _encoder()
    images, captions = _images(2), _captions(2, 5)
    for kind in ("A", "B"):
        model = _captioner(kind)
        explanation = explain(model, encoder, images, captions, method="attention")
        assert explanation.heatmap is not None
        assert explanation.locations.shape == (2, 4, GRID * GRID)
        assert explanation.heatmap.shape == (2, 4, 8 * GRID, 8 * GRID)
        # nearest upsampling: each grid cell is an 8×8 block of one value
        block = explanation.heatmap[0, 0, :8, :8]
        assert torch.equal(block, torch.full_like(block, float(explanation.locations[0, 0, 0])))
        totals = explanation.locations.sum(-1)
        if kind == "A":
            torch.testing.assert_close(totals + explanation.extras["beta"], torch.ones_like(totals))
        else:
            torch.testing.assert_close(totals, torch.ones_like(totals))
            assert explanation.extras["alpha_heads"].shape == (2, 4, 2, GRID * GRID)
            one = explain_attention(model, captions, features=_features(2), head=1)
            torch.testing.assert_close(one.locations.sum(-1), torch.ones_like(totals))
            assert one.heatmap is None


def test_upsample_grid_modes() -> None:
    scores = torch.arange(4, dtype=torch.float64).view(1, 4)
    nearest = upsample_grid(scores, (2, 2), (4, 4))
    assert nearest[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    smooth = upsample_grid(scores, (2, 2), (4, 4), mode="bilinear")
    assert smooth[0, 0, 1] > 0 and smooth[0, 0, 0] == 0
    with pytest.raises(ValueError, match="mode"):
        upsample_grid(scores, (2, 2), (4, 4), mode="gaussian")
    with pytest.raises(ValueError, match="locations"):
        upsample_grid(scores, (3, 2), (4, 4))


def test_explained_words_drop_the_padding() -> None:
    vocabulary = Vocabulary(["a", "dog", "ball"])
    explanation = SimpleNamespace(
        words=torch.tensor([[4, 5, 3, 0], [6, 3, 0, 0]]),
        mask=torch.tensor([[True, True, True, False], [True, True, False, False]]),
    )
    assert explained_words(explanation, vocabulary) == ["a", "dog", "<end>"]
    assert explained_words(explanation, vocabulary, row=1) == ["ball", "<end>"]


def test_requests_are_validated_once_with_named_errors() -> None:
    model, encoder = _captioner("A"), _encoder()
    images, captions = _images(2), _captions(2, 4)
    with pytest.raises(ValueError, match="give encoder and images, or features"):
        explain(model, encoder, None, captions)
    nan_images = images.clone()
    nan_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images contain NaN"):
        explain(model, encoder, nan_images, captions)
    raw = (torch.rand(2, 3, 8 * GRID, 8 * GRID) * 255).to(torch.uint8)
    with pytest.raises(TypeError, match="normalised floats"):
        explain(model, encoder, raw, captions)
    with pytest.raises(ValueError, match="look unnormalised"):
        explain(model, encoder, raw.double(), captions)
    with pytest.raises(ValueError, match="images is an empty batch"):
        explain(model, encoder, images[:0], captions[:0])
    with pytest.raises(ValueError, match="features is an empty batch"):
        explain(model, None, None, captions[:0], features=_features(2)[:0])
    bad_start = captions.clone()
    bad_start[1, 0] = Vocabulary.END_ID
    with pytest.raises(ValueError, match=r"rows \[1\] do not start with <start>"):
        explain(model, encoder, images, bad_start)
    with pytest.raises(ValueError, match="batch sizes differ"):
        explain(model, encoder, images, captions[:1])
    with pytest.raises(ValueError, match="3 colour channels"):
        explain(model, encoder, images[:, :1], captions)
    # a valid request still explains every word
    explanation = explain(model, encoder, images, captions)
    assert torch.isfinite(explanation.pixels).all()
