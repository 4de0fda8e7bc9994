"""Captioners A and B (book/method.md §2–3): shapes, causality, α, step contract, LRP wiring."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from captionlib import ops
from captionlib.models import (
    AdaptiveAttentionCaptioner,
    Captioner,
    LSTMCell,
    MultiHeadCaptioner,
)

torch.set_num_threads(1)

VOCAB, FEATURES, LOCATIONS, BATCH, LENGTH = 13, 6, 5, 3, 7


def make_model(kind: str, dropout: float = 0.0) -> Captioner:
    torch.manual_seed(0)
    if kind == "adaptive":
        model: Captioner = AdaptiveAttentionCaptioner(
            VOCAB, FEATURES, embed_dim=5, hidden_dim=8, attention_dim=7, dropout=dropout
        )
    else:
        model = MultiHeadCaptioner(
            VOCAB,
            FEATURES,
            embed_dim=5,
            hidden_dim=8,
            heads=2,
            head_dim=3,
            dropout=dropout,
            attention_dropout=dropout,
        )
    return model.double().eval()


def make_inputs() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    features = torch.rand(BATCH, LOCATIONS, FEATURES, generator=generator, dtype=torch.float64)
    caption_ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=generator)
    return features, caption_ids


KINDS = ["adaptive", "multihead"]


@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes(kind: str) -> None:
    model = make_model(kind)
    features, caption_ids = make_inputs()
    out = model(features, caption_ids)
    assert out.logits.shape == (BATCH, LENGTH - 1, VOCAB)
    if kind == "adaptive":
        assert out.alpha.shape == (BATCH, LENGTH - 1, LOCATIONS)
        assert out.beta is not None and out.beta.shape == (BATCH, LENGTH - 1)
    else:
        assert out.alpha.shape == (BATCH, LENGTH - 1, 2, LOCATIONS)
        assert out.beta is None
    assert out.readout is not None
    assert [r.shape for r in out.readout] == [(BATCH, LENGTH - 1, 8)] * 2
    torch.testing.assert_close(model.logits_from(*out.readout), out.logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_trailing_tokens_do_not_change_earlier_logits(kind: str) -> None:
    model = make_model(kind)
    features, caption_ids = make_inputs()
    short = model(features, caption_ids[:, :4]).logits  # (B, 3, V)
    padded = caption_ids.clone()
    padded[:, 4:] = 0  # different trailing tokens (e.g. padding)
    for ids in (caption_ids, padded):
        full = model(features, ids).logits
        torch.testing.assert_close(full[:, :3], short, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_weights_sum_to_one(kind: str) -> None:
    model = make_model(kind)
    out = model(*make_inputs())
    assert (out.alpha >= 0).all()
    total = out.alpha.sum(-1)
    if kind == "adaptive":
        assert out.beta is not None and ((out.beta > 0) & (out.beta < 1)).all()
        total = total + out.beta  # α̂ over N locations + sentinel
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_equals_manual_stepping(kind: str) -> None:
    model = make_model(kind)
    features, caption_ids = make_inputs()
    out = model(features, caption_ids)
    memory = model.prepare(features)
    state = model.init_state(memory)
    for t in range(LENGTH - 1):
        step = model.step(model.embedding(caption_ids[:, t]), state, memory)
        state = step.state
        torch.testing.assert_close(step.logits, out.logits[:, t], rtol=0, atol=0)
        torch.testing.assert_close(step.alpha, out.alpha[:, t], rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_explicit_embeddings_replace_the_lookup(kind: str) -> None:
    model = make_model(kind)
    features, caption_ids = make_inputs()
    embeddings = model.embedding(caption_ids[:, :-1]).detach()
    torch.testing.assert_close(
        model(features, caption_ids, embeddings).logits, model(features, caption_ids).logits
    )
    changed = embeddings.clone()
    changed[:, 2] += 1.0
    moved = model(features, caption_ids, changed).logits
    assert torch.equal(moved[:, :2], model(features, caption_ids).logits[:, :2])
    assert not torch.allclose(moved[:, 2:], model(features, caption_ids).logits[:, 2:])
    with pytest.raises(ValueError, match="embeddings"):
        model(features, caption_ids, embeddings[:, :-1])


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise(kind: str) -> None:
    model = make_model(kind)
    features, caption_ids = make_inputs()
    with pytest.raises(ValueError, match="features"):
        model(features[..., :-1], caption_ids)
    with pytest.raises(ValueError, match="caption_ids"):
        model(features, caption_ids[:, :1])
    with pytest.raises(ValueError, match="batch"):
        model(features[:2], caption_ids)


@pytest.mark.parametrize("kind", KINDS)
def test_lrp_mode_keeps_forward_values(kind: str) -> None:
    model = make_model(kind)
    features, caption_ids = make_inputs()
    plain = model(features, caption_ids)
    for attention in ops.ATTENTION_RULES:
        with ops.lrp_mode(epsilon=0.01, attention=attention, head=0):
            explained = model(features, caption_ids)
        assert torch.equal(explained.logits, plain.logits)
        assert torch.equal(explained.alpha, plain.alpha)


def relevance_total(model: Captioner, explain: bool, t: int = 4, word: int = 3) -> Tensor:
    """Σ input × gradient over features and word embeddings for logit y_t[word] of image 0."""
    features, caption_ids = make_inputs()
    features = features.clone().requires_grad_(True)
    embeddings = model.embedding(caption_ids[:, :-1]).detach().requires_grad_(True)
    with ops.lrp_mode(epsilon=0.0) if explain else torch.enable_grad():
        logits = model(features, caption_ids, embeddings).logits
    logits[0, t, word].backward()
    assert features.grad is not None and embeddings.grad is not None
    total = (features * features.grad).sum() + (embeddings * embeddings.grad).sum()
    return torch.stack([total.detach(), logits[0, t, word].detach()])


@pytest.mark.parametrize("kind", KINDS)
def test_relevance_is_conserved_in_lrp_mode(kind: str) -> None:
    """Biases zeroed, ε = 0: input × gradient sums to the explained logit only if every
    operation on the relevance path is an LRP rule (book/method.md §5)."""
    model = make_model(kind)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
    total, logit = relevance_total(model, explain=True)
    assert abs(float(logit)) > 1e-3
    torch.testing.assert_close(total, logit, rtol=1e-9, atol=1e-12)
    plain_total, _ = relevance_total(model, explain=False)
    assert not torch.isclose(plain_total, logit, rtol=1e-3)


def test_head_select_discards_other_heads() -> None:
    model = make_model("multihead")
    features, caption_ids = make_inputs()
    memory = model.prepare(features)
    contents = memory["contents"].detach().requires_grad_(True)  # (B, heads, N, d_k)
    memory["contents"] = contents
    with ops.lrp_mode(head=1):
        step = model.step(model.embedding(caption_ids[:, 0]), model.init_state(memory), memory)
    step.logits[:, 2].sum().backward()
    assert contents.grad is not None
    assert torch.count_nonzero(contents.grad[:, 0]) == 0
    assert torch.count_nonzero(contents.grad[:, 1]) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_only_in_training(kind: str) -> None:
    model = make_model(kind, dropout=0.5)
    features, caption_ids = make_inputs()
    first, second = model(features, caption_ids).logits, model(features, caption_ids).logits
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(5)
    noisy = model(features, caption_ids).logits
    assert not torch.allclose(noisy, first)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind: str) -> None:
    model = make_model(kind, dropout=0.25)
    config = json.loads(json.dumps(model.config()))
    rebuilt = type(model).from_config(config).double().eval()
    rebuilt.load_state_dict(model.state_dict())
    features, caption_ids = make_inputs()
    assert torch.equal(rebuilt(features, caption_ids).logits, model(features, caption_ids).logits)


def reference_lstm(cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Textbook LSTM equations from the cell's weights (gate order i, f, g, o)."""
    pre = torch.cat([x, h], -1) @ cell.linear.weight.T + cell.linear.bias
    i, f, g, o = pre.chunk(4, -1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


def test_lstm_cell_matches_torch_lstm_cell() -> None:
    torch.manual_seed(0)
    cell = LSTMCell(4, 3).double()
    reference = torch.nn.LSTMCell(4, 3).double()
    with torch.no_grad():
        reference.weight_ih.copy_(cell.linear.weight[:, :4])
        reference.weight_hh.copy_(cell.linear.weight[:, 4:])
        reference.bias_ih.copy_(cell.linear.bias)
        reference.bias_hh.zero_()
    x = torch.randn(2, 4, dtype=torch.float64)
    h, c = torch.randn(2, 2, 3, dtype=torch.float64)
    ours = cell(x, (h, c))
    theirs = reference(x, (h, c))
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])


def adaptive_reference_step(
    model: AdaptiveAttentionCaptioner,
    features: Tensor,
    word: Tensor,
    state: tuple[Tensor, ...],
    sentinel_query: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """book/method.md §2 written out from the weights; sentinel gate from h1_{t-1} or h1_t."""
    h1, c1, h2, c2 = state
    values = torch.relu(features @ model.project.weight.T + model.project.bias)
    glob = torch.relu(features.mean(1) @ model.global_project.weight.T + model.global_project.bias)
    x1 = torch.cat([h2, glob, word], -1)
    h1n, c1n = reference_lstm(model.lstm1, x1, h1, c1)
    gate_h = h1 if sentinel_query == "previous" else h1n
    g = torch.sigmoid(model.sentinel_x(x1) + gate_h @ model.sentinel_h.weight.T)
    s = g * torch.tanh(c1n)
    wg = h1n @ model.attend_h.weight.T + model.attend_h.bias
    z = torch.tanh(values @ model.attend_v.weight.T + wg[:, None]) @ model.attend_w.weight[0]
    z_s = torch.tanh(s @ model.attend_s.weight.T + wg) @ model.attend_w.weight[0]
    joint = torch.softmax(torch.cat([z, z_s[:, None]], -1), -1)
    beta = joint[:, -1:]
    context = (torch.softmax(z, -1)[:, :, None] * values).sum(1)
    mixed = beta * s + (1 - beta) * context
    h2n, _ = reference_lstm(model.lstm2, torch.cat([mixed, h1n], -1), h2, c2)
    logits = (mixed + h2n) @ model.output.weight.T + model.output.bias
    return logits, joint[:, :-1], beta[:, 0]


def test_adaptive_step_matches_paper_equations_with_gate_from_previous_h1() -> None:
    model = make_model("adaptive")
    features, caption_ids = make_inputs()
    generator = torch.Generator().manual_seed(3)
    state = tuple(torch.randn(BATCH, 8, generator=generator, dtype=torch.float64) for _ in range(4))
    word = model.embedding(caption_ids[:, 0])
    step = model.step(word, state, model.prepare(features))
    logits, alpha, beta = adaptive_reference_step(model, features, word, state, "previous")
    torch.testing.assert_close(step.logits, logits)
    torch.testing.assert_close(step.alpha, alpha)
    torch.testing.assert_close(step.beta, beta)
    _, _, wrong_beta = adaptive_reference_step(model, features, word, state, "current")
    assert not torch.allclose(step.beta, wrong_beta)  # the authors' fine-tuning bug differs


def test_multihead_step_matches_paper_equations() -> None:
    model = make_model("multihead")
    assert isinstance(model, MultiHeadCaptioner)
    features, caption_ids = make_inputs()
    generator = torch.Generator().manual_seed(3)
    state = tuple(torch.randn(BATCH, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    word = model.embedding(caption_ids[:, 0])
    step = model.step(word, state, model.prepare(features))

    values = torch.relu(features @ model.project.weight.T + model.project.bias)  # (B, N, 8)
    h, _ = reference_lstm(model.lstm, torch.cat([word, values.mean(1)], -1), *state)
    keys = values @ model.key.weight.T + model.key.bias  # (B, N, 6)
    contents = values @ model.value.weight.T + model.value.bias
    query = h @ model.query.weight.T + model.query.bias  # (B, 6)
    heads = []
    alphas = []
    for m in range(2):
        part = slice(3 * m, 3 * m + 3)
        alpha = torch.softmax((keys[..., part] @ query[:, part, None])[..., 0] / 3**0.5, -1)
        alphas.append(alpha)
        heads.append((alpha[..., None] * contents[..., part]).sum(1))
    context = torch.cat(heads, -1) @ model.context.weight.T + model.context.bias
    attended = torch.sigmoid(h @ model.gate.weight.T + model.gate.bias) * context
    logits = (attended + h) @ model.output.weight.T + model.output.bias
    torch.testing.assert_close(step.logits, logits)
    torch.testing.assert_close(step.alpha, torch.stack(alphas, 1))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        AdaptiveAttentionCaptioner(1, 4)
    with pytest.raises(ValueError, match="dropout"):
        AdaptiveAttentionCaptioner(10, 4, dropout=1.0)
    with pytest.raises(ValueError, match="heads"):
        MultiHeadCaptioner(10, 4, heads=0)
