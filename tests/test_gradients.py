"""Gradient explanations (captionlib.explain.gradients) against one-word-at-a-time autograd.

Tiny float64 captioners on a tiny CNN with a 4×4 grid; each reference below is written
independently of the library's batched backward (a plain loop over words, tensor hooks for
guided backprop).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captionlib import ops
from captionlib.explain.api import METHODS
from captionlib.explain.gradients import (
    GRADIENT_METHODS,
    WordTarget,
    constant_attention_mode,
    explain_gradient_family,
    explain_gradients,
    gradient_method,
)
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.encoder import SmallVGG, to_grid
from captionlib.models.multihead import MultiHeadCaptioner

VOCAB, CHANNELS, GRID = 15, 6, 4


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


def _inputs(batch: int = 2, length: int = 4) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(batch, 3, 8 * GRID, 8 * GRID, dtype=torch.float64, generator=generator)
    ids = torch.randint(4, VOCAB, (batch, length), generator=generator)
    ids[:, 0] = 2
    return images, ids


def _guided_cnn(cnn: nn.Sequential, x: Tensor) -> Tensor:
    """The CNN run layer by layer; after each ReLU a tensor hook clamps the gradient at 0
    (ReLU's own backward then zeroes non-positive inputs): guided backprop, written anew."""
    for layer in cnn:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            x.register_hook(lambda grad: grad.clamp(min=0))
    return x


def _reference(model: Captioner, cnn: nn.Sequential, images: Tensor, ids: Tensor, guided: bool):  # type: ignore[no-untyped-def]
    """Per word: ∂y_t/∂pixels, F, ∂y_t/∂F and ∂y_t/∂E, each from its own forward/backward."""
    grads_pixels, grads_map, grads_words = [], [], []
    for t in range(ids.shape[1] - 1):
        pixels = images.clone().requires_grad_()
        feature_map = _guided_cnn(cnn, pixels) if guided else cnn(pixels)
        embeddings = model.embedding(ids[:, :-1]).detach().requires_grad_()
        logits = model(to_grid(feature_map), ids, embeddings=embeddings).logits
        target = logits[torch.arange(ids.shape[0]), t, ids[:, t + 1]].sum()
        gp, gf, ge = torch.autograd.grad(target, (pixels, feature_map, embeddings))
        grads_pixels.append(gp)
        grads_map.append(gf)
        grads_words.append(ge)
    with torch.no_grad():
        feature_map = cnn(images)
    return (
        torch.stack(grads_pixels, 1),
        feature_map,
        torch.stack(grads_map, 1),
        torch.stack(grads_words, 1),
    )


@pytest.mark.parametrize("kind", ["A", "B"])
def test_every_method_equals_one_word_at_a_time_autograd(kind: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    images, ids = _inputs()
    cnn = encoder.features
    plain_pixels, feature_map, grad_map, grad_words = _reference(model, cnn, images, ids, False)
    guided_pixels = _reference(model, cnn, images, ids, True)[0]
    embeddings = model.embedding(ids[:, :-1]).detach()

    gradient = explain_gradients(model, ids, method="gradient", images=images, encoder=encoder)
    torch.testing.assert_close(gradient.pixels, plain_pixels)
    torch.testing.assert_close(gradient.word_relevance, grad_words.sum(-1))
    torch.testing.assert_close(gradient.locations, grad_map.sum(2).flatten(2))

    times_input = explain_gradients(
        model, ids, method="gradient_x_input", images=images, encoder=encoder
    )
    torch.testing.assert_close(times_input.pixels, plain_pixels * images.unsqueeze(1))
    torch.testing.assert_close(
        times_input.word_relevance, (grad_words * embeddings.unsqueeze(1)).sum(-1)
    )

    guided = explain_gradients(model, ids, method="guided_backprop", images=images, encoder=encoder)
    torch.testing.assert_close(guided.pixels, guided_pixels)
    assert not torch.allclose(guided.pixels, plain_pixels)

    # Grad-CAM: weights = spatial mean of ∂y/∂F, ReLU of the weighted sum of the channels
    weights = grad_map.mean(dim=(3, 4))  # (B, K, C)
    signed = torch.einsum("bkc,bchw->bkhw", weights, feature_map)
    cam = explain_gradients(model, ids, method="gradcam", images=images, encoder=encoder)
    torch.testing.assert_close(cam.extras["gradcam_signed"], signed)
    torch.testing.assert_close(cam.locations, signed.clamp(min=0).flatten(2))
    assert (signed < 0).any() and (signed > 0).any()  # the signed and ReLU'd forms differ
    upsampled = signed.clamp(min=0).repeat_interleave(8, 2).repeat_interleave(8, 3)
    torch.testing.assert_close(cam.heatmap, upsampled)
    assert cam.pixels is None

    guided_cam = explain_gradients(
        model, ids, method="guided_gradcam", images=images, encoder=encoder
    )
    torch.testing.assert_close(guided_cam.pixels, guided_pixels * upsampled.unsqueeze(2))


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_captum_path_equals_batched_autograd(method: str) -> None:
    model, encoder = _captioner("A"), _encoder()
    images, ids = _inputs(batch=1, length=3)
    batched = explain_gradients(model, ids, method=method, images=images, encoder=encoder)
    via_captum = explain_gradients(
        model, ids, method=method, images=images, encoder=encoder, captum=True
    )
    if batched.pixels is not None:
        torch.testing.assert_close(via_captum.pixels, batched.pixels)
    torch.testing.assert_close(via_captum.heatmap, batched.heatmap)
    torch.testing.assert_close(via_captum.locations, batched.locations)


def test_word_target_is_the_teacher_forced_logit() -> None:
    model, encoder = _captioner("B"), _encoder()
    images, ids = _inputs()
    logits = model(to_grid(encoder.features(images)), ids).logits
    target = WordTarget(encoder.features, model, ids, word=2)
    torch.testing.assert_close(target(images), logits[torch.arange(2), 2, ids[:, 3]])
    with pytest.raises(ValueError, match="word must be"):
        WordTarget(encoder.features, model, ids, word=3)


@pytest.mark.parametrize("kind", ["A", "B"])
def test_constant_attention_gradients(kind: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    images, ids = _inputs()
    true = explain_gradients(model, ids, method="gradient", images=images, encoder=encoder)
    modified = explain_gradients(
        model, ids, method="gradient", images=images, encoder=encoder, constant_attention=True
    )
    torch.testing.assert_close(modified.logits, true.logits)  # same forward
    assert not torch.allclose(modified.pixels, true.pixels)
    assert ops.softmax is not None and ops.softmax.__name__ == "softmax"  # restored
    # inside the mode the attention weights carry no gradient
    scores = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    signal = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    with constant_attention_mode():
        assert not ops.softmax(scores).requires_grad
        out = ops.gate(torch.sigmoid(scores), signal)
    (grad_scores, grad_signal) = torch.autograd.grad(out.sum(), (scores, signal), allow_unused=True)
    assert grad_scores is None
    torch.testing.assert_close(grad_signal, torch.sigmoid(scores).detach())


def test_padding_mask_and_bad_inputs() -> None:
    model, encoder = _captioner("A"), _encoder()
    images, ids = _inputs()
    ids[0, -1] = 0
    explanation = explain_gradients(model, ids, images=images, encoder=encoder, pad_id=0)
    assert explanation.mask.tolist() == [[True, True, False], [True, True, True]]
    with pytest.raises(ValueError, match="method must be"):
        explain_gradients(model, ids, method="lime", images=images, encoder=encoder)
    with pytest.raises(ValueError, match="need images"):
        explain_gradients(model, ids, features=torch.zeros(2, GRID * GRID, CHANNELS))


def test_registration_through_the_api() -> None:
    assert set(GRADIENT_METHODS) <= set(METHODS)
    with pytest.raises(ValueError, match="method must be one of"):
        gradient_method("lime")
    model, encoder = _captioner("A"), _encoder()
    images, ids = _inputs()
    via_api = METHODS["gradcam"](model, ids, images=images, encoder=encoder, features=None)
    direct = explain_gradients(model, ids, method="gradcam", images=images, encoder=encoder)
    torch.testing.assert_close(via_api.locations, direct.locations)
    assert via_api.method == "gradcam"


def test_family_equals_single_methods() -> None:
    model, encoder = _captioner("B"), _encoder()
    images, ids = _inputs()
    family = explain_gradient_family(model, ids, images=images, encoder=encoder)
    assert list(family) == list(GRADIENT_METHODS)
    for method in ("gradient_x_input", "guided_gradcam"):
        single = explain_gradients(model, ids, method=method, images=images, encoder=encoder)
        torch.testing.assert_close(family[method].heatmap, single.heatmap)
        torch.testing.assert_close(family[method].word_relevance, single.word_relevance)


class _Recorder:
    """Test-local stand-ins for `ops.gate` and `ops.softmax`: in "record" mode they run
    the ordinary operation and store every gate and attention weight; in "replay" mode they
    return the stored values (as constants, with no graph behind them) in the same order."""

    def __init__(self) -> None:
        self.values: list[Tensor] = []
        self.replaying = False
        self.position = 0

    def _value(self, computed: Tensor) -> Tensor:
        if not self.replaying:
            self.values.append(computed.detach().clone())
            return computed
        stored = self.values[self.position]
        self.position += 1
        assert torch.equal(stored, computed.detach())  # same forward, same order
        return stored

    def gate(self, gate_value: Tensor, signal: Tensor) -> Tensor:
        return self._value(gate_value) * signal

    def softmax(self, scores: Tensor, dim: int = -1) -> Tensor:
        return self._value(torch.softmax(scores, dim=dim))


@pytest.mark.parametrize("kind", ["A", "B"])
def test_constant_attention_equals_gradients_with_recorded_constants(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's modified gradients: α, β, the sentinel, context and LSTM gates recorded
    in a first forward pass and replayed as constants in a second one, whose ordinary
    gradient (one word at a time) must equal `constant_attention=True`."""
    model, encoder = _captioner(kind), _encoder()
    images, ids = _inputs()
    modified = explain_gradients(
        model, ids, method="gradient", images=images, encoder=encoder, constant_attention=True
    )
    recorder = _Recorder()
    monkeypatch.setattr(ops, "gate", recorder.gate)
    monkeypatch.setattr(ops, "softmax", recorder.softmax)
    with torch.no_grad():
        model(to_grid(encoder.features(images)), ids)
    assert recorder.values  # the model's gates and attention went through the stand-ins
    recorder.replaying = True
    grads_pixels, grads_words = [], []
    for t in range(ids.shape[1] - 1):
        recorder.position = 0
        pixels = images.clone().requires_grad_()
        embeddings = model.embedding(ids[:, :-1]).detach().requires_grad_()
        logits = model(to_grid(encoder.features(pixels)), ids, embeddings=embeddings).logits
        target = logits[torch.arange(ids.shape[0]), t, ids[:, t + 1]].sum()
        grad_pixels, grad_words = torch.autograd.grad(target, (pixels, embeddings))
        grads_pixels.append(grad_pixels)
        grads_words.append(grad_words.sum(-1))
    torch.testing.assert_close(modified.pixels, torch.stack(grads_pixels, 1), atol=1e-10, rtol=0)
    torch.testing.assert_close(
        modified.word_relevance, torch.stack(grads_words, 1), atol=1e-10, rtol=0
    )
