"""Small networks and LRP written out layer by layer (chapter 6).

Chapter 6 derives LRP on networks small enough to check by hand, then shows that the
explicit per-layer computation and the "gradient × input inside `ops.lrp_mode`" form that
the rest of the book uses give the same numbers::

    model = random_mlp([4, 3, 2], seed=0)                   # Linear → ReLU → Linear, float64
    naive = lrp_naive(model, x, target=1, epsilon=0.01)      # explicit sums, layer by layer
    fast = lrp_autograd(model, x, target=1, epsilon=0.01)    # one backward in lrp_mode
    compare_naive_autograd(model, x, target=1).max_abs_difference   # ~1e-16

The rules, for a linear layer z_j = Σ_i a_i w_ij + b_j with relevance R_j at its output
(w_ij is `layer.weight[j, i]`):

- ε-rule: R_i = Σ_j a_i w_ij / (z_j + ε·sign(z_j)) · R_j. The bias absorbs
  b_j / (z_j + ε·sign(z_j)) · R_j and ε absorbs ε·sign(z_j) / (z_j + ε·sign(z_j)) · R_j.
- α-β rule: with the positive and negative contributions (a_i w_ij)⁺ and (a_i w_ij)⁻ and
  z⁺_j = Σ_i (a_i w_ij)⁺ + b_j⁺, z⁻_j = Σ_i (a_i w_ij)⁻ + b_j⁻,
  R_i = Σ_j (α (a_i w_ij)⁺ / z⁺_j − β (a_i w_ij)⁻ / z⁻_j) · R_j, α − β = 1. α1β0 is the z⁺
  rule; (a_i w_ij)⁺ = a_i⁺ w_ij⁺ + a_i⁻ w_ij⁻, which is how zennit writes it. The
  denominators are stabilised as zennit does: z⁺ + s, z⁻ − s (z⁻ = 0 gets + s).
- ReLU passes relevance unchanged.

A convolution is a linear layer applied to every image patch, so `alpha_beta_conv2d`
unfolds the patches and applies the same formula. `zennit_layer_relevance` and
`zennit_relevance` run zennit's rules for the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import Tensor, nn
from zennit.composites import LayerMapComposite
from zennit.core import Composite, Hook
from zennit.rules import AlphaBeta, Pass
from zennit.types import Activation, Convolution

from captionlib import ops

ZENNIT_STABILIZER = 1e-6  # zennit's default stabiliser of the α-β rule
RULES = ("epsilon", "alpha_beta")


class ToyMLP(nn.Module):
    """A fully connected ReLU network built with `ops.linear` (chapter 6).

    sizes: [inputs, hidden…, outputs]; Linear → ReLU after every layer but the last, so
    x (B, sizes[0]) → logits (B, sizes[-1]). Inside `ops.lrp_mode(epsilon)` one backward
    gives ε-LRP as input × gradient.
    """

    def __init__(self, sizes: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2 or any(size < 1 for size in sizes):
            raise ValueError(f"sizes must list at least 2 positive layer widths, got {sizes}")
        self.sizes = sizes
        self.layers = nn.ModuleList(
            nn.Linear(fan_in, fan_out, bias=bias)
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activations = nn.ModuleList(nn.ReLU() for _ in sizes[1:-1])

    def forward(self, x: Tensor) -> Tensor:
        """x (B, sizes[0]) → logits (B, sizes[-1])."""
        if x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"x must have shape (B, {self.sizes[0]}), got {tuple(x.shape)}")
        for index, layer in enumerate(self.layers):
            x = ops.linear(x, layer)
            if index < len(self.activations):
                x = self.activations[index](x)
        return x

    def zero_biases(self) -> ToyMLP:
        """Set every bias to 0 (in place) and return the model, for conservation checks."""
        with torch.no_grad():
            for layer in self.layers:
                if layer.bias is not None:
                    layer.bias.zero_()
        return self


def random_mlp(
    sizes: Sequence[int], seed: int = 0, bias: bool = True, dtype: torch.dtype = torch.float64
) -> ToyMLP:
    """A `ToyMLP` with reproducible random weights (He-scaled normal) and biases (normal · 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    model = ToyMLP(sizes, bias=bias).to(dtype)
    with torch.no_grad():
        for layer in model.layers:
            fan_in = layer.in_features
            scale = (2.0 / fan_in) ** 0.5
            layer.weight.copy_(scale * torch.randn(layer.weight.shape, generator=generator))
            if layer.bias is not None:
                layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))
    return model


def worked_example() -> tuple[ToyMLP, Tensor]:
    """Chapter 6's hand-sized network and input: 3 inputs → 2 ReLU units → 2 logits, float64.

    x = (2, 2, 1); hidden z = (1, 2.5); logits (−0.5, 4). Every number of the chapter's
    worked example can be checked with pencil and paper.
    """
    model = ToyMLP([3, 2, 2]).double()
    values = [
        ([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]], [0.5, 0.5]),
        ([[2.0, -1.0], [1.0, 1.0]], [0.0, 0.5]),
    ]
    with torch.no_grad():
        for layer, (weight, bias) in zip(model.layers, values, strict=True):
            layer.weight.copy_(torch.tensor(weight))
            layer.bias.copy_(torch.tensor(bias))
    return model, torch.tensor([[2.0, 2.0, 1.0]], dtype=torch.float64)


class TinyCNN(nn.Module):
    """A small CNN classifier with random weights, to try zennit composites on a CNN without
    the book's pretrained encoder (chapter 6; the tests use it).

    images (B, 3, S, S) → `features`: conv 3×3 → ReLU → max-pool → conv 3×3 → ReLU,
    (B, channels[1], S/2, S/2) → global max pool → linear → logits (B, classes).
    """

    def __init__(self, classes: int = 10, channels: Sequence[int] = (8, 16)) -> None:
        super().__init__()
        first, second = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(second, classes)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        return self.classifier(self.features(images).amax(dim=(2, 3)))


# --- explicit rules ------------------------------------------------------------------------------


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, and 0 where the denominator is 0."""
    safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where(denominator == 0, torch.zeros_like(numerator), numerator / safe)


def _sign(z: Tensor) -> Tensor:
    """sign with sign(0) = +1, as the ε-rule uses it."""
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _zennit_stabilize(z: Tensor, stabilizer: float) -> Tensor:
    """zennit's stabiliser: z + s·sign(z), and s where z = 0."""
    return z + stabilizer * (z.sign() + (z == 0).to(z.dtype))


def _contributions(a: Tensor, weight: Tensor) -> Tensor:
    """a (B, I), weight (J, I) → a_i w_ij as (B, I, J)."""
    return a[:, :, None] * weight.t()[None]


def epsilon_rule(
    a: Tensor, weight: Tensor, bias: Tensor | None, relevance: Tensor, epsilon: float
) -> tuple[Tensor, Tensor]:
    """ε-LRP through one linear layer, written as the sums of the formula.

    a (B, I) layer input, weight (J, I), bias (J,) or None, relevance (B, J) at the output →
    (relevance of the inputs (B, I), relevance absorbed by the biases (B, J)).
    R_i = Σ_j a_i w_ij / (z_j + ε sign z_j) · R_j; a share whose denominator is 0 is 0.
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    bias = torch.zeros(weight.shape[0], dtype=a.dtype) if bias is None else bias
    contributions = _contributions(a, weight)  # (B, I, J)
    z = contributions.sum(1) + bias  # (B, J)
    share = _safe_divide(relevance, z + epsilon * _sign(z))  # (B, J): R_j / (z_j + ε sign z_j)
    return (contributions * share[:, None, :]).sum(2), bias * share


def _alpha_beta_from_contributions(
    contributions: Tensor,
    bias: Tensor,
    relevance: Tensor,
    alpha: float,
    beta: float,
    stabilizer: float,
) -> tuple[Tensor, Tensor]:
    """The α-β rule on contributions (B, I, J, P): input i, output unit j, position p.

    bias (1, J, P), relevance (B, J, P) → (relevance of the inputs (B, I, P), of the biases
    (B, J, P)). A linear layer has P = 1; a convolution has one position per image patch.
    """
    positive, negative = contributions.clamp(min=0), contributions.clamp(max=0)
    z_positive = positive.sum(1) + bias.clamp(min=0)  # (B, J, P)
    z_negative = negative.sum(1) + bias.clamp(max=0)  # (B, J, P)
    share_positive = relevance / _zennit_stabilize(z_positive, stabilizer)  # (B, J, P)
    share_negative = relevance / _zennit_stabilize(z_negative, stabilizer)  # (B, J, P)
    inputs = alpha * (positive * share_positive[:, None]).sum(2)
    inputs = inputs - beta * (negative * share_negative[:, None]).sum(2)
    biases = alpha * bias.clamp(min=0) * share_positive - beta * bias.clamp(max=0) * share_negative
    return inputs, biases


def _check_alpha_beta(alpha: float, beta: float) -> None:
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
        raise ValueError(
            f"alpha-beta rule needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}"
        )


def alpha_beta_rule(
    a: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    relevance: Tensor,
    alpha: float = 1.0,
    beta: float = 0.0,
    stabilizer: float = ZENNIT_STABILIZER,
) -> tuple[Tensor, Tensor]:
    """α-β LRP through one linear layer (α1β0 = z⁺ rule by default), as explicit sums.

    a (B, I), weight (J, I), bias (J,) or None, relevance (B, J) → (inputs (B, I), biases
    (B, J)). Positive contributions (a_i w_ij)⁺ share α R_j, negative ones −β R_j; the bias
    joins the part of its sign.
    """
    _check_alpha_beta(alpha, beta)
    bias = torch.zeros(weight.shape[0], dtype=a.dtype) if bias is None else bias
    inputs, biases = _alpha_beta_from_contributions(
        _contributions(a, weight)[..., None],
        bias[None, :, None],
        relevance[..., None],
        alpha,
        beta,
        stabilizer,
    )  # (B, I, 1), (B, J, 1)
    return inputs[..., 0], biases[..., 0]


def alpha_beta_conv2d(
    conv: nn.Conv2d,
    x: Tensor,
    relevance: Tensor,
    alpha: float = 1.0,
    beta: float = 0.0,
    stabilizer: float = ZENNIT_STABILIZER,
    use_bias: bool = True,
) -> Tensor:
    """α-β LRP through a Conv2d: the linear-layer formula applied to every image patch.

    x (B, C, H, W), relevance (B, O, H', W') → relevance of x (B, C, H, W). The patches are
    unfolded (B, C·k·k, P), each output unit (o, p) is a linear unit over its patch, and the
    patch relevances are folded back (a pixel in several patches sums its shares).
    `use_bias=False` drops the bias (the paper's CNN rule).
    """
    _check_alpha_beta(alpha, beta)
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("alpha_beta_conv2d supports groups=1, numeric zero padding only")
    options = {
        "kernel_size": conv.kernel_size,
        "dilation": conv.dilation,
        "padding": conv.padding,
        "stride": conv.stride,
    }
    batch, out_channels = x.shape[0], conv.out_channels
    if relevance.dim() != 4 or relevance.shape[:2] != (batch, out_channels):
        raise ValueError(
            f"relevance must be (B={batch}, O={out_channels}, H', W'), got {tuple(relevance.shape)}"
        )
    patches = functional.unfold(x.detach(), **options)  # (B, C·k·k, P)
    positions = patches.shape[2]
    weight = conv.weight.detach().flatten(1)  # (O, C·k·k)
    contributions = patches[:, :, None, :] * weight.t()[None, :, :, None]  # (B, CKK, O, P)
    bias = torch.zeros(out_channels, dtype=x.dtype)
    if use_bias and conv.bias is not None:
        bias = conv.bias.detach()
    patch_relevance, _ = _alpha_beta_from_contributions(
        contributions,
        bias[None, :, None].expand(1, out_channels, positions),
        relevance.flatten(2),
        alpha,
        beta,
        stabilizer,
    )  # (B, CKK, P)
    return functional.fold(patch_relevance, output_size=x.shape[2:], **options)


# --- whole networks ------------------------------------------------------------------------------


@dataclass
class NaiveLRP:
    """Layer-by-layer LRP of a `ToyMLP` (chapter 6).

    logits: (B, O) the forward output; layers[l]: relevance of layer l's input a_l, (B, I_l)
    (layers[0] is the input x), and layers[-1] the start relevance at the logits (B, O);
    biases[l]: (B, J_l) relevance absorbed by layer l's biases.
    """

    logits: Tensor
    layers: list[Tensor]
    biases: list[Tensor]

    @property
    def input(self) -> Tensor:
        """Relevance of the network input, (B, I)."""
        return self.layers[0]


def one_hot_target(logits: Tensor, target: int | Tensor) -> Tensor:
    """(B, O) mask with a 1 at the explained class of each row.

    target: one class index for the whole batch, or a (B,) tensor of indices.
    """
    classes = logits.shape[1]
    index = torch.as_tensor(target, device=logits.device).long().expand(logits.shape[0])
    if bool(((index < 0) | (index >= classes)).any()):
        raise ValueError(f"target {target} out of range for {classes} classes")
    return functional.one_hot(index, classes).to(logits.dtype)


def start_relevance(logits: Tensor, target: int | Tensor) -> Tensor:
    """One-hot relevance at the explained class with value = its logit: (B, O) → (B, O)."""
    return logits.detach() * one_hot_target(logits, target)


def forward_trace(model: ToyMLP, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """The input of every linear layer, [a_0 = x, a_1, …] each (B, I_l), and the logits."""
    inputs = []
    with torch.no_grad():
        for index, layer in enumerate(model.layers):
            inputs.append(x)
            x = layer(x)
            if index < len(model.activations):
                x = torch.relu(x)
    return inputs, x


def lrp_naive(
    model: ToyMLP,
    x: Tensor,
    target: int | Tensor,
    rule: str = "epsilon",
    epsilon: float = 0.01,
    alpha: float = 1.0,
    beta: float = 0.0,
) -> NaiveLRP:
    """Explicit LRP of a `ToyMLP`: store the activations, then apply the rule layer by layer.

    x (B, I); rule "epsilon" (ε-rule everywhere) or "alpha_beta" (α-β everywhere, zennit's
    stabiliser). Starts at the target's logit; ReLU passes relevance unchanged.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    inputs, logits = forward_trace(model, x)
    relevance = start_relevance(logits, target)  # (B, O)
    layers, biases = [relevance], []
    for layer, a in zip(reversed(model.layers), reversed(inputs), strict=True):
        weight = layer.weight.detach()
        bias = None if layer.bias is None else layer.bias.detach()
        if rule == "epsilon":
            relevance, absorbed = epsilon_rule(a, weight, bias, relevance, epsilon)
        else:
            relevance, absorbed = alpha_beta_rule(a, weight, bias, relevance, alpha, beta)
        # relevance is now at a_l, the ReLU output; the ReLU hands it on unchanged
        layers.insert(0, relevance)
        biases.insert(0, absorbed)
    return NaiveLRP(logits=logits, layers=layers, biases=biases)


def lrp_autograd(model: ToyMLP, x: Tensor, target: int | Tensor, epsilon: float = 0.01) -> Tensor:
    """ε-LRP of the input as gradient × input: one backward inside `ops.lrp_mode`.

    x (B, I) → (B, I). The backward is seeded with the one-hot target, so the relevance at
    the logits is logit × 1, as in `lrp_naive`.
    """
    leaf = x.detach().requires_grad_()
    with ops.lrp_mode(epsilon=epsilon), torch.enable_grad():
        logits = model(leaf)
        (gradient,) = torch.autograd.grad(logits, leaf, one_hot_target(logits, target))
    return leaf.detach() * gradient


@dataclass
class Comparison:
    """`compare_naive_autograd`'s result: both relevances (B, I), their largest absolute
    difference, the explained logits (B,) and the total input relevance of each (B,)."""

    naive: Tensor
    autograd: Tensor
    max_abs_difference: float
    logits: Tensor
    naive_total: Tensor
    autograd_total: Tensor


def compare_naive_autograd(
    model: ToyMLP, x: Tensor, target: int | Tensor, epsilon: float = 0.01
) -> Comparison:
    """Run `lrp_naive` (ε-rule) and `lrp_autograd` on the same input and compare them."""
    naive = lrp_naive(model, x, target, rule="epsilon", epsilon=epsilon)
    fast = lrp_autograd(model, x, target, epsilon)
    explained = start_relevance(naive.logits, target).sum(1)
    return Comparison(
        naive=naive.input,
        autograd=fast,
        max_abs_difference=float((naive.input - fast).abs().max()),
        logits=explained,
        naive_total=naive.input.sum(1),
        autograd_total=fast.sum(1),
    )


# --- zennit --------------------------------------------------------------------------------------


def alpha1beta0_composite(zero_bias: bool = True) -> Composite:
    """zennit composite: α1β0 (`AlphaBeta(alpha=1, beta=0)`) on every convolution and linear
    layer, ReLU passes relevance, pooling keeps its gradient (max-pool: winner-take-all).
    `zero_bias=True` leaves the biases out, as the paper's CNN rule does."""
    zero_params = ["bias"] if zero_bias else None
    return LayerMapComposite(
        layer_map=[
            (Activation, Pass()),
            (Convolution, AlphaBeta(alpha=1.0, beta=0.0, zero_params=zero_params)),
            (nn.Linear, AlphaBeta(alpha=1.0, beta=0.0, zero_params=zero_params)),
        ]
    )


def zennit_layer_relevance(layer: nn.Module, x: Tensor, relevance: Tensor, rule: Hook) -> Tensor:
    """One layer through a zennit rule: relevance at its output → relevance at x.

    zennit passes relevance *as* the gradient, so this is the layer's backward with the
    rule's hook attached and `relevance` as the output gradient.
    """
    composite = LayerMapComposite(layer_map=[(type(layer), rule)])
    leaf = x.detach().requires_grad_()
    with composite.context(layer) as hooked, torch.enable_grad():
        output = hooked(leaf)
        (result,) = torch.autograd.grad(output, leaf, relevance)
    return result


def zennit_relevance(
    model: nn.Module, x: Tensor, target: int | Tensor, composite: Composite
) -> Tensor:
    """Relevance of the input x for the target's logit under a zennit composite.

    model: x → logits (B, classes); starts at the target's logit (one-hot × logit).
    """
    leaf = x.detach().requires_grad_()
    with composite.context(model) as hooked, torch.enable_grad():
        logits = hooked(leaf)
        (result,) = torch.autograd.grad(logits, leaf, start_relevance(logits, target))
    return result
