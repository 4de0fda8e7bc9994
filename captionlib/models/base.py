"""The captioner contract shared by training, decoding and explanation (chapter 3).

A captioner is split into three calls so that one decoder (`captionlib.models.decoding`),
one trainer and one explainer serve every model:

- `prepare(features)`: per-image work done once (projected features, keys, the global
  feature), returned as a dict of batch-first tensors called the *memory*;
- `init_state(memory)`: the recurrent state before the first word, a tuple of batch-first
  tensors (so beam search can reorder it along dim 0);
- `step(word_embedding, state, memory)`: one word in, logits for the next word out, with
  the attention weights α (and the sentinel share β for captioner A).

`forward` is teacher forcing written once over `step`, so decoding and training run the
same computation. Every operation on the relevance path uses `captionlib.ops`,
so inside `ops.lrp_mode()` the relevance of any input is input × gradient.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captionlib import ops


@dataclass
class StepOutput:
    """What one decoding step returns.

    - logits: (B, V) scores of the next word (before softmax).
    - state: the new recurrent state, a tuple of (B, ...) tensors.
    - alpha: attention weights over the N locations, (B, N) for captioner A, (B, H, N) for
      captioner B (one row per head).
    - beta: (B,) share of the visual sentinel (captioner A), or None.
    - readout: the two terms whose sum the output layer maps to the logits, (ĉ_t, h2_t) for
      captioner A and (â_t, h_t) for captioner B, each (B, D); LRP-inference fine-tuning
      re-weights them (book/method.md §8). None for models without this structure.
    """

    logits: Tensor
    state: tuple[Tensor, ...]
    alpha: Tensor
    beta: Tensor | None = None
    readout: tuple[Tensor, Tensor] | None = None


@dataclass
class CaptionerOutput:
    """Teacher-forced outputs for a caption of T tokens (T − 1 steps).

    logits: (B, T−1, V); logits[:, t] predicts caption_ids[:, t + 1].
    alpha: (B, T−1, N) or (B, T−1, H, N).
    beta: (B, T−1) or None.
    readout: the step readouts stacked over time, each (B, T−1, D), or None.
    """

    logits: Tensor
    alpha: Tensor
    beta: Tensor | None = None
    readout: tuple[Tensor, Tensor] | None = None


class Captioner(nn.Module, abc.ABC):
    """Abstract attention captioner over encoder features F of shape (B, N, C).

    Subclasses implement `prepare`, `init_state`, `step` and `config`; `forward` (teacher
    forcing) is shared. `vocab_size` and `embedding` are public so that decoders and
    explainers can embed words themselves.
    """

    def __init__(self, vocab_size: int, embed_dim: int) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)

    @abc.abstractmethod
    def prepare(self, features: Tensor) -> dict[str, Tensor]:
        """features (B, N, C) → memory: batch-first tensors reused at every step."""

    @abc.abstractmethod
    def init_state(self, memory: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """The recurrent state before the first word, each tensor (B, ...)."""

    @abc.abstractmethod
    def step(
        self, word_embedding: Tensor, state: tuple[Tensor, ...], memory: dict[str, Tensor]
    ) -> StepOutput:
        """word_embedding (B, E) of the current word → logits of the next word."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor arguments as a JSON-able dict (stored in checkpoints)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Captioner:
        """Build a captioner from `config()` output (weights are freshly initialised)."""
        return cls(**config)

    def forward(
        self, features: Tensor, caption_ids: Tensor, embeddings: Tensor | None = None
    ) -> CaptionerOutput:
        """Teacher forcing: feed caption_ids[:, :-1] (starting with <start>) one step at a time.

        features: (B, N, C) encoder grid; caption_ids: (B, T) int64 with T >= 2;
        embeddings: optional (B, T−1, E) used instead of embedding(caption_ids[:, :-1]) (an
        explainer passes embeddings that require grad to read the words' relevance).
        Steps are causal: padding after a caption's <end> does not change earlier logits.
        """
        _check_inputs(features, caption_ids)
        batch, length = caption_ids.shape
        if embeddings is None:
            embeddings = self.embedding(caption_ids[:, :-1])  # (B, T-1, E)
        expected = (batch, length - 1, self.embedding.embedding_dim)
        if tuple(embeddings.shape) != expected:
            raise ValueError(
                f"embeddings must have shape {expected}, got {tuple(embeddings.shape)}"
            )
        memory = self.prepare(features)
        state = self.init_state(memory)
        steps: list[StepOutput] = []
        for t in range(length - 1):
            out = self.step(embeddings[:, t], state, memory)
            state = out.state
            steps.append(out)
        return _stack_steps(steps)

    def logits_from(self, first: Tensor, second: Tensor) -> Tensor:
        """Output layer on the readout: W_o Dropout(first + second) + b_o → (..., V).

        Needs `self.dropout` (nn.Dropout) and `self.output` (nn.Linear); the step of both
        captioners calls it, and LRP-inference fine-tuning calls it on re-weighted terms.
        """
        output, dropout = getattr(self, "output", None), getattr(self, "dropout", None)
        if not isinstance(output, nn.Linear) or not isinstance(dropout, nn.Dropout):
            raise NotImplementedError(
                f"{type(self).__name__} needs an `output` nn.Linear and a `dropout` nn.Dropout"
            )
        return ops.linear(dropout(ops.add(first, second)), output)


def check_hyperparameters(sizes: dict[str, int], rates: dict[str, float]) -> None:
    """Constructor checks shared by the captioners: sizes >= 1, dropout rates in [0, 1)."""
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, rate in rates.items():
        if not 0 <= rate < 1:
            raise ValueError(f"{name} must be in [0, 1), got {rate}")


def _check_inputs(features: Tensor, caption_ids: Tensor) -> None:
    if features.dim() != 3:
        raise ValueError(f"features must be (B, N, C), got shape {tuple(features.shape)}")
    if caption_ids.dim() != 2 or caption_ids.shape[1] < 2:
        raise ValueError(
            f"caption_ids must be (B, T) with T >= 2, got shape {tuple(caption_ids.shape)}"
        )
    if caption_ids.dtype != torch.long:
        raise ValueError(f"caption_ids must be int64, got {caption_ids.dtype}")
    if features.shape[0] != caption_ids.shape[0]:
        raise ValueError(
            f"features and caption_ids have different batch sizes: "
            f"{features.shape[0]} vs {caption_ids.shape[0]}"
        )


def _stack_steps(steps: list[StepOutput]) -> CaptionerOutput:
    logits = torch.stack([s.logits for s in steps], dim=1)  # (B, T-1, V)
    alpha = torch.stack([s.alpha for s in steps], dim=1)  # (B, T-1, ...)
    beta = None
    if steps[0].beta is not None:
        beta = torch.stack([s.beta for s in steps], dim=1)  # type: ignore[misc]
    readout = None
    if steps[0].readout is not None:
        first = torch.stack([s.readout[0] for s in steps], dim=1)  # type: ignore[index]
        second = torch.stack([s.readout[1] for s in steps], dim=1)  # type: ignore[index]
        readout = (first, second)
    return CaptionerOutput(logits=logits, alpha=alpha, beta=beta, readout=readout)
