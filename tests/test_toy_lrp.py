"""Chapter 6's explicit, layer-by-layer LRP against autograd and zennit (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.composites import LayerMapComposite
from zennit.rules import AlphaBeta, ZPlus

from captionlib.explain import toy


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _inputs(batch: int, features: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, features, dtype=torch.float64, generator=generator)


# --- explicit ε-LRP == gradient × input in lrp_mode ----------------------------------------------


@pytest.mark.parametrize("epsilon", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("sizes", [[4, 3, 2], [6, 8, 5, 3]])
def test_naive_epsilon_lrp_equals_autograd(sizes: list[int], epsilon: float, gen) -> None:
    model = toy.random_mlp(sizes, seed=1)
    x = _inputs(7, sizes[0], gen)
    target = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    comparison = toy.compare_naive_autograd(model, x, target, epsilon)
    assert comparison.max_abs_difference < 1e-10
    torch.testing.assert_close(comparison.naive, comparison.autograd, rtol=0, atol=1e-10)
    assert comparison.naive.abs().max() > 1e-3  # a real explanation, not two zero tensors


def test_naive_epsilon_rule_for_one_layer_by_hand() -> None:
    # one unit: z = 1·2 + 3·(−1) + 0.5 = −0.5; R_out = −0.5 (the logit), ε = 0 → share = 1
    layer_in = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    weight = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    bias = torch.tensor([0.5], dtype=torch.float64)
    relevance = torch.tensor([[-0.5]], dtype=torch.float64)
    inputs, absorbed = toy.epsilon_rule(layer_in, weight, bias, relevance, epsilon=0.0)
    torch.testing.assert_close(inputs, torch.tensor([[2.0, -3.0]], dtype=torch.float64))
    torch.testing.assert_close(absorbed, torch.tensor([[0.5]], dtype=torch.float64))
    # ε = 0.5: denominator −0.5 − 0.5 = −1, so every share halves and ε takes the rest
    inputs, absorbed = toy.epsilon_rule(layer_in, weight, bias, relevance, epsilon=0.5)
    torch.testing.assert_close(inputs, torch.tensor([[1.0, -1.5]], dtype=torch.float64))
    torch.testing.assert_close(absorbed, torch.tensor([[0.25]], dtype=torch.float64))


def test_worked_example_numbers_of_chapter_6() -> None:
    model, x = toy.worked_example()
    naive = toy.lrp_naive(model, x, target=1, epsilon=0.0)
    torch.testing.assert_close(naive.logits, torch.tensor([[-0.5, 4.0]], dtype=torch.float64))
    torch.testing.assert_close(naive.layers[1], torch.tensor([[1.0, 2.5]], dtype=torch.float64))
    torch.testing.assert_close(naive.input, torch.tensor([[3.0, 0.0, -0.5]], dtype=torch.float64))
    assert [float(b.sum()) for b in naive.biases] == pytest.approx([1.0, 0.5])
    # ε = 0.5: the last denominator is 4 + 0.5, so R(a) = (1, 2.5) · 4 / 4.5
    half = toy.lrp_naive(model, x, target=1, epsilon=0.5)
    torch.testing.assert_close(half.layers[1], torch.tensor([[8 / 9, 20 / 9]], dtype=torch.float64))


# --- conservation, bias and ε --------------------------------------------------------------------


def test_conservation_without_bias_at_zero_epsilon(gen) -> None:
    model = toy.random_mlp([5, 6, 4, 3], seed=2, bias=False)
    x = _inputs(6, 5, gen)
    naive = toy.lrp_naive(model, x, target=2, epsilon=0.0)
    explained = naive.logits[:, 2]
    assert explained.abs().min() > 1e-3
    for layer_relevance in naive.layers:  # every layer carries the whole logit
        torch.testing.assert_close(layer_relevance.sum(1), explained, rtol=1e-12, atol=1e-12)
    fast = toy.lrp_autograd(model, x, target=2, epsilon=0.0)
    torch.testing.assert_close(fast.sum(1), explained, rtol=1e-12, atol=1e-12)


def test_biases_absorb_exactly_their_share(gen) -> None:
    model = toy.random_mlp([5, 6, 4, 3], seed=3)
    x = _inputs(6, 5, gen)
    naive = toy.lrp_naive(model, x, target=0, epsilon=0.0)
    for below, above, absorbed in zip(
        naive.layers[:-1], naive.layers[1:], naive.biases, strict=True
    ):
        # layer by layer: Σ_i R_i + Σ_j b_j R_j / z_j = Σ_j R_j (ReLU passes relevance)
        torch.testing.assert_close(below.sum(1) + absorbed.sum(1), above.sum(1))
    total_absorbed = sum(absorbed.sum(1) for absorbed in naive.biases)
    torch.testing.assert_close(naive.input.sum(1) + total_absorbed, naive.logits[:, 0])
    assert total_absorbed.abs().max() > 1e-3  # the biases did take relevance


def test_bias_share_of_the_last_layer_matches_the_formula(gen) -> None:
    model = toy.random_mlp([3, 4, 2], seed=4)
    x = _inputs(5, 3, gen)
    naive = toy.lrp_naive(model, x, target=1, epsilon=0.0)
    last = model.layers[-1]
    z = naive.logits[:, 1]
    expected = torch.zeros(5, 2, dtype=torch.float64)
    expected[:, 1] = last.bias.detach()[1] * z / z  # b_j / z_j · R_j with R_j = z_j
    torch.testing.assert_close(naive.biases[-1], expected)


def test_positive_epsilon_absorbs_relevance(gen) -> None:
    # one linear unit: Σ_i R_i = z · z / (z + ε sign z), smaller in magnitude as ε grows
    model = toy.random_mlp([5, 1], seed=5, bias=False)
    x = _inputs(8, 5, gen)
    totals = [toy.lrp_naive(model, x, 0, epsilon=e).input.sum(1) for e in (0.0, 0.1, 1.0)]
    z = toy.lrp_naive(model, x, 0, epsilon=0.0).logits[:, 0]
    torch.testing.assert_close(totals[0], z)
    torch.testing.assert_close(totals[2], z * z / (z + torch.sign(z)))
    assert bool((totals[1].abs() < totals[0].abs()).all())
    assert bool((totals[2].abs() < totals[1].abs()).all())


def test_zero_bias_helper_and_bad_arguments() -> None:
    model = toy.random_mlp([3, 4, 2], seed=6).zero_biases()
    assert all(float(layer.bias.detach().abs().sum()) == 0 for layer in model.layers)
    x = torch.ones(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="rule must be one of"):
        toy.lrp_naive(model, x, 0, rule="gamma")
    with pytest.raises(ValueError, match="target 2 out of range"):
        toy.lrp_naive(model, x, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        model(torch.ones(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        toy.lrp_naive(model, x, 0, rule="alpha_beta", alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="sizes must list"):
        toy.ToyMLP([3])


# --- α-β explicit == zennit ----------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
def test_alpha1beta0_linear_layer_equals_zennit(use_bias: bool, gen) -> None:
    layer = nn.Linear(6, 4).double()
    x = _inputs(3, 6, gen)
    relevance = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    explicit, _ = toy.alpha_beta_rule(
        x, layer.weight.detach(), layer.bias.detach() if use_bias else None, relevance
    )
    rule = AlphaBeta(alpha=1.0, beta=0.0, zero_params=None if use_bias else ["bias"])
    ours = toy.zennit_layer_relevance(layer, x, relevance, rule)
    torch.testing.assert_close(explicit, ours, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("alpha", "beta", "use_bias", "stride"),
    [(1.0, 0.0, False, 1), (1.0, 0.0, True, 2), (2.0, 1.0, True, 1)],
)
def test_alpha_beta_conv_equals_zennit(alpha, beta, use_bias, stride, gen) -> None:
    conv = nn.Conv2d(3, 5, kernel_size=3, padding=1, stride=stride).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, generator=gen)  # signed, like an image
    with torch.no_grad():
        relevance = torch.randn(conv(x).shape, dtype=torch.float64, generator=gen)
    explicit = toy.alpha_beta_conv2d(conv, x, relevance, alpha, beta, use_bias=use_bias)
    rule = AlphaBeta(alpha=alpha, beta=beta, zero_params=None if use_bias else ["bias"])
    torch.testing.assert_close(
        explicit, toy.zennit_layer_relevance(conv, x, relevance, rule), rtol=1e-10, atol=1e-10
    )
    if alpha == 1.0:  # α1β0 is zennit's ZPlus
        zplus = ZPlus(zero_params=None if use_bias else ["bias"])
        torch.testing.assert_close(explicit, toy.zennit_layer_relevance(conv, x, relevance, zplus))


def test_alpha1beta0_conv_conserves_without_bias(gen) -> None:
    conv = nn.Conv2d(2, 3, kernel_size=3, padding=1).double()
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64, generator=gen)  # x ≥ 0: every z⁺ > 0
    relevance = torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=gen)
    explicit = toy.alpha_beta_conv2d(conv, x, relevance, use_bias=False, stabilizer=1e-12)
    torch.testing.assert_close(explicit.sum(), relevance.sum(), rtol=1e-9, atol=0)
    assert bool((explicit >= 0).all())  # α1β0: positive relevance stays positive


def test_whole_mlp_alpha_beta_equals_zennit_composite(gen) -> None:
    model = toy.random_mlp([5, 7, 3], seed=7)
    x = _inputs(4, 5, gen)
    for alpha, beta in [(1.0, 0.0), (2.0, 1.0)]:
        naive = toy.lrp_naive(model, x, 2, rule="alpha_beta", alpha=alpha, beta=beta)
        composite = LayerMapComposite(layer_map=[(nn.Linear, AlphaBeta(alpha=alpha, beta=beta))])
        ours = toy.zennit_relevance(model, x, 2, composite)
        torch.testing.assert_close(naive.input, ours, rtol=1e-10, atol=1e-10)


def test_alpha1beta0_composite_on_tiny_cnn_is_positive_and_conserves() -> None:
    torch.manual_seed(0)
    model = toy.TinyCNN(classes=3, channels=(4, 6)).double()
    with torch.no_grad():  # positive head: every logit > 0 on any image
        model.classifier.weight.abs_()
        model.classifier.bias.abs_()
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    logits = model(images).detach()
    target = torch.tensor([0, 2])
    relevance = toy.zennit_relevance(model, images, target, toy.alpha1beta0_composite())
    assert relevance.shape == images.shape
    # without biases α1β0 hands all of a unit's relevance to its positive contributions
    # (ReLU passes, the max-pools route to the maximum): the logit reaches the pixels, ≥ 0,
    # up to the stabiliser 1e-6 added to every z⁺
    torch.testing.assert_close(
        relevance.sum(dim=(1, 2, 3)), logits[[0, 1], target], rtol=1e-4, atol=0
    )
    assert bool((relevance >= 0).all())
    assert int((relevance > 0).sum()) > 10
