"""Captioner A: adaptive attention with a visual sentinel (chapter 3, book/method.md §2).

Lu et al. (2017), "Knowing When to Look", between an attention LSTM and a language LSTM.
Per step t, with V_k = ReLU(W_p F_k + b_p) and ḡ = ReLU(W_a · mean_k F_k + b_a)::

    x1_t       = [h2_{t-1}; ḡ; E(w_t)]
    h1_t, c1_t = LSTM1(x1_t, h1_{t-1}, c1_{t-1})
    g_t        = σ(W_x x1_t + W_h h1_{t-1} + b)         sentinel gate, from h1_{t-1}
    s_t        = g_t ⊙ tanh(c1_t)                       visual sentinel
    z_t        = w_hᵀ tanh(W_v V + W_g h1_t)            (N,) location scores
    z_s        = w_hᵀ tanh(W_s s_t + W_g h1_t)          sentinel score
    α̂_t        = softmax([z_t; z_s]);  β_t = α̂_t[N]
    c_t        = Σ_k softmax(z_t)_k V_k
    ĉ_t        = β_t s_t + (1 − β_t) c_t
    h2_t, c2_t = LSTM2([ĉ_t; h1_t], h2_{t-1}, c2_{t-1})
    y_t        = W_o Dropout(ĉ_t + h2_t) + b_o

The context uses softmax(z_t), as the authors' code and Lu et al. do. Since
softmax(z_t)_k = α̂_tk / (1 − β_t), the mix gives ĉ_t = β_t s_t + Σ_k α̂_tk V_k: every
location enters with its joint weight α̂_tk, and α̂ plus β sum to 1. (Using α̂[:N] inside c_t
as well would count the factor 1 − β_t twice.) `step` returns alpha = α̂_t[:N] (joint, so
alpha.sum() + beta = 1) and beta = β_t; the weights inside c_t are alpha / (1 − beta).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from captionlib import ops
from captionlib.models.base import Captioner, StepOutput, check_hyperparameters
from captionlib.models.lstm import LSTMCell


class AdaptiveAttentionCaptioner(Captioner):
    """Captioner A (book/method.md §2); state = (h1, c1, h2, c2), each (B, hidden_dim).

    vocab_size: words incl. special tokens; feature_dim: C of the encoder grid (B, N, C);
    embed_dim, hidden_dim, attention_dim: widths of E(w), the LSTMs (and V, s, ĉ), and the
    attention MLP; dropout: before the output layer (0.5 in the paper).
    """

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        attention_dim: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(vocab_size, embed_dim)
        check_hyperparameters(
            {"feature_dim": feature_dim, "hidden_dim": hidden_dim, "attention_dim": attention_dim},
            {"dropout": dropout},
        )
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.attention_dim = attention_dim
        self.dropout_rate = dropout

        self.project = nn.Linear(feature_dim, hidden_dim)  # W_p, b_p
        self.global_project = nn.Linear(feature_dim, hidden_dim)  # W_a, b_a
        lstm1_in = 2 * hidden_dim + embed_dim
        self.lstm1 = LSTMCell(lstm1_in, hidden_dim)
        self.sentinel_x = nn.Linear(lstm1_in, hidden_dim)  # W_x, b
        self.sentinel_h = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W_h
        self.attend_v = nn.Linear(hidden_dim, attention_dim, bias=False)  # W_v
        self.attend_s = nn.Linear(hidden_dim, attention_dim, bias=False)  # W_s
        self.attend_h = nn.Linear(hidden_dim, attention_dim)  # W_g (its bias is shared)
        self.attend_w = nn.Linear(attention_dim, 1, bias=False)  # w_h
        self.lstm2 = LSTMCell(2 * hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)  # W_o, b_o

    def config(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "feature_dim": self.feature_dim,
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "attention_dim": self.attention_dim,
            "dropout": self.dropout_rate,
        }

    def prepare(self, features: Tensor) -> dict[str, Tensor]:
        """features (B, N, C) → {"values": V (B, N, H), "global": ḡ (B, H),
        "keys": W_v V (B, N, A)}."""
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"features must be (B, N, {self.feature_dim}), got {tuple(features.shape)}"
            )
        values = torch.relu(ops.linear(features, self.project))  # (B, N, H)
        pooled = ops.mean(features, dim=1)  # (B, C)
        global_feature = torch.relu(ops.linear(pooled, self.global_project))  # (B, H)
        keys = self.attend_v(values)  # (B, N, A); score path, α is constant under LRP
        return {"values": values, "global": global_feature, "keys": keys}

    def init_state(self, memory: dict[str, Tensor]) -> tuple[Tensor, ...]:
        values = memory["values"]
        zeros = values.new_zeros(values.shape[0], self.hidden_dim)  # (B, H)
        return (zeros, zeros, zeros, zeros)

    def step(
        self, word_embedding: Tensor, state: tuple[Tensor, ...], memory: dict[str, Tensor]
    ) -> StepOutput:
        """word_embedding (B, E) → logits (B, V), alpha = α̂[:N] (B, N), beta (B,)."""
        h1, c1, h2, c2 = state
        values, keys = memory["values"], memory["keys"]  # (B, N, H), (B, N, A)
        locations = values.shape[1]

        x1 = torch.cat([h2, memory["global"], word_embedding], dim=-1)  # (B, 2H + E)
        h1_next, c1_next = self.lstm1(x1, (h1, c1))
        sentinel_gate = torch.sigmoid(self.sentinel_x(x1) + self.sentinel_h(h1))  # h1_{t-1}
        sentinel = ops.gate(sentinel_gate, ops.tanh(c1_next))  # s_t (B, H)

        query = self.attend_h(h1_next)  # (B, A)
        z = self.attend_w(torch.tanh(keys + query.unsqueeze(1))).squeeze(-1)  # (B, N)
        z_s = self.attend_w(torch.tanh(self.attend_s(sentinel) + query))  # (B, 1)
        joint = ops.softmax(torch.cat([z, z_s], dim=-1))  # α̂ (B, N + 1)
        alpha, beta = joint[:, :locations], joint[:, locations]  # (B, N), (B,)
        weights = ops.softmax(z)  # softmax(z_t) = α / (1 − β), (B, N)
        context = ops.attend(weights.unsqueeze(1), values).squeeze(1)  # c_t (B, H)
        share = beta.unsqueeze(-1)  # (B, 1)
        mixed = ops.add(ops.gate(share, sentinel), ops.gate(1 - share, context))  # ĉ_t

        h2_next, c2_next = self.lstm2(torch.cat([mixed, h1_next], dim=-1), (h2, c2))
        logits = self.logits_from(mixed, h2_next)  # (B, V)
        return StepOutput(
            logits=logits,
            state=(h1_next, c1_next, h2_next, c2_next),
            alpha=alpha,
            beta=beta,
            readout=(mixed, h2_next),
        )
