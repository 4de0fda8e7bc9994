"""Greedy and beam-search decoding over the `Captioner.step` contract (chapter 3).

Written once for every captioner: a decoder only calls `prepare`, `init_state`, `step` and
`embedding`. Both decoders switch the model to eval mode (restoring its mode afterwards) and
run without gradients. Beam indices are integer tensors (`torch.div(..., rounding_mode=
"floor")`): the authors' true division gives float indices that current PyTorch rejects.

Neither decoder ever emits <pad> or <start> (an untrained or badly trained model may give
them the highest score): their log-probabilities are set to −∞ before the choice, the other
words' values are untouched. A decoded caption's `token_ids` exclude <start> and <end>; its
`log_prob` is the sum of the chosen tokens' log-probabilities, the final <end> included when
the caption ended; `alpha` and `beta` are the attention weights of the L steps that produced
the L words.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import torch
import torch.nn.functional as functional
from torch import Tensor

from captionlib.data.vocab import Vocabulary
from captionlib.models.base import Captioner
from captionlib.utils import torch_threads

BAD_ENDINGS = (
    "a", "an", "the", "with", "of", "on", "in", "and", "to", "next", "above", "below", "near", "at"
)  # fmt: skip


@dataclass
class DecodedCaption:
    """One decoded caption: token_ids (L words), log_prob, alpha (L, N) or (L, H, N), beta (L,)."""

    token_ids: list[int]
    log_prob: float
    alpha: Tensor
    beta: Tensor | None


@contextlib.contextmanager
def _eval_no_grad(model: Captioner) -> Iterator[None]:
    """Eval mode, no autograd, and one CPU thread: decoding steps work on tiny tensors, where
    PyTorch's thread pool costs more than it gains."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch_threads(1):
            yield
    finally:
        model.train(was_training)


@overload
def reorder_state(state: tuple[Tensor, ...], indices: Tensor) -> tuple[Tensor, ...]: ...


@overload
def reorder_state(state: Mapping[str, Tensor], indices: Tensor) -> dict[str, Tensor]: ...


def reorder_state(
    state: tuple[Tensor, ...] | Mapping[str, Tensor], indices: Tensor
) -> tuple[Tensor, ...] | dict[str, Tensor]:
    """Select rows `indices` (int64, (K,)) along dim 0 of every tensor of a state or memory."""
    if isinstance(state, Mapping):
        return {key: value.index_select(0, indices) for key, value in state.items()}
    return tuple(value.index_select(0, indices) for value in state)


def split_beam_indices(flat_indices: Tensor, vocab_size: int) -> tuple[Tensor, Tensor]:
    """Indices into a flattened (beams × V) score table → (beam, word), both int64."""
    beams = torch.div(flat_indices, vocab_size, rounding_mode="floor")
    return beams, flat_indices % vocab_size


def remove_bad_endings(
    tokens: Sequence[str], bad_endings: Sequence[str] = BAD_ENDINGS
) -> list[str]:
    """Drop trailing words such as "a", "the", "next", "to" (repeatedly) from a word list."""
    words = list(tokens)
    while words and words[-1] in bad_endings:
        words.pop()
    return words


def _never_decoded(log_probs: Tensor, start_id: int) -> Tensor:
    """log_probs (..., V) with <pad> and <start> at −∞ (never a decoded word)."""
    banned = log_probs.clone()
    banned[..., [Vocabulary.PAD_ID, start_id]] = float("-inf")
    return banned


def _check_decoding_args(
    model: Captioner, features: Tensor, start_id: int, end_id: int, max_length: int
) -> None:
    if features.dim() != 3:
        raise ValueError(f"features must be (B, N, C), got shape {tuple(features.shape)}")
    for name, token in (("start_id", start_id), ("end_id", end_id)):
        if not 0 <= token < model.vocab_size:
            raise ValueError(f"{name}={token} is outside the vocabulary of {model.vocab_size}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")


def greedy(
    model: Captioner, features: Tensor, start_id: int, end_id: int, max_length: int = 20
) -> list[DecodedCaption]:
    """Pick the most probable word at each step; features (B, N, C) → B captions.

    Decodes at most `max_length` steps; a caption without <end> keeps all its words.
    """
    _check_decoding_args(model, features, start_id, end_id, max_length)
    batch = features.shape[0]
    with _eval_no_grad(model):
        memory = model.prepare(features)
        state = model.init_state(memory)
        words = torch.full((batch,), start_id, dtype=torch.long, device=features.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=features.device)
        log_probs = torch.zeros(batch, dtype=torch.float64, device=features.device)
        lengths = [max_length] * batch
        tokens, alphas, betas = [], [], []
        for t in range(max_length):
            out = model.step(model.embedding(words), state, memory)
            state = out.state
            step_log_probs = _never_decoded(functional.log_softmax(out.logits, dim=-1), start_id)
            words = step_log_probs.argmax(dim=-1)  # (B,)
            chosen = step_log_probs.gather(1, words.unsqueeze(1)).squeeze(1).double()
            log_probs += torch.where(finished, torch.zeros_like(chosen), chosen)
            tokens.append(words)
            alphas.append(out.alpha)
            betas.append(out.beta)
            for b in ((words == end_id) & ~finished).nonzero().flatten().tolist():
                lengths[b] = t
            finished |= words == end_id
            if bool(finished.all()):
                break
        token_table = torch.stack(tokens, dim=1)  # (B, T)
        alpha_table = torch.stack(alphas, dim=1)  # (B, T, ...)
        beta_table = None if betas[0] is None else torch.stack(betas, dim=1)  # (B, T)
        return [
            DecodedCaption(
                token_ids=token_table[b, : lengths[b]].tolist(),
                log_prob=float(log_probs[b]),
                alpha=alpha_table[b, : lengths[b]],
                beta=None if beta_table is None else beta_table[b, : lengths[b]],
            )
            for b in range(batch)
        ]


@dataclass
class _Hypothesis:
    score: float
    steps: int  # generated tokens, <end> included
    caption: DecodedCaption


def beam_search(
    model: Captioner,
    features: Tensor,
    start_id: int,
    end_id: int,
    beam_size: int = 3,
    max_length: int = 20,
    length_penalty: float | None = None,
) -> list[DecodedCaption]:
    """Beam search per image (the beams of one image run as one batch); features (B, N, C).

    A hypothesis that emits <end> is set aside and the beam shrinks by one; decoding stops
    when no beam is left or after `max_length` steps (then, if nothing ended, the live
    beams are the candidates). The best candidate maximises log_prob, or log_prob / L^p with
    L the number of generated tokens when `length_penalty` p is given.
    """
    _check_decoding_args(model, features, start_id, end_id, max_length)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    with _eval_no_grad(model):
        return [
            _beam_search_one(
                model, features[b : b + 1], start_id, end_id, beam_size, max_length, length_penalty
            )
            for b in range(features.shape[0])
        ]


def _beam_search_one(
    model: Captioner,
    features: Tensor,
    start_id: int,
    end_id: int,
    beam_size: int,
    max_length: int,
    length_penalty: float | None,
) -> DecodedCaption:
    """Beam search for one image, features (1, N, C)."""
    device = features.device
    memory = model.prepare(features)
    state = model.init_state(memory)
    rows = torch.zeros(beam_size, dtype=torch.long, device=device)
    memory, state = reorder_state(memory, rows), reorder_state(state, rows)
    scores = torch.zeros(beam_size, dtype=torch.float64, device=device)  # (K,)
    tokens = torch.full((beam_size, 0), start_id, dtype=torch.long, device=device)  # (K, t)
    alphas: Tensor | None = None  # (K, t, ...)
    betas: Tensor | None = None  # (K, t)
    words = torch.full((beam_size,), start_id, dtype=torch.long, device=device)
    candidates: list[_Hypothesis] = []

    for t in range(max_length):
        out = model.step(model.embedding(words), state, memory)
        step_log_probs = functional.log_softmax(out.logits, dim=-1).double()  # (K, V)
        step_log_probs = _never_decoded(step_log_probs, start_id)
        totals = scores.unsqueeze(1) + step_log_probs  # (K, V)
        if t == 0:
            totals = totals[:1]  # all beams start identical: expand only the first
        live = min(scores.shape[0], totals.numel())
        scores, flat = totals.flatten().topk(live)
        beams, words = split_beam_indices(flat, model.vocab_size)
        tokens = torch.cat([tokens[beams], words.unsqueeze(1)], dim=1)
        step_alpha = out.alpha[beams].unsqueeze(1)
        alphas = step_alpha if alphas is None else torch.cat([alphas[beams], step_alpha], 1)
        if out.beta is not None:
            step_beta = out.beta[beams].unsqueeze(1)
            betas = step_beta if betas is None else torch.cat([betas[beams], step_beta], 1)
        state = reorder_state(out.state, beams)

        ended = words == end_id
        for i in ended.nonzero().flatten().tolist():
            beta = None if betas is None else betas[i, :-1]
            candidates.append(_hypothesis(scores[i], t + 1, tokens[i, :-1], alphas[i, :-1], beta))
        keep = (~ended).nonzero().flatten()
        if keep.numel() == 0:
            break
        scores, tokens, words, alphas = scores[keep], tokens[keep], words[keep], alphas[keep]
        betas = None if betas is None else betas[keep]
        state = reorder_state(state, keep)
        memory = reorder_state(memory, torch.zeros_like(keep))  # rows are identical copies

    if not candidates:  # nothing ended within max_length: rank the live beams
        for i in range(scores.shape[0]):
            beta = None if betas is None else betas[i]
            candidates.append(_hypothesis(scores[i], tokens.shape[1], tokens[i], alphas[i], beta))

    def ranking(hypothesis: _Hypothesis) -> float:
        if length_penalty is None:
            return hypothesis.score
        return hypothesis.score / max(hypothesis.steps, 1) ** length_penalty

    return max(candidates, key=ranking).caption


def _hypothesis(
    score: Tensor, steps: int, tokens: Tensor, alpha: Tensor, beta: Tensor | None
) -> _Hypothesis:
    """A finished or truncated beam as a candidate; tokens (L,), alpha (L, ...), beta (L,)."""
    return _Hypothesis(
        score=float(score),
        steps=steps,
        caption=DecodedCaption(
            token_ids=tokens.tolist(), log_prob=float(score), alpha=alpha, beta=beta
        ),
    )
