"""LRP rules as operations the models' own forward uses: a leaf module that models/ and
explain/ both import (chapter 7).

Every operation here computes exactly the ordinary forward value. Outside an explain mode
it is the plain PyTorch operation, with plain gradients. Inside `lrp_mode(...)` its
backward is modified so that, after one ordinary backward pass, the relevance of any
tensor `x` on the relevance path is `x * x.grad` ("gradient × input"). The modifications
(book/method.md §5):

- `linear`, `add`, `mean`: ε-rule, R_i = x_i w_ji / (z_j + ε·sign(z_j)) · R_j; the bias
  absorbs its share. In gradient form: multiply the incoming gradient by z / (z + ε sign z)
  and then take the ordinary backward.
- `tanh`: identity for relevance, R_x = R_y, i.e. grad_x = grad_y · tanh(x) / x.
  (ReLU needs no modification: its ordinary gradient already gives R_x = R_y.)
- `gate`: gate ⊙ signal with the gate as a constant: all relevance to the signal.
- `attend`: Σ_k α_k v_k with α as a constant and the ε-rule in v (the paper's rule,
  CP-LRP). Under `attention="attnlrp"` the softmax keeps its true gradient (AttnLRP's
  softmax rule in gradient form) and the bilinear products q·k and α·v split relevance
  uniformly (half the gradient to each operand).
- `head_select`: when one head is explained (the paper's per-head explanation), the
  relevance reaching the other heads is discarded.

The models call these functions; no explainer re-implements a model's forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

ATTENTION_RULES = ("constant", "attnlrp")


@dataclass(frozen=True)
class LRPConfig:
    """Settings of an active explain mode.

    - epsilon: the ε of the ε-rule (0 gives the plain z-rule, used for conservation tests).
    - attention: "constant" (the paper's rule) or "attnlrp" (captioner B only).
    - head: explain only this attention head (None: all heads jointly).
    - gradient_only: keep true gradients everywhere except that gates and attention weights
      are constants (the authors' "modified gradients", book/method.md §6; chapter 8).
    """

    epsilon: float = 0.01
    attention: str = "constant"
    head: int | None = None
    gradient_only: bool = False

    def __post_init__(self) -> None:
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")
        if self.attention not in ATTENTION_RULES:
            raise ValueError(f"attention must be one of {ATTENTION_RULES}, got {self.attention!r}")


_ACTIVE: ContextVar[LRPConfig | None] = ContextVar("captionlib_lrp_config", default=None)


@contextlib.contextmanager
def lrp_mode(
    epsilon: float = 0.01, attention: str = "constant", head: int | None = None
) -> Iterator[LRPConfig]:
    """Turn the LRP backward rules on inside the `with` block (chapter 7)."""
    token = _ACTIVE.set(LRPConfig(epsilon=epsilon, attention=attention, head=head))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def constant_gates_mode(head: int | None = None) -> Iterator[LRPConfig]:
    """True gradients, but gates, α and β treated as constants (book/method.md §6, chapter 8)."""
    token = _ACTIVE.set(LRPConfig(epsilon=0.0, head=head, gradient_only=True))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active_config() -> LRPConfig | None:
    """The active LRP settings, or None outside an explain mode."""
    return _ACTIVE.get()


def stabilizer(z: Tensor, epsilon: float) -> Tensor:
    """z / (z + ε·sign(z)) with sign(0) = +1 and 0 where z = 0 (never NaN)."""
    denominator = z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where(z == 0, torch.zeros_like(z), z / safe)


class _EpsilonStabilize(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by z / (z + ε sign z)."""

    @staticmethod
    def forward(z: Tensor, epsilon: float) -> Tensor:  # type: ignore[override]
        return z.view_as(z)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        z, epsilon = inputs
        ctx.save_for_backward(z)
        ctx.epsilon = epsilon

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[no-untyped-def, override]
        (z,) = ctx.saved_tensors
        return grad_output * stabilizer(z, ctx.epsilon), None


class _TanhIdentity(torch.autograd.Function):
    """tanh forward; backward grad · tanh(x)/x so that x·grad_x = y·grad_y."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        (x,) = inputs
        ctx.save_for_backward(x, output)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[no-untyped-def, override]
        x, y = ctx.saved_tensors
        tiny = torch.finfo(x.dtype).tiny ** 0.5
        ratio = torch.where(x.abs() < tiny, torch.ones_like(x), y / torch.where(x == 0, 1.0, x))
        return grad_output * ratio


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a constant factor."""

    @staticmethod
    def forward(x: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        ctx.factor = inputs[1]

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[no-untyped-def, override]
        return grad_output * ctx.factor, None


def _epsilon(z: Tensor) -> Tensor:
    config = _ACTIVE.get()
    if config is None or config.gradient_only:
        return z
    return _EpsilonStabilize.apply(z, config.epsilon)


def linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """`layer(x)`; ε-rule under LRP (bias absorbs relevance)."""
    return _epsilon(layer(x))


def add(*terms: Tensor) -> Tensor:
    """Sum of same-shape terms; ε-rule under LRP (relevance split by contribution)."""
    if not terms:
        raise ValueError("add needs at least one term")
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return _epsilon(total)


def mean(x: Tensor, dim: int) -> Tensor:
    """Mean over `dim`; under LRP the sum of x_k / N with the ε-rule."""
    return _epsilon(x.mean(dim=dim))


def tanh(x: Tensor) -> Tensor:
    """tanh; identity for relevance under LRP."""
    config = _ACTIVE.get()
    if config is None or config.gradient_only:
        return torch.tanh(x)
    return _TanhIdentity.apply(x)


def gate(gate_value: Tensor, signal: Tensor) -> Tensor:
    """gate ⊙ signal; under LRP the gate is a constant (signal-take-all)."""
    if _ACTIVE.get() is None:
        return gate_value * signal
    return gate_value.detach() * signal


def softmax(scores: Tensor, dim: int = -1) -> Tensor:
    """Attention softmax. Under the paper's rule its output is a constant (no relevance
    flows into scores); under AttnLRP it keeps its true gradient (the softmax rule)."""
    weights = functional.softmax(scores, dim=dim)
    config = _ACTIVE.get()
    if config is not None and config.attention == "constant":
        return weights.detach()
    return weights


def _half_if_attnlrp(x: Tensor) -> Tensor:
    config = _ACTIVE.get()
    if config is not None and config.attention == "attnlrp":
        return _ScaleGradient.apply(x, 0.5)
    return x


def attend(alpha: Tensor, values: Tensor) -> Tensor:
    """Attention read-out Σ_k α_k v_k.

    alpha: (..., Q, N) weights, values: (..., N, D) → (..., Q, D).
    Paper's rule: α constant, ε-rule in the values. AttnLRP: uniform split (½ each).
    """
    config = _ACTIVE.get()
    if config is not None and config.attention == "constant":
        alpha = alpha.detach()
    return _epsilon(_half_if_attnlrp(alpha) @ _half_if_attnlrp(values))


def scores(query: Tensor, keys: Tensor, scale: float) -> Tensor:
    """Scaled dot-product scores q·kᵀ·scale: (..., Q, D) × (..., N, D) → (..., Q, N).

    Under AttnLRP the bilinear product splits relevance uniformly between q and k.
    """
    return (_half_if_attnlrp(query) @ _half_if_attnlrp(keys).transpose(-1, -2)) * scale


class _HeadMask(torch.autograd.Function):
    """Identity forward; backward keeps only the gradient of one head (dim `head_dim`)."""

    @staticmethod
    def forward(x: Tensor, head: int, head_dim: int) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        _, ctx.head, ctx.head_dim = inputs

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[no-untyped-def, override]
        mask = torch.zeros(
            grad_output.shape[ctx.head_dim], dtype=grad_output.dtype, device=grad_output.device
        )
        mask[ctx.head] = 1
        shape = [1] * grad_output.dim()
        shape[ctx.head_dim] = -1
        return grad_output * mask.view(shape), None, None


def head_select(per_head: Tensor, head_dim: int) -> Tensor:
    """Per-head context (heads along `head_dim`); under LRP with `head=m` set, only head m
    passes relevance back (the paper's one-head-at-a-time explanation)."""
    config = _ACTIVE.get()
    if config is None or config.head is None:
        return per_head
    heads = per_head.shape[head_dim]
    if not 0 <= config.head < heads:
        raise ValueError(f"head {config.head} out of range for {heads} heads")
    return _HeadMask.apply(per_head, config.head, head_dim)
