"""Stage 2 of the captioner LRP: the CNN from R(F) to pixels (captionlib.explain.cnn)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from zennit.composites import EpsilonPlusFlat, LayerMapComposite
from zennit.rules import AlphaBeta, Pass, ZPlus
from zennit.types import Activation, Convolution

from captionlib.explain.cnn import (
    SignedZPlus,
    explain_cnn,
    paper_composite,
    signed_zplus_relevance,
)
from captionlib.explain.reference import reference_cnn_relevance
from captionlib.models.encoder import SmallVGG


def _tiny_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
    ).double()


def _zennit_zplus() -> LayerMapComposite:
    return LayerMapComposite([(Activation, Pass()), (Convolution, ZPlus(zero_params=["bias"]))])


def _zennit_alpha1beta0() -> LayerMapComposite:
    rule = AlphaBeta(alpha=1.0, beta=0.0, zero_params=["bias"])
    return LayerMapComposite([(Activation, Pass()), (Convolution, rule)])


@pytest.fixture
def setting() -> tuple[nn.Sequential, Tensor, Tensor]:
    cnn = _tiny_cnn()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=generator)  # signed
    relevance = torch.randn(2, 5, 4, 4, dtype=torch.float64, generator=generator)
    return cnn, images, relevance


def test_paper_rule_equals_zennit_zplus_and_alpha1beta0(setting) -> None:  # type: ignore[no-untyped-def]
    cnn, images, relevance = setting
    ours = explain_cnn(cnn, images, relevance)
    zplus = explain_cnn(cnn, images, relevance, _zennit_zplus())
    alpha_beta = explain_cnn(cnn, images, relevance, _zennit_alpha1beta0())
    torch.testing.assert_close(ours, zplus, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(zplus, alpha_beta, rtol=1e-10, atol=1e-12)
    assert ours.abs().sum() > 0


def test_paper_rule_equals_layer_by_layer_reference(setting) -> None:  # type: ignore[no-untyped-def]
    cnn, images, relevance = setting
    ours = explain_cnn(cnn, images, relevance)
    reference = reference_cnn_relevance(cnn, images, relevance)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_reference_with_stride_and_overlapping_pool() -> None:
    torch.manual_seed(3)
    cnn = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 3, 2),
    ).double()
    images = torch.randn(2, 3, 13, 13, dtype=torch.float64)
    out = cnn(images)
    relevance = torch.randn(out.shape, dtype=torch.float64)
    ours = explain_cnn(cnn, images, relevance)
    torch.testing.assert_close(ours, reference_cnn_relevance(cnn, images, relevance))
    torch.testing.assert_close(ours, explain_cnn(cnn, images, relevance, _zennit_zplus()))


@pytest.mark.parametrize("zero_bias", [True, False])
def test_conservation_positive_relevance(zero_bias: bool) -> None:
    cnn = _tiny_cnn(seed=4)
    if zero_bias:
        for layer in cnn:
            if isinstance(layer, nn.Conv2d):
                nn.init.zeros_(layer.bias)
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    relevance = torch.rand(3, 5, 4, 4, dtype=torch.float64)
    pixels = explain_cnn(cnn, images, relevance, paper_composite(stabilizer=1e-12))
    # α1β0 without bias: every unit with z⁺ > 0 passes all its relevance down
    torch.testing.assert_close(pixels.sum((1, 2, 3)), relevance.sum((1, 2, 3)), rtol=1e-9, atol=0)


def test_zero_relevance_and_zero_image_give_zeros() -> None:
    cnn = _tiny_cnn()
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    zeros = explain_cnn(cnn, images, torch.zeros(2, 5, 4, 4, dtype=torch.float64))
    assert torch.equal(zeros, torch.zeros_like(images))
    black = explain_cnn(
        cnn, torch.zeros(2, 3, 8, 8, dtype=torch.float64), torch.ones(2, 5, 4, 4).double()
    )
    assert torch.isfinite(black).all()
    assert torch.equal(black, torch.zeros_like(black))


def test_batched_relevance_equals_loop(setting) -> None:  # type: ignore[no-untyped-def]
    cnn, images, _ = setting
    relevance = torch.randn(2, 3, 5, 4, 4, dtype=torch.float64)  # (B, K, C, h, w)
    batched = explain_cnn(cnn, images, relevance)
    assert batched.shape == (2, 3, 3, 8, 8)
    for k in range(3):
        single = explain_cnn(cnn, images, relevance[:, k])
        torch.testing.assert_close(batched[:, k], single, rtol=1e-12, atol=1e-14)
    zennit_batched = explain_cnn(cnn, images, relevance, _zennit_zplus())
    torch.testing.assert_close(batched, zennit_batched, rtol=1e-10, atol=1e-12)


def test_small_vgg_encoder_matches_zennit() -> None:
    torch.manual_seed(5)
    encoder = SmallVGG(channels=(4, 6, 8), convs_per_block=2, in_size=16).double().eval()
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    relevance = torch.rand(2, 2, 8, 2, 2, dtype=torch.float64)
    ours = explain_cnn(encoder.features, images, relevance)
    assert ours.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(
        ours, explain_cnn(encoder.features, images, relevance, _zennit_zplus())
    )
    torch.testing.assert_close(
        ours[:, 0], reference_cnn_relevance(encoder.features, images, relevance[:, 0])
    )


def test_hooks_are_removed_and_gradients_plain_afterwards(setting) -> None:  # type: ignore[no-untyped-def]
    cnn, images, relevance = setting
    explain_cnn(cnn, images, relevance)
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in cnn)
    x = images.clone().requires_grad_()
    (grad,) = torch.autograd.grad(cnn(x), x, relevance)
    plain = images.clone().requires_grad_()
    out = plain
    for layer in cnn:
        out = layer(out)
    (expected,) = torch.autograd.grad(out, plain, relevance)
    torch.testing.assert_close(grad, expected)
    assert not torch.allclose(grad, explain_cnn(cnn, images, relevance))


def test_any_zennit_composite_can_be_used(setting) -> None:  # type: ignore[no-untyped-def]
    cnn, images, relevance = setting
    other = explain_cnn(cnn, images, relevance, EpsilonPlusFlat())
    assert other.shape == images.shape and torch.isfinite(other).all()
    assert not torch.allclose(other, explain_cnn(cnn, images, relevance))


def test_bad_shapes_and_settings_raise(setting) -> None:  # type: ignore[no-untyped-def]
    cnn, images, relevance = setting
    with pytest.raises(ValueError, match="relevance must be"):
        explain_cnn(cnn, images, relevance[:, :3])
    with pytest.raises(ValueError, match="images must be"):
        explain_cnn(cnn, images[0], relevance)
    with pytest.raises(ValueError, match="stabilizer"):
        SignedZPlus(stabilizer=0.0)


@pytest.mark.parametrize("groups", [1, 2])
def test_signed_inputs_grouped_convolution_and_linear(groups: int) -> None:
    torch.manual_seed(7)
    cnn = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=groups), nn.ReLU()).double()
    images = torch.randn(2, 4, 5, 5, dtype=torch.float64)  # signed input, 4 channels
    relevance = torch.rand(2, 6, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(
        explain_cnn(cnn, images, relevance), explain_cnn(cnn, images, relevance, _zennit_zplus())
    )
    layer = nn.Linear(7, 3).double()
    inputs = torch.randn(5, 7, dtype=torch.float64)
    linear_relevance = torch.rand(5, 3, dtype=torch.float64)
    ours = signed_zplus_relevance(layer, inputs, linear_relevance)
    zennit_linear = LayerMapComposite([(nn.Linear, ZPlus(zero_params=["bias"]))])
    leaf = inputs.clone().requires_grad_()
    with zennit_linear.context(layer) as modified:
        (expected,) = torch.autograd.grad(modified(leaf), leaf, linear_relevance)
    torch.testing.assert_close(ours, expected)
