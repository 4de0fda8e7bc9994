"""Stage 2 of LRP for a captioner: from the encoder output F down to the pixels (chapter 7).

Stage 1 (`captionlib.explain.lrp`) ends with the relevance R(F) of every feature-map entry.
Stage 2 pushes it through the CNN with zennit. zennit propagates relevance *as* the
gradient: the relevance at the CNN output is passed as `grad_outputs` and the "gradient"
that arrives at the image is the pixel relevance (no multiplication by the input).

The paper's CNN rules (book/method.md §5) are `paper_composite()`:

- every convolution: α1β0 without bias, for signed inputs. z⁺_j = Σ_i x_i⁺ w_ji⁺ + x_i⁻ w_ji⁻
  (positive inputs with positive weights *and* negative inputs with negative weights, both
  contributions positive) and R_i = Σ_j (x_i⁺ w_ji⁺ + x_i⁻ w_ji⁻) / z⁺_j · R_j. This is
  zennit 0.5.1's `ZPlus(zero_params=["bias"])`, which equals its
  `AlphaBeta(alpha=1, beta=0, zero_params=["bias"])` (the β term is multiplied by 0);
  tests/test_cnn_lrp.py holds all three equal;
- ReLU passes relevance (zennit's `Pass`);
- max-pool is winner-take-all: its plain gradient routes the relevance to the maximum.

`SignedZPlus` is that convolution rule as a zennit hook that costs little more than a
plain gradient (SmallVGG, 11 words: about 1.3× the plain gradient; zennit's `ZPlus` about
2.5×). zennit's own hooks let the layer's ordinary backward run and then replace
its result, and they always evaluate both input signs as separate maps; `SignedZPlus`
replaces the layer's output by an autograd function (so the ordinary backward never runs),
skips the negative-input map when the layer input is non-negative (every layer after a
ReLU) and otherwise evaluates both sign pairs as one map over stacked channels.

Many explanations of one image (one per caption word) share one forward pass: with a
relevance of shape (B, K, C, h, w) the K backward passes run as one vectorised backward
(`torch.autograd.grad(..., is_grads_batched=True)`), so the CNN forward runs B times, not
B·K times. Any zennit composite (e.g. `zennit.composites.EpsilonPlusFlat()`) can replace
the paper's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as functional
from torch import Tensor, nn
from zennit.composites import LayerMapComposite
from zennit.core import Composite, Hook, RemovableHandle, RemovableHandleList
from zennit.rules import Pass
from zennit.types import Activation, ConvolutionStandard

DEFAULT_STABILIZER = 1e-6


def _forward_with(module: nn.Module, x: Tensor, weight: Tensor) -> Tensor:
    """The layer's linear map with `weight` instead of its own and no bias."""
    if isinstance(module, nn.Linear):
        return functional.linear(x, weight)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module._conv_forward(x, weight, None)
    raise ValueError(f"SignedZPlus supports Linear and Conv1d/2d/3d layers, got {module}")


def _zplus_parts(
    module: nn.Module, parts: list[tuple[Tensor, Tensor]], relevance: Tensor, stabilizer: float
) -> list[Tensor]:
    """z⁺ = Σ_p layer(x_p; w_p) (no bias); relevance of each x_p: x_p ⊙ W_pᵀ (R / (z⁺ + s))."""
    with torch.enable_grad():
        inputs = [part.detach().requires_grad_() for part, _ in parts]
        z_plus = _forward_with(module, inputs[0], parts[0][1])
        for part, (_, weight) in zip(inputs[1:], parts[1:], strict=True):
            z_plus = z_plus + _forward_with(module, part, weight)
        scaled = relevance / (z_plus + stabilizer)  # z⁺ ≥ 0, so the sign of the stabilizer is +
        grads = torch.autograd.grad(z_plus, inputs, scaled)
    return [part.detach() * grad for part, grad in zip(inputs, grads, strict=True)]


def signed_zplus_relevance(
    module: nn.Module, x: Tensor, relevance: Tensor, stabilizer: float = DEFAULT_STABILIZER
) -> Tensor:
    """α1β0 without bias for one layer: input x, relevance at the output → relevance at x.

    R_i = Σ_j (x_i⁺ w_ji⁺ + x_i⁻ w_ji⁻) / (z⁺_j + stabilizer) · R_j. Works with a batched
    `relevance` inside a vectorised backward (x is then shared by the whole batch). For a
    non-negative x only the x⁺ w⁺ map is evaluated; for a signed x (the image) both sign
    pairs run as one map over the stacked channels [x⁺; x⁻] with weights [w⁺, w⁻].
    """
    weight, x = module.weight.detach(), x.detach()  # type: ignore[union-attr]
    if not bool((x < 0).any()):
        return _zplus_parts(module, [(x, weight.clamp(min=0))], relevance, stabilizer)[0]
    if getattr(module, "groups", 1) == 1:
        spatial = len(getattr(module, "kernel_size", ()))
        channel_dim = x.dim() - spatial - 1
        stacked = torch.cat([x.clamp(min=0), x.clamp(max=0)], dim=channel_dim)
        weights = torch.cat([weight.clamp(min=0), weight.clamp(max=0)], dim=1)
        both = _zplus_parts(module, [(stacked, weights)], relevance, stabilizer)[0]
        positive, negative = both.chunk(2, dim=channel_dim)
        return positive + negative
    parts = [(x.clamp(min=0), weight.clamp(min=0)), (x.clamp(max=0), weight.clamp(max=0))]
    positive, negative = _zplus_parts(module, parts, relevance, stabilizer)
    return positive + negative


class _SignedZPlusFunction(torch.autograd.Function):
    """Forward: the layer's own output. Backward: `signed_zplus_relevance`."""

    @staticmethod
    def forward(  # type: ignore[override]
        x: Tensor, output: Tensor, module: nn.Module, stabilizer: float
    ) -> Tensor:
        return output.view_as(output)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        x, _, module, stabilizer = inputs
        ctx.save_for_backward(x)
        ctx.module = module
        ctx.stabilizer = stabilizer

    @staticmethod
    def backward(ctx, relevance: Tensor):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        return signed_zplus_relevance(ctx.module, x, relevance, ctx.stabilizer), None, None, None


class SignedZPlus(Hook):
    """zennit rule: α1β0 without bias for signed inputs (the paper's convolution rule).

    Same numbers as zennit's `ZPlus(zero_params=["bias"])`, at about half of its backward
    cost; see the module docstring.
    """

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER) -> None:
        super().__init__()
        if stabilizer <= 0:
            raise ValueError(f"stabilizer must be > 0, got {stabilizer}")
        self.stabilizer = stabilizer

    def copy(self) -> SignedZPlus:
        return SignedZPlus(self.stabilizer)

    def register(self, module: nn.Module) -> RemovableHandleList:
        return RemovableHandleList(
            [RemovableHandle(self), module.register_forward_hook(self._replace_output)]
        )

    def _replace_output(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor):  # type: ignore[no-untyped-def]
        x = inputs[0]
        if not self.active or not torch.is_grad_enabled() or not x.requires_grad:
            return None
        return _SignedZPlusFunction.apply(x, output.detach(), module, self.stabilizer)


def paper_composite(stabilizer: float = DEFAULT_STABILIZER) -> Composite:
    """The authors' CNN rules: α1β0 without bias on every conv and linear layer, activations
    pass relevance (zennit's `Pass`), max-pool keeps its gradient (winner-take-all)."""
    rule = SignedZPlus(stabilizer)
    return LayerMapComposite(
        layer_map=[(Activation, Pass()), (ConvolutionStandard, rule), (nn.Linear, rule)]
    )


@contextlib.contextmanager
def hooked_forward(
    features_module: nn.Module, images: Tensor, composite: Composite | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Run the CNN under a composite; yields (pixels, feature_map).

    pixels: the images as a leaf that requires grad, (B, 3, H, W); feature_map: the CNN
    output (B, C, h, w). Call `propagate` inside the `with` block (zennit removes its hooks,
    and the tensors they store, on exit).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    composite = paper_composite() if composite is None else composite
    pixels = images.detach().requires_grad_()
    with composite.context(features_module) as module, torch.enable_grad():
        yield pixels, module(pixels)


def propagate(pixels: Tensor, feature_map: Tensor, relevance: Tensor) -> Tensor:
    """Relevance at the CNN output → relevance at the pixels (inside `hooked_forward`).

    relevance: (B, C, h, w) → (B, 3, H, W), or (B, K, C, h, w) → (B, K, 3, H, W): K
    explanations per image in one vectorised backward.
    """
    batched = relevance.dim() == feature_map.dim() + 1
    shape = tuple(relevance.shape[2:] if batched else relevance.shape[1:])
    if relevance.shape[0] != feature_map.shape[0] or shape != tuple(feature_map.shape[1:]):
        raise ValueError(
            f"relevance must be (B, C, h, w) or (B, K, C, h, w) matching the feature map "
            f"{tuple(feature_map.shape)}, got {tuple(relevance.shape)}"
        )
    relevance = relevance.to(feature_map.dtype)
    if not batched:
        (result,) = torch.autograd.grad(feature_map, pixels, relevance)
        return result
    (result,) = torch.autograd.grad(
        feature_map, pixels, relevance.transpose(0, 1), is_grads_batched=True
    )  # (K, B, 3, H, W)
    return result.transpose(0, 1)


def explain_cnn(
    features_module: nn.Module,
    images: Tensor,
    relevance: Tensor,
    composite: Composite | None = None,
) -> Tensor:
    """Stage 2: relevance of the CNN output F → signed pixel relevance (chapter 7).

    features_module: the CNN (e.g. `SmallVGG().features`); images (B, 3, H, W); relevance
    (B, C, h, w) → (B, 3, H, W), or (B, K, C, h, w) → (B, K, 3, H, W). composite: any zennit
    composite, default `paper_composite()`.
    """
    with hooked_forward(features_module, images, composite) as (pixels, feature_map):
        return propagate(pixels, feature_map, relevance)
