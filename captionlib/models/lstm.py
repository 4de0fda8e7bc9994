"""An LSTM cell built from the LRP rule operations (chapter 3; explained in chapter 7).

`torch.nn.LSTMCell` runs as one fused kernel, so its gates cannot be treated as constants
and its pre-activation cannot get the ε-rule. This cell writes the same equations with the
operations of `captionlib.ops`::

    [i; f; g; o] = W [x; h_{t-1}] + b          one ε-linear layer (ops.linear)
    i, f, o      = σ(·)                        gates: constants under LRP
    g            = tanh(·)                     cell candidate (ops.tanh: identity)
    c_t          = f ⊙ c_{t-1} + i ⊙ g         ops.add of two ops.gate products
    h_t          = o ⊙ tanh(c_t)               ops.gate, ops.tanh

Outside `ops.lrp_mode()` this is an ordinary LSTM cell with ordinary gradients. Inside it,
relevance follows the cell-candidate path and the recurrent cell state ("signal-take-all",
book/method.md §5), with one ε-rule over the whole pre-activation as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captionlib import ops


class LSTMCell(nn.Module):
    """One LSTM step; gates ordered i, f, g, o in the pre-activation (as in PyTorch).

    input_size: width of x; hidden_size: width of h and c.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"input_size and hidden_size must be >= 1, got {input_size}, {hidden_size}"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.linear = nn.Linear(input_size + hidden_size, 4 * hidden_size)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """x (B, input_size), state (h, c) each (B, hidden_size) → (h_t, c_t)."""
        h, c = state
        pre = ops.linear(torch.cat([x, h], dim=-1), self.linear)  # (B, 4H)
        pre_i, pre_f, pre_g, pre_o = pre.chunk(4, dim=-1)  # each (B, H)
        i, f, o = torch.sigmoid(pre_i), torch.sigmoid(pre_f), torch.sigmoid(pre_o)
        g = ops.tanh(pre_g)
        c_next = ops.add(ops.gate(f, c), ops.gate(i, g))  # (B, H)
        h_next = ops.gate(o, ops.tanh(c_next))  # (B, H)
        return h_next, c_next
