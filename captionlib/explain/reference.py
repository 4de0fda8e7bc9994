"""The slow, explicit LRP reference for captioners A and B and their CNN (chapter 7).

Everything here is written out with plain tensor operations and no autograd: the forward
pass is recomputed from the model's parameters, and relevance is passed back one word at a
time, one time step at a time, one layer at a time, with the rules of book/method.md §5:

- linear layer z = W x + b: ε-rule R_i = Σ_j x_i w_ji / (z_j + ε·sign(z_j)) · R_j (the bias
  keeps its share); a sum z = a + b + …: the same rule with identity weights;
- tanh and ReLU: R_in = R_out;
- gated products (LSTM gates, sentinel gate, captioner B's σ gate, β and 1 − β): the gate
  is a constant, the signal takes all the relevance;
- attention read-out c = Σ_k α_k v_k: α constant, ε-rule in the values; nothing flows into
  queries, keys or scores;
- convolutions of the CNN: α1β0 without bias; ReLU passes; max-pool winner-take-all.

It is the specification the fast explainer (`captionlib.explain.lrp`, one batched backward
through the model's own forward) is tested against, and the code chapter 7 derives step by
step. It is slow on purpose: a Python loop over words and steps. The model must be in eval
mode (dropout off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.lstm import LSTMCell
from captionlib.models.multihead import MultiHeadCaptioner

# ---------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------


def divide(relevance: Tensor, z: Tensor, epsilon: float) -> Tensor:
    """relevance / (z + ε·sign(z)) with sign(0) = +1, and 0 where that denominator is 0."""
    denominator = z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
    safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where(denominator == 0, torch.zeros_like(relevance), relevance / safe)


def lrp_linear(x: Tensor, weight: Tensor, z: Tensor, relevance: Tensor, epsilon: float) -> Tensor:
    """ε-rule of z = W x + b: x (B, I), weight (O, I), z and relevance (B, O) → (B, I)."""
    return x * (divide(relevance, z, epsilon) @ weight)


def lrp_sum(terms: list[Tensor], relevance: Tensor, epsilon: float) -> list[Tensor]:
    """ε-rule of z = Σ terms: each term gets term / (z + ε sign z) · R."""
    total = torch.stack(terms).sum(0)
    share = divide(relevance, total, epsilon)
    return [term * share for term in terms]


def lrp_output(readout: Tensor, output: nn.Linear, word: Tensor, epsilon: float) -> Tensor:
    """Start: relevance = the logit y_k of `word` (B,); ε-rule into readout (B, D)."""
    weights = output.weight[word]  # (B, D): row k of W_o for every sample
    y = (readout * weights).sum(-1) + output.bias[word]  # (B,)
    return readout * weights * divide(y, y, epsilon).unsqueeze(-1)


# ---------------------------------------------------------------------------------------
# The LSTM cell
# ---------------------------------------------------------------------------------------


@dataclass
class LSTMStep:
    """One recomputed LSTM step (all (B, ·)): inputs, gates, candidate and new state."""

    x: Tensor
    h_prev: Tensor
    c_prev: Tensor
    i: Tensor
    f: Tensor
    o: Tensor
    pre_g: Tensor
    g: Tensor
    c: Tensor
    h: Tensor


def lstm_forward(cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> LSTMStep:
    """The cell's equations with its weights: [i; f; g; o] = W [x; h] + b, …"""
    pre = torch.cat([x, h], dim=-1) @ cell.linear.weight.T + cell.linear.bias  # (B, 4H)
    pre_i, pre_f, pre_g, pre_o = pre.chunk(4, dim=-1)
    i, f, o = torch.sigmoid(pre_i), torch.sigmoid(pre_f), torch.sigmoid(pre_o)
    g = torch.tanh(pre_g)
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    return LSTMStep(x, h, c, i, f, o, pre_g, g, c_next, h_next)


def lstm_relevance(
    cell: LSTMCell, step: LSTMStep, r_h: Tensor, r_c: Tensor, epsilon: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Relevance of h_t and (from the next step) c_t → (R(x), R(h_{t−1}), R(c_{t−1})).

    h = o ⊙ tanh(c): o constant, tanh identity, so c also collects R(h).
    c = f ⊙ c_{t−1} + i ⊙ g: ε-split between the two products; f and i constant.
    g = tanh(pre_g), pre_g = W_g [x; h_{t−1}] + b_g: identity, then the ε-rule.
    """
    hidden = cell.hidden_size
    r_c = r_c + r_h
    r_c_prev, r_g = lrp_sum([step.f * step.c_prev, step.i * step.g], r_c, epsilon)
    weight_g = cell.linear.weight[2 * hidden : 3 * hidden]  # rows of the cell candidate
    inputs = torch.cat([step.x, step.h_prev], dim=-1)
    r_inputs = lrp_linear(inputs, weight_g, step.pre_g, r_g, epsilon)
    width = step.x.shape[-1]
    return r_inputs[:, :width], r_inputs[:, width:], r_c_prev


# ---------------------------------------------------------------------------------------
# Captioner A: adaptive attention with a visual sentinel
# ---------------------------------------------------------------------------------------


@dataclass
class WordRelevance:
    """Reference relevance for one explained word t of B captions.

    features: (B, N, C) relevance of F; words: (B, T−1) relevance of each input word
    (0 after position t); logit: (B,) the explained logit (the initial relevance).
    """

    features: Tensor
    words: Tensor
    logit: Tensor


@dataclass
class _AdaptiveStep:
    lstm1: LSTMStep
    lstm2: LSTMStep
    sentinel: Tensor  # s_t (B, H)
    weights: Tensor  # softmax(z_t) (B, N)
    beta: Tensor  # (B, 1)
    context: Tensor  # c_t (B, H)
    mixed: Tensor  # ĉ_t (B, H)
    readout: Tensor  # ĉ_t + h2_t (B, H)


def _adaptive_forward(
    model: AdaptiveAttentionCaptioner, features: Tensor, caption_ids: Tensor
) -> tuple[dict[str, Tensor], list[_AdaptiveStep]]:
    """Recompute captioner A's forward (book/method.md §2) from its parameters."""
    pre_values = features @ model.project.weight.T + model.project.bias  # (B, N, H)
    values = torch.relu(pre_values)
    pooled = features.mean(1)  # (B, C)
    pre_global = pooled @ model.global_project.weight.T + model.global_project.bias
    global_feature = torch.relu(pre_global)  # ḡ (B, H)
    keys = values @ model.attend_v.weight.T  # W_v V (B, N, A)
    memory = {
        "pre_values": pre_values,
        "values": values,
        "pooled": pooled,
        "pre_global": pre_global,
        "global": global_feature,
    }
    zeros = features.new_zeros(features.shape[0], model.hidden_dim)
    h1, c1, h2, c2 = zeros, zeros, zeros, zeros
    steps = []
    w_h = model.attend_w.weight[0]  # (A,)
    for t in range(caption_ids.shape[1] - 1):
        word = model.embedding.weight[caption_ids[:, t]]  # (B, E)
        x1 = torch.cat([h2, global_feature, word], dim=-1)
        lstm1 = lstm_forward(model.lstm1, x1, h1, c1)
        gate = torch.sigmoid(
            x1 @ model.sentinel_x.weight.T + model.sentinel_x.bias + h1 @ model.sentinel_h.weight.T
        )
        sentinel = gate * torch.tanh(lstm1.c)
        query = lstm1.h @ model.attend_h.weight.T + model.attend_h.bias  # (B, A)
        z = torch.tanh(keys + query.unsqueeze(1)) @ w_h  # (B, N)
        z_s = torch.tanh(sentinel @ model.attend_s.weight.T + query) @ w_h  # (B,)
        joint = torch.softmax(torch.cat([z, z_s.unsqueeze(1)], dim=1), dim=1)
        beta = joint[:, -1:]  # (B, 1)
        weights = torch.softmax(z, dim=1)
        context = (weights.unsqueeze(-1) * values).sum(1)  # (B, H)
        mixed = beta * sentinel + (1 - beta) * context
        lstm2 = lstm_forward(model.lstm2, torch.cat([mixed, lstm1.h], dim=-1), h2, c2)
        steps.append(
            _AdaptiveStep(lstm1, lstm2, sentinel, weights, beta, context, mixed, mixed + lstm2.h)
        )
        h1, c1, h2, c2 = lstm1.h, lstm1.c, lstm2.h, lstm2.c
    return memory, steps


def adaptive_relevance(
    model: AdaptiveAttentionCaptioner,
    features: Tensor,
    caption_ids: Tensor,
    t: int,
    epsilon: float = 0.01,
) -> WordRelevance:
    """Explain word t + 1 (predicted at step t) of captioner A; features (B, N, C)."""
    memory, steps = _adaptive_forward(model, features, caption_ids)
    hidden = model.hidden_dim
    word = caption_ids[:, t + 1]
    last = steps[t]
    r_readout = lrp_output(last.readout, model.output, word, epsilon)
    r_mixed, r_h2 = lrp_sum([last.mixed, last.lstm2.h], r_readout, epsilon)
    zeros = torch.zeros_like(r_h2)
    r_c2, r_h1, r_c1 = zeros, zeros, zeros
    r_values = torch.zeros_like(memory["values"])
    r_global = zeros
    r_words = features.new_zeros(caption_ids.shape[0], caption_ids.shape[1] - 1)
    for s in range(t, -1, -1):
        step = steps[s]
        # language LSTM: input [ĉ_s; h1_s], recurrent h2_{s−1}, c2_{s−1}
        r_x2, r_h2_prev, r_c2 = lstm_relevance(model.lstm2, step.lstm2, r_h2, r_c2, epsilon)
        r_mixed = r_mixed + r_x2[:, :hidden]
        r_h1 = r_h1 + r_x2[:, hidden:]
        # ĉ = β s + (1 − β) c: ε-split, β constant
        r_sentinel, r_context = lrp_sum(
            [step.beta * step.sentinel, (1 - step.beta) * step.context], r_mixed, epsilon
        )
        # c = Σ_k softmax(z)_k V_k: weights constant, ε-rule in V
        share = divide(r_context, step.context, epsilon).unsqueeze(1)  # (B, 1, H)
        r_values = r_values + step.weights.unsqueeze(-1) * memory["values"] * share
        # s = g ⊙ tanh(c1): the sentinel's relevance goes to the cell state c1_s
        r_x1, r_h1, r_c1 = lstm_relevance(model.lstm1, step.lstm1, r_h1, r_c1 + r_sentinel, epsilon)
        # x1 = [h2_{s−1}; ḡ; E(w_s)]
        r_h2 = r_h2_prev + r_x1[:, :hidden]
        r_global = r_global + r_x1[:, hidden : 2 * hidden]
        r_words[:, s] = r_x1[:, 2 * hidden :].sum(-1)
        r_mixed = torch.zeros_like(r_mixed)
    # V = ReLU(W_p F + b_p): identity, then the ε-rule per location
    r_features = features * (divide(r_values, memory["pre_values"], epsilon) @ model.project.weight)
    # ḡ = ReLU(W_a mean_k F_k + b_a): identity, ε-rule, then the mean as a sum of F_k / N
    r_pooled = lrp_linear(
        memory["pooled"], model.global_project.weight, memory["pre_global"], r_global, epsilon
    )
    locations = features.shape[1]
    share = divide(r_pooled, memory["pooled"], epsilon).unsqueeze(1)  # (B, 1, C)
    r_features = r_features + features / locations * share
    logit = (last.readout * model.output.weight[word]).sum(-1) + model.output.bias[word]
    return WordRelevance(features=r_features, words=r_words, logit=logit)


# ---------------------------------------------------------------------------------------
# Captioner B: multi-head attention
# ---------------------------------------------------------------------------------------


@dataclass
class _MultiHeadStep:
    lstm: LSTMStep
    alpha: Tensor  # (B, M, N)
    read: Tensor  # per-head read-out (B, M, d)
    context: Tensor  # ctx_t (B, M·d)
    pre_attended: Tensor  # W_C ctx_t + b_C (B, H)
    attended: Tensor  # â_t (B, H)
    readout: Tensor  # â_t + h_t (B, H)


def _multihead_forward(
    model: MultiHeadCaptioner, features: Tensor, caption_ids: Tensor
) -> tuple[dict[str, Tensor], list[_MultiHeadStep]]:
    """Recompute captioner B's forward (book/method.md §3) from its parameters."""
    batch, locations, _ = features.shape
    heads, head_dim = model.heads, model.head_dim
    pre_values = features @ model.project.weight.T + model.project.bias  # (B, N, H)
    values = torch.relu(pre_values)
    global_feature = values.mean(1)  # ḡ (B, H)
    keys = values @ model.key.weight.T + model.key.bias  # (B, N, M·d)
    contents = values @ model.value.weight.T + model.value.bias  # U (B, N, M·d)
    memory = {"pre_values": pre_values, "values": values, "global": global_feature}
    memory["contents"] = contents
    keys_per_head = keys.view(batch, locations, heads, head_dim).transpose(1, 2)  # (B,M,N,d)
    contents_per_head = contents.view(batch, locations, heads, head_dim).transpose(1, 2)
    memory["contents_per_head"] = contents_per_head
    zeros = features.new_zeros(batch, model.hidden_dim)
    h, c = zeros, zeros
    steps = []
    for t in range(caption_ids.shape[1] - 1):
        word = model.embedding.weight[caption_ids[:, t]]  # (B, E)
        lstm = lstm_forward(model.lstm, torch.cat([word, global_feature], dim=-1), h, c)
        query = (lstm.h @ model.query.weight.T + model.query.bias).view(batch, heads, head_dim)
        scores = torch.einsum("bmd,bmnd->bmn", query, keys_per_head) / math.sqrt(head_dim)
        alpha = torch.softmax(scores, dim=-1)  # (B, M, N)
        read = torch.einsum("bmn,bmnd->bmd", alpha, contents_per_head)  # (B, M, d)
        context = read.reshape(batch, heads * head_dim)
        gate = torch.sigmoid(lstm.h @ model.gate.weight.T + model.gate.bias)
        pre_attended = context @ model.context.weight.T + model.context.bias
        attended = gate * pre_attended
        steps.append(
            _MultiHeadStep(lstm, alpha, read, context, pre_attended, attended, attended + lstm.h)
        )
        h, c = lstm.h, lstm.c
    return memory, steps


def multihead_relevance(
    model: MultiHeadCaptioner,
    features: Tensor,
    caption_ids: Tensor,
    t: int,
    epsilon: float = 0.01,
    head: int | None = None,
) -> WordRelevance:
    """Explain word t + 1 (predicted at step t) of captioner B; features (B, N, C).

    head: keep only this head's relevance at the attention read-out (the paper's per-head
    explanation); None explains all heads jointly.
    """
    memory, steps = _multihead_forward(model, features, caption_ids)
    batch, locations, _ = features.shape
    embed = model.embed_dim
    word = caption_ids[:, t + 1]
    last = steps[t]
    r_readout = lrp_output(last.readout, model.output, word, epsilon)
    r_attended, r_h = lrp_sum([last.attended, last.lstm.h], r_readout, epsilon)
    r_c = torch.zeros_like(r_h)
    r_contents = torch.zeros_like(memory["contents_per_head"])  # (B, M, N, d)
    r_global = torch.zeros_like(r_h)
    r_words = features.new_zeros(batch, caption_ids.shape[1] - 1)
    for s in range(t, -1, -1):
        step = steps[s]
        if s == t:
            # â = σ(W_G h + b_G) ⊙ (W_C ctx + b_C): gate constant, ε-rule into ctx
            r_context = lrp_linear(
                step.context, model.context.weight, step.pre_attended, r_attended, epsilon
            )
            r_read = r_context.view_as(step.read)  # (B, M, d)
            if head is not None:
                keep = torch.zeros(model.heads, 1, dtype=r_read.dtype)
                keep[head] = 1
                r_read = r_read * keep
            # read^m = Σ_k α^m_k U^m_k: α constant, ε-rule in U
            share = divide(r_read, step.read, epsilon).unsqueeze(2)  # (B, M, 1, d)
            r_contents = r_contents + (
                step.alpha.unsqueeze(-1) * memory["contents_per_head"] * share
            )
        # LSTM: input [E(w_s); ḡ], recurrent h_{s−1}, c_{s−1}
        r_x, r_h, r_c = lstm_relevance(model.lstm, step.lstm, r_h, r_c, epsilon)
        r_words[:, s] = r_x[:, :embed].sum(-1)
        r_global = r_global + r_x[:, embed:]
    # U = V W_U + b_U: ε-rule per location
    pre_contents = r_contents.transpose(1, 2).reshape(batch, locations, -1)  # (B, N, M·d)
    r_values = memory["values"] * (
        divide(pre_contents, memory["contents"], epsilon) @ model.value.weight
    )
    # ḡ = mean_k V_k: a sum of V_k / N, ε-rule
    share = divide(r_global, memory["global"], epsilon).unsqueeze(1)  # (B, 1, H)
    r_values = r_values + memory["values"] / locations * share
    # V = ReLU(W_p F + b_p): identity, then the ε-rule per location
    r_features = features * (divide(r_values, memory["pre_values"], epsilon) @ model.project.weight)
    logit = (last.readout * model.output.weight[word]).sum(-1) + model.output.bias[word]
    return WordRelevance(features=r_features, words=r_words, logit=logit)


# ---------------------------------------------------------------------------------------
# Every word, and the CNN
# ---------------------------------------------------------------------------------------


@dataclass
class ReferenceExplanation:
    """All words of B captions (K = T − 1): features (B, K, N, C), words (B, K, K),
    logits (B, K)."""

    features: Tensor
    words: Tensor
    logits: Tensor


@torch.no_grad()
def reference_explain(
    model: AdaptiveAttentionCaptioner | MultiHeadCaptioner,
    features: Tensor,
    caption_ids: Tensor,
    epsilon: float = 0.01,
    head: int | None = None,
) -> ReferenceExplanation:
    """Explain every word of every caption, one word at a time (the slow loop)."""
    if model.training:
        raise ValueError("the reference needs the model in eval mode (dropout off)")
    results = []
    for t in range(caption_ids.shape[1] - 1):
        if isinstance(model, AdaptiveAttentionCaptioner):
            if head is not None:
                raise ValueError("captioner A has no heads: head must be None")
            results.append(adaptive_relevance(model, features, caption_ids, t, epsilon))
        elif isinstance(model, MultiHeadCaptioner):
            results.append(multihead_relevance(model, features, caption_ids, t, epsilon, head))
        else:
            raise ValueError(f"no reference for {type(model).__name__}")
    return ReferenceExplanation(
        features=torch.stack([r.features for r in results], dim=1),
        words=torch.stack([r.words for r in results], dim=1),
        logits=torch.stack([r.logit for r in results], dim=1),
    )


def _conv_relevance(layer: nn.Conv2d, x: Tensor, relevance: Tensor, stabilizer: float) -> Tensor:
    """α1β0 without bias: R_i = Σ_j (x_i⁺ w_ji⁺ + x_i⁻ w_ji⁻) / (z⁺_j + stabilizer) R_j."""
    if layer.padding_mode != "zeros":
        raise ValueError(f"only zero padding is supported, got {layer.padding_mode!r}")
    options = {
        "stride": layer.stride,
        "padding": layer.padding,
        "dilation": layer.dilation,
        "groups": layer.groups,
    }
    w_pos, w_neg = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    z_plus = functional.conv2d(x_pos, w_pos, **options) + functional.conv2d(x_neg, w_neg, **options)
    share = relevance / (z_plus + stabilizer)
    # the transpose of the convolution maps the share back onto the input positions
    out_h, out_w = share.shape[-2:]
    expected = [
        (size - 1) * s - 2 * p + d * (k - 1) + 1
        for size, s, p, d, k in zip(
            (out_h, out_w),
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.kernel_size,
            strict=True,
        )
    ]
    extra = (x.shape[-2] - expected[0], x.shape[-1] - expected[1])

    def back(weight: Tensor) -> Tensor:
        return functional.conv_transpose2d(share, weight, output_padding=extra, **options)

    return x_pos * back(w_pos) + x_neg * back(w_neg)


def _maxpool_relevance(layer: nn.MaxPool2d, x: Tensor, relevance: Tensor) -> Tensor:
    """Winner-take-all: each window's relevance goes to the location of its maximum."""
    _, indices = functional.max_pool2d(
        x,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        ceil_mode=layer.ceil_mode,
        return_indices=True,
    )
    flat = torch.zeros_like(x).flatten(2)  # (B, C, H·W)
    flat.scatter_add_(2, indices.flatten(2), relevance.flatten(2))
    return flat.view_as(x)


@torch.no_grad()
def reference_cnn_relevance(
    features_module: nn.Sequential, images: Tensor, relevance: Tensor, stabilizer: float = 1e-6
) -> Tensor:
    """The paper's CNN rules layer by layer: images (B, 3, H, W), relevance at the output
    (B, C, h, w) → pixel relevance (B, 3, H, W). Conv2d, ReLU and MaxPool2d only."""
    inputs = []
    x = images
    for layer in features_module:
        if not isinstance(layer, (nn.Conv2d, nn.ReLU, nn.MaxPool2d)):
            raise ValueError(f"the reference handles Conv2d, ReLU and MaxPool2d, got {layer}")
        inputs.append(x)
        x = layer(x)
    for layer, x in zip(reversed(features_module), reversed(inputs), strict=True):
        if isinstance(layer, nn.Conv2d):
            relevance = _conv_relevance(layer, x, relevance, stabilizer)
        elif isinstance(layer, nn.MaxPool2d):
            relevance = _maxpool_relevance(layer, x, relevance)
        # ReLU: relevance passes unchanged
    return relevance
