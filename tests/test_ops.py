"""The LRP rule operations of captionlib.ops against explicit formulas (chapter 7).

Every test builds a small float64 problem, runs the operation inside `lrp_mode`, takes one
ordinary backward and compares `x * x.grad` (relevance = input × gradient) with the LRP
formula written out by hand.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captionlib import ops


def _sign(z: Tensor) -> Tensor:
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _leaf(*shape: int, generator: torch.Generator) -> Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=generator).requires_grad_()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("epsilon", [0.0, 0.01, 0.5])
def test_linear_epsilon_rule_matches_formula(gen: torch.Generator, epsilon: float) -> None:
    layer = nn.Linear(5, 3).double()
    x = _leaf(4, 5, generator=gen)
    upstream = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(epsilon=epsilon):
        z = ops.linear(x, layer)
    z.backward(upstream)
    relevance_out = (z * upstream).detach()  # R_j = z_j · grad_j
    zd = z.detach()
    # R_i = Σ_j x_i w_ji R_j / (z_j + ε sign z_j)
    expected = x.detach() * ((relevance_out / (zd + epsilon * _sign(zd))) @ layer.weight.detach())
    torch.testing.assert_close(x * x.grad, expected, rtol=1e-12, atol=1e-12)


def test_linear_without_bias_conserves_at_zero_epsilon(gen: torch.Generator) -> None:
    layer = nn.Linear(6, 4, bias=False).double()
    x = _leaf(3, 6, generator=gen)
    with ops.lrp_mode(epsilon=0.0):
        z = ops.linear(x, layer)
    upstream = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    z.backward(upstream)
    torch.testing.assert_close((x * x.grad).sum(1), (z * upstream).detach().sum(1))


def test_linear_with_epsilon_absorbs_relevance(gen: torch.Generator) -> None:
    layer = nn.Linear(6, 1, bias=False).double()
    x = _leaf(1, 6, generator=gen)
    with ops.lrp_mode(epsilon=1.0):
        z = ops.linear(x, layer)
    z.backward(torch.ones_like(z))
    total_in = (x * x.grad).sum()
    zd = z.detach().squeeze()
    # Σ_i R_i = z · z / (z + ε sign z): strictly less than R = z in magnitude.
    torch.testing.assert_close(total_in, zd * zd / (zd + _sign(zd)))
    assert total_in.abs() < zd.abs()


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_add_splits_relevance_by_contribution(gen: torch.Generator, epsilon: float) -> None:
    a, b, c = (_leaf(2, 4, generator=gen) for _ in range(3))
    upstream = torch.randn(2, 4, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(epsilon=epsilon):
        z = ops.add(a, b, c)
    z.backward(upstream)
    zd = z.detach()
    share = (zd * upstream) / (zd + epsilon * _sign(zd))
    for term in (a, b, c):
        torch.testing.assert_close(term * term.grad, term.detach() * share)
    if epsilon == 0.0:
        total = sum((t * t.grad) for t in (a, b, c))
        torch.testing.assert_close(total, zd * upstream)


def test_add_needs_terms() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ops.add()


@pytest.mark.parametrize("epsilon", [0.0, 0.05])
def test_mean_is_epsilon_sum_of_scaled_inputs(gen: torch.Generator, epsilon: float) -> None:
    x = _leaf(2, 5, 3, generator=gen)
    upstream = torch.randn(2, 3, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(epsilon=epsilon):
        z = ops.mean(x, dim=1)
    z.backward(upstream)
    zd = z.detach()
    share = (zd * upstream / (zd + epsilon * _sign(zd))).unsqueeze(1)  # (2, 1, 3)
    expected = (x.detach() / 5) * share
    torch.testing.assert_close(x * x.grad, expected)


def test_tanh_is_identity_for_relevance(gen: torch.Generator) -> None:
    x = _leaf(3, 7, generator=gen)
    upstream = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    with ops.lrp_mode():
        y = ops.tanh(x)
    torch.testing.assert_close(y, torch.tanh(x))
    y.backward(upstream)
    torch.testing.assert_close(x * x.grad, y.detach() * upstream)


def test_tanh_at_and_near_zero_is_finite() -> None:
    x = torch.tensor([0.0, 1e-300, -1e-200, 1e-8], dtype=torch.float64, requires_grad=True)
    with ops.lrp_mode():
        y = ops.tanh(x)
    y.backward(torch.ones_like(y))
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x * x.grad, y.detach(), rtol=1e-12, atol=1e-300)


def test_gate_gives_all_relevance_to_signal(gen: torch.Generator) -> None:
    gate_in = _leaf(2, 6, generator=gen)
    signal = _leaf(2, 6, generator=gen)
    upstream = torch.randn(2, 6, dtype=torch.float64, generator=gen)
    with ops.lrp_mode():
        out = ops.gate(torch.sigmoid(gate_in), signal)
    torch.testing.assert_close(out, torch.sigmoid(gate_in) * signal)
    out.backward(upstream)
    assert gate_in.grad is None
    torch.testing.assert_close(signal * signal.grad, out.detach() * upstream)


@pytest.mark.parametrize("epsilon", [0.0, 0.01])
def test_attend_constant_alpha_is_epsilon_rule_in_values(
    gen: torch.Generator, epsilon: float
) -> None:
    scores = _leaf(2, 3, 5, generator=gen)  # (B, Q, N)
    values = _leaf(2, 5, 4, generator=gen)  # (B, N, D)
    upstream = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(epsilon=epsilon):
        alpha = ops.softmax(scores, dim=-1)
        out = ops.attend(alpha, values)
    out.backward(upstream)
    assert scores.grad is None  # constant attention: nothing reaches the scores
    a, v, z = alpha.detach(), values.detach(), out.detach()
    share = z * upstream / (z + epsilon * _sign(z))  # (B, Q, D)
    # R_{n,d} = Σ_q α_{q,n} v_{n,d} share_{q,d}
    expected = torch.einsum("bqn,bnd,bqd->bnd", a, v, share)
    torch.testing.assert_close(values * values.grad, expected)


def test_attnlrp_softmax_keeps_true_gradient_and_rule(gen: torch.Generator) -> None:
    x = _leaf(2, 6, generator=gen)
    upstream = torch.randn(2, 6, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(attention="attnlrp"):
        s = ops.softmax(x, dim=-1)
    (grad_lrp,) = torch.autograd.grad(s, x, upstream)
    (grad_plain,) = torch.autograd.grad(torch.softmax(x, dim=-1), x, upstream)
    torch.testing.assert_close(grad_lrp, grad_plain)
    # AttnLRP's softmax rule: R_in = x ⊙ (R_out − s ⊙ Σ R_out)
    relevance_out = s.detach() * upstream
    expected = x.detach() * (relevance_out - s.detach() * relevance_out.sum(-1, keepdim=True))
    torch.testing.assert_close(x.detach() * grad_lrp, expected)


def test_attnlrp_scores_split_uniformly_between_query_and_keys(gen: torch.Generator) -> None:
    query = _leaf(2, 1, 4, generator=gen)  # (B, Q, D)
    keys = _leaf(2, 5, 4, generator=gen)  # (B, N, D)
    upstream = torch.randn(2, 1, 5, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(attention="attnlrp"):
        s = ops.scores(query, keys, scale=0.5)
    torch.testing.assert_close(s, query @ keys.transpose(-1, -2) * 0.5)
    s.backward(upstream)
    relevance_out = (s * upstream).detach()
    r_query = (query * query.grad).sum()
    r_keys = (keys * keys.grad).sum()
    torch.testing.assert_close(r_query, relevance_out.sum() / 2)
    torch.testing.assert_close(r_keys, relevance_out.sum() / 2)
    # elementwise: half the gradient × input
    true_grad_q = (upstream @ keys.detach()) * 0.5
    torch.testing.assert_close(query * query.grad, query.detach() * true_grad_q / 2)


def test_attnlrp_attend_splits_uniformly(gen: torch.Generator) -> None:
    alpha = torch.softmax(torch.randn(2, 1, 5, dtype=torch.float64, generator=gen), -1)
    alpha.requires_grad_()
    values = _leaf(2, 5, 3, generator=gen)
    upstream = torch.randn(2, 1, 3, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(epsilon=0.0, attention="attnlrp"):
        out = ops.attend(alpha, values)
    out.backward(upstream)
    total = (out * upstream).detach().sum()
    torch.testing.assert_close((alpha * alpha.grad).sum(), total / 2)
    torch.testing.assert_close((values * values.grad).sum(), total / 2)


def test_scores_under_paper_rule_are_plain(gen: torch.Generator) -> None:
    query = _leaf(1, 1, 3, generator=gen)
    keys = _leaf(1, 4, 3, generator=gen)
    upstream = torch.randn(1, 1, 4, dtype=torch.float64, generator=gen)
    with ops.lrp_mode():
        s = ops.scores(query, keys, scale=1.0)
    (grad_q,) = torch.autograd.grad(s, query, upstream)
    torch.testing.assert_close(grad_q, upstream @ keys.detach())


def test_head_select_discards_other_heads(gen: torch.Generator) -> None:
    per_head = _leaf(2, 4, 3, generator=gen)  # (B, M, D)
    upstream = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen)
    with ops.lrp_mode(head=2):
        out = ops.head_select(per_head, head_dim=1)
    torch.testing.assert_close(out, per_head)
    out.backward(upstream)
    expected = torch.zeros_like(upstream)
    expected[:, 2] = upstream[:, 2]
    torch.testing.assert_close(per_head.grad, expected)


def test_head_select_all_heads_by_default(gen: torch.Generator) -> None:
    per_head = _leaf(2, 4, 3, generator=gen)
    upstream = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen)
    with ops.lrp_mode():
        out = ops.head_select(per_head, head_dim=1)
    out.backward(upstream)
    torch.testing.assert_close(per_head.grad, upstream)


def test_head_select_rejects_bad_head(gen: torch.Generator) -> None:
    per_head = _leaf(1, 3, 2, generator=gen)
    with ops.lrp_mode(head=3), pytest.raises(ValueError, match="head 3"):
        ops.head_select(per_head, head_dim=1)


def test_zero_inputs_give_zeros_not_nan() -> None:
    layer = nn.Linear(4, 3, bias=False).double()
    x = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    a = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    values = torch.zeros(2, 5, 3, dtype=torch.float64, requires_grad=True)
    alpha = torch.full((2, 1, 5), 0.2, dtype=torch.float64)
    for epsilon in (0.0, 0.01):
        for tensor in (x, a, values):
            tensor.grad = None
        with ops.lrp_mode(epsilon=epsilon):
            z = ops.linear(x, layer)
            total = ops.add(ops.tanh(z), a, ops.mean(values, dim=1))
            read = ops.attend(alpha, values).squeeze(1)
            out = ops.add(total, read)
        out.backward(torch.ones_like(out))
        for tensor in (x, a, values):
            assert torch.isfinite(tensor.grad).all()
            assert torch.equal(tensor * tensor.grad, torch.zeros_like(tensor))


@pytest.mark.parametrize("attention", ["constant", "attnlrp"])
def test_outside_lrp_mode_gradients_are_plain(gen: torch.Generator, attention: str) -> None:
    layer = nn.Linear(4, 4).double()
    x = _leaf(2, 4, generator=gen)
    g = _leaf(2, 4, generator=gen)
    keys = _leaf(2, 6, 4, generator=gen)
    per_head = _leaf(2, 2, 4, generator=gen)

    def ours() -> Tensor:
        z = ops.tanh(ops.linear(x, layer))
        gated = ops.gate(torch.sigmoid(g), z)
        alpha = ops.softmax(ops.scores(gated.unsqueeze(1), keys, scale=0.5), dim=-1)
        read = ops.attend(alpha, keys).squeeze(1)
        heads = ops.head_select(per_head, head_dim=1)
        return ops.add(read, ops.mean(keys, dim=1), heads.sum(1)).pow(2).sum()

    def plain() -> Tensor:
        z = torch.tanh(layer(x))
        gated = torch.sigmoid(g) * z
        alpha = torch.softmax(gated.unsqueeze(1) @ keys.transpose(-1, -2) * 0.5, dim=-1)
        read = (alpha @ keys).squeeze(1)
        return (read + keys.mean(1) + per_head.sum(1)).pow(2).sum()

    inputs = (x, g, keys, per_head)
    assert ops.active_config() is None
    ours_grads = torch.autograd.grad(ours(), inputs)
    plain_grads = torch.autograd.grad(plain(), inputs)
    for got, want in zip(ours_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want)
    # and inside the mode the same forward gives different (modified) gradients
    with ops.lrp_mode(attention=attention, head=0):
        lrp_grads = torch.autograd.grad(ours(), inputs, allow_unused=True)
    assert any(
        lrp is None or not torch.allclose(lrp, want)
        for lrp, want in zip(lrp_grads, plain_grads, strict=True)
    )


def test_lrp_mode_sets_and_resets_config() -> None:
    assert ops.active_config() is None
    with ops.lrp_mode(epsilon=0.2, attention="attnlrp", head=1) as config:
        assert ops.active_config() == config
        assert (config.epsilon, config.attention, config.head) == (0.2, "attnlrp", 1)
        with ops.lrp_mode(epsilon=0.0):
            assert ops.active_config().epsilon == 0.0
        assert ops.active_config() == config
    assert ops.active_config() is None


def test_lrp_mode_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="epsilon"), ops.lrp_mode(epsilon=-1.0):
        pass
    with pytest.raises(ValueError, match="attention"), ops.lrp_mode(attention="softmax"):
        pass


def test_stabilizer_never_nan() -> None:
    z = torch.tensor([0.0, 1e-3, -1e-3, 2.0], dtype=torch.float64)
    out = ops.stabilizer(z, 0.0)
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    out = ops.stabilizer(z, 1e-3)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 0.5, 2 / 2.001], dtype=torch.float64))


def test_constant_gates_mode_keeps_true_gradients_but_freezes_gates() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    g = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    scores = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    values = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)

    def output() -> torch.Tensor:
        hidden = ops.tanh(ops.linear(x, layer))
        alpha = ops.softmax(scores, dim=-1)
        read = ops.attend(alpha.unsqueeze(1), values).squeeze(1)
        return ops.add(ops.gate(g, hidden), read).sum()

    plain = torch.autograd.grad(output(), (x, g, scores, values))
    with ops.constant_gates_mode():
        frozen = torch.autograd.grad(output(), (x, g, scores, values), allow_unused=True)
    # the signal paths keep their true gradients (no ε stabiliser, true tanh derivative)
    hidden = torch.tanh(layer(x))
    expected_x = ((g * (1 - hidden**2)) @ layer.weight).detach()
    torch.testing.assert_close(frozen[0], expected_x)
    torch.testing.assert_close(frozen[0], plain[0])
    torch.testing.assert_close(frozen[3], plain[3])
    # gates and attention weights are constants
    assert frozen[1] is None or torch.count_nonzero(frozen[1]) == 0
    assert frozen[2] is None or torch.count_nonzero(frozen[2]) == 0
    assert torch.count_nonzero(plain[1]) > 0 and torch.count_nonzero(plain[2]) > 0
