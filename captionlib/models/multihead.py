"""Captioner B: multi-head dot-product attention (chapter 4, book/method.md §3).

A single LSTM queries the projected features with H heads and a gated linear unit mixes
the context with the hidden state (much simpler than AoANet: no refiner, no layer norm)::

    V        = ReLU(W_p F + b_p);  ḡ = mean_k V_k
    h_t, c_t = LSTM([E(w_t); ḡ], h_{t-1}, c_{t-1})
    K = V W_K + b_K;  U = V W_U + b_U;  q_t = W_q h_t + b_q
    α_t^m    = softmax(q_t^m K^mᵀ / √d_k)               per head m (dropout in training)
    ctx_t    = concat_m Σ_k α_tk^m U_k^m
    â_t      = σ(W_G h_t + b_G) ⊙ (W_C ctx_t + b_C)
    y_t      = W_o Dropout(â_t + h_t) + b_o

`step` returns alpha (B, H, N): the weights before attention dropout, each row sums to 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from captionlib import ops
from captionlib.models.base import Captioner, StepOutput, check_hyperparameters
from captionlib.models.lstm import LSTMCell


class MultiHeadCaptioner(Captioner):
    """Captioner B (book/method.md §3); state = (h, c), each (B, hidden_dim).

    vocab_size: words incl. special tokens; feature_dim: C of the encoder grid (B, N, C);
    embed_dim, hidden_dim: widths of E(w) and of the LSTM (and V, â); heads, head_dim: the
    number of heads and d_k (the paper: 8 × 64); dropout: before the output layer;
    attention_dropout: on the attention weights in training.
    """

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        heads: int = 8,
        head_dim: int = 32,
        dropout: float = 0.3,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__(vocab_size, embed_dim)
        check_hyperparameters(
            {
                "feature_dim": feature_dim,
                "hidden_dim": hidden_dim,
                "heads": heads,
                "head_dim": head_dim,
            },
            {"dropout": dropout, "attention_dropout": attention_dropout},
        )
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.heads = heads
        self.head_dim = head_dim
        self.dropout_rate = dropout
        self.attention_dropout_rate = attention_dropout

        width = heads * head_dim
        self.project = nn.Linear(feature_dim, hidden_dim)  # W_p, b_p
        self.lstm = LSTMCell(embed_dim + hidden_dim, hidden_dim)
        self.key = nn.Linear(hidden_dim, width)  # W_K, b_K
        self.value = nn.Linear(hidden_dim, width)  # W_U, b_U
        self.query = nn.Linear(hidden_dim, width)  # W_q, b_q
        self.gate = nn.Linear(hidden_dim, hidden_dim)  # W_G, b_G
        self.context = nn.Linear(width, hidden_dim)  # W_C, b_C
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)  # W_o, b_o

    def config(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "feature_dim": self.feature_dim,
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "heads": self.heads,
            "head_dim": self.head_dim,
            "dropout": self.dropout_rate,
            "attention_dropout": self.attention_dropout_rate,
        }

    def _split_heads(self, x: Tensor) -> Tensor:
        """(B, L, heads · head_dim) → (B, heads, L, head_dim)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def prepare(self, features: Tensor) -> dict[str, Tensor]:
        """features (B, N, C) → {"values": V (B, N, H), "global": ḡ (B, H),
        "keys": K (B, heads, N, d_k), "contents": U (B, heads, N, d_k)}."""
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"features must be (B, N, {self.feature_dim}), got {tuple(features.shape)}"
            )
        values = torch.relu(ops.linear(features, self.project))  # (B, N, H)
        global_feature = ops.mean(values, dim=1)  # (B, H)
        keys = self._split_heads(ops.linear(values, self.key))  # (B, heads, N, d_k)
        contents = self._split_heads(ops.linear(values, self.value))  # (B, heads, N, d_k)
        return {"values": values, "global": global_feature, "keys": keys, "contents": contents}

    def init_state(self, memory: dict[str, Tensor]) -> tuple[Tensor, ...]:
        values = memory["values"]
        zeros = values.new_zeros(values.shape[0], self.hidden_dim)  # (B, H)
        return (zeros, zeros)

    def step(
        self, word_embedding: Tensor, state: tuple[Tensor, ...], memory: dict[str, Tensor]
    ) -> StepOutput:
        """word_embedding (B, E) → logits (B, V), alpha (B, heads, N), beta None."""
        h, c = state
        batch = word_embedding.shape[0]
        x = torch.cat([word_embedding, memory["global"]], dim=-1)  # (B, E + H)
        h_next, c_next = self.lstm(x, (h, c))

        query = ops.linear(h_next, self.query).view(batch, self.heads, 1, self.head_dim)
        scores = ops.scores(query, memory["keys"], 1.0 / math.sqrt(self.head_dim))
        alpha = ops.softmax(scores)  # (B, heads, 1, N)
        read = ops.attend(self.attention_dropout(alpha), memory["contents"])  # (B, heads, 1, d_k)
        per_head = ops.head_select(read.squeeze(2), head_dim=1)  # (B, heads, d_k)
        context = per_head.reshape(batch, self.heads * self.head_dim)  # ctx_t
        gate = torch.sigmoid(self.gate(h_next))  # (B, H)
        attended = ops.gate(gate, ops.linear(context, self.context))  # â_t (B, H)
        logits = self.logits_from(attended, h_next)  # (B, V)
        return StepOutput(
            logits=logits,
            state=(h_next, c_next),
            alpha=alpha.squeeze(2),
            beta=None,
            readout=(attended, h_next),
        )
