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

Beam search runs the beams of all images of a batch together, as one (B·K)-row batch per
step; it returns what a beam search of each image alone returns (tests/test_decoding.py
holds it to a per-image reference).

Two decoding-time options change the word scores, for both decoders (chapter 11):
`Caution` lowers the logits of chosen words (object words) by a constant λ, a knob that makes
a captioner name fewer objects without any training; `VisualContrast` is visual contrastive
decoding (Leng et al., 2024): the logits for the image are contrasted with those for a
distorted copy, (1 + α) ℓ(v) − α ℓ(v'), over the tokens whose probability for the image is at
least β times the top token's (the adaptive plausibility constraint). Without options the
scores are the model's log-probabilities, unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Caution:
    """Decoding-time caution (chapter 11): the logits of `word_ids` are lowered by `penalty`
    (λ ≥ 0) at every step before the softmax; λ = 0 is plain decoding."""

    word_ids: tuple[int, ...]
    penalty: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.penalty) or self.penalty < 0:
            raise ValueError(f"Caution.penalty must be a finite number >= 0, got {self.penalty}")


@dataclass(frozen=True)
class VisualContrast:
    """Visual contrastive decoding (Leng et al., 2024; chapter 11).

    features: the distorted images' encoder features, row for row the decoded images'
    ((B, N, C), or a feature store for `captionlib.generate.decode_features`); alpha: the
    contrast weight α ≥ 0 (0: no contrast); beta: the plausibility ratio β in [0, 1]
    (0: every token stays plausible).
    """

    features: Tensor = field(repr=False)
    alpha: float = 1.0
    beta: float = 0.1

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"VisualContrast.alpha must be a finite number >= 0, got {self.alpha}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"VisualContrast.beta must be in [0, 1], got {self.beta}")


DIFFUSION_STEPS = 1000  # the linear schedule's length (beta_t from 1e-4 to 0.02)


def diffusion_noise(images: Tensor, step: int, generator: torch.Generator | None = None) -> Tensor:
    """The distorted copy that visual contrastive decoding contrasts with: a Gaussian
    diffusion's forward process q(x_T | x_0) = N(√ᾱ_T x_0, (1 − ᾱ_T) I) at step T = `step`
    of the 1,000-step linear schedule of Ho et al. (2020), ᾱ_T = Π_{t≤T} (1 − β_t).

    images: float (B, 3, S, S) in [0, 1]; the noise is added in [−1, 1] (as in diffusion
    models) and the result mapped back (not clipped). Step 0 returns the images unchanged.
    """
    if not 0 <= step <= DIFFUSION_STEPS:
        raise ValueError(f"step must be in [0, {DIFFUSION_STEPS}], got {step}")
    betas = torch.linspace(1e-4, 0.02, DIFFUSION_STEPS, dtype=torch.float64)
    kept = float(torch.prod(1 - betas[:step]))  # ᾱ_T
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    noisy = math.sqrt(kept) * (2 * images - 1) + math.sqrt(1 - kept) * noise.to(images.device)
    return (noisy + 1) / 2


def caution_logits(logits: Tensor, word_ids: Sequence[int], penalty: float) -> Tensor:
    """logits (..., V) with `penalty` subtracted from the entries of `word_ids`."""
    lowered = logits.clone()
    lowered[..., list(word_ids)] -= penalty
    return lowered


def plausible_tokens(logits: Tensor, beta: float) -> Tensor:
    """The adaptive plausibility constraint: True where p(token) ≥ β · max p, logits (..., V).

    p_i / p_max = exp(ℓ_i − ℓ_max), so the test needs no softmax; β = 0 keeps every token."""
    if beta == 0:
        return torch.ones_like(logits, dtype=torch.bool)
    return logits - logits.amax(dim=-1, keepdim=True) >= math.log(beta)


def contrast_logits(logits: Tensor, distorted_logits: Tensor, alpha: float, beta: float) -> Tensor:
    """(1 + α) ℓ(v) − α ℓ(v') on the plausible tokens of ℓ(v), −∞ elsewhere; (..., V)."""
    contrasted = (1 + alpha) * logits - alpha * distorted_logits if alpha else logits
    return contrasted.masked_fill(~plausible_tokens(logits, beta), float("-inf"))


class _Scorer:
    """The per-step word scores of R decoded rows: the model's step (and, for visual
    contrastive decoding, the same step on the distorted features), then the options."""

    def __init__(
        self,
        model: Captioner,
        features: Tensor,
        rows: Tensor,
        caution: Caution | None,
        contrast: VisualContrast | None,
    ) -> None:
        self.model, self.caution, self.contrast = model, caution, contrast
        memory = model.prepare(features)
        self.memory = reorder_state(memory, rows)  # rows: (R,) image index of each row
        self.state = reorder_state(model.init_state(memory), rows)
        if contrast is not None:
            distorted = model.prepare(contrast.features.to(features.device, features.dtype))
            self.distorted_memory = reorder_state(distorted, rows)
            self.distorted_state = reorder_state(model.init_state(distorted), rows)

    def log_probs(self, words: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """words (R,) → log-probabilities (R, V) of the next word, alpha, beta."""
        embedded = self.model.embedding(words)
        out = self.model.step(embedded, self.state, self.memory)
        self.state = out.state
        logits = out.logits
        if self.contrast is not None:
            distorted = self.model.step(embedded, self.distorted_state, self.distorted_memory)
            self.distorted_state = distorted.state
            logits = contrast_logits(
                logits, distorted.logits, self.contrast.alpha, self.contrast.beta
            )
        if self.caution is not None:
            logits = caution_logits(logits, self.caution.word_ids, self.caution.penalty)
        return functional.log_softmax(logits, dim=-1), out.alpha, out.beta

    def reorder(self, indices: Tensor) -> None:
        """Keep rows `indices` (R,) of the states (the memories' rows are per image)."""
        self.state = reorder_state(self.state, indices)
        if self.contrast is not None:
            self.distorted_state = reorder_state(self.distorted_state, indices)


def _check_options(
    model: Captioner, features: Tensor, caution: Caution | None, contrast: VisualContrast | None
) -> None:
    if caution is not None and any(not 0 <= i < model.vocab_size for i in caution.word_ids):
        raise ValueError(f"Caution.word_ids must lie in the vocabulary of {model.vocab_size}")
    if contrast is not None and tuple(contrast.features.shape) != tuple(features.shape):
        raise ValueError(
            f"VisualContrast.features must have the decoded features' shape "
            f"{tuple(features.shape)}, got {tuple(contrast.features.shape)}"
        )


def greedy(
    model: Captioner,
    features: Tensor,
    start_id: int,
    end_id: int,
    max_length: int = 20,
    *,
    caution: Caution | None = None,
    contrast: VisualContrast | None = None,
) -> list[DecodedCaption]:
    """Pick the best-scoring word at each step; features (B, N, C) → B captions.

    Decodes at most `max_length` steps; a caption without <end> keeps all its words. The
    scores are the model's log-probabilities, changed by `caution` / `contrast` if given.
    """
    _check_decoding_args(model, features, start_id, end_id, max_length)
    _check_options(model, features, caution, contrast)
    batch = features.shape[0]
    with _eval_no_grad(model):
        scorer = _Scorer(
            model, features, torch.arange(batch, device=features.device), caution, contrast
        )
        words = torch.full((batch,), start_id, dtype=torch.long, device=features.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=features.device)
        log_probs = torch.zeros(batch, dtype=torch.float64, device=features.device)
        lengths = [max_length] * batch
        tokens, alphas, betas = [], [], []
        for t in range(max_length):
            step_log_probs, alpha, beta = scorer.log_probs(words)
            step_log_probs = _never_decoded(step_log_probs, start_id)
            words = step_log_probs.argmax(dim=-1)  # (B,)
            chosen = step_log_probs.gather(1, words.unsqueeze(1)).squeeze(1).double()
            log_probs += torch.where(finished, torch.zeros_like(chosen), chosen)
            tokens.append(words)
            alphas.append(alpha)
            betas.append(beta)
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
    *,
    caution: Caution | None = None,
    contrast: VisualContrast | None = None,
) -> list[DecodedCaption]:
    """Beam search of every image; features (B, N, C) → B captions.

    Per image: a hypothesis that emits <end> is set aside and the image's beam shrinks by
    one; its search stops when no beam is left or after `max_length` steps (then, if nothing
    ended, the live beams are the candidates). The best candidate maximises log_prob (the sum
    of the chosen words' scores), or log_prob / L^p with L the number of generated tokens when
    `length_penalty` p is given. The scores are the model's log-probabilities, changed by
    `caution` / `contrast` if given.
    """
    _check_decoding_args(model, features, start_id, end_id, max_length)
    _check_options(model, features, caution, contrast)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    with _eval_no_grad(model):
        candidates = _beam_candidates(
            model, features, start_id, end_id, beam_size, max_length, caution, contrast
        )

    def ranking(hypothesis: _Hypothesis) -> float:
        if length_penalty is None:
            return hypothesis.score
        return hypothesis.score / max(hypothesis.steps, 1) ** length_penalty

    return [max(image_candidates, key=ranking).caption for image_candidates in candidates]


def _beam_candidates(
    model: Captioner,
    features: Tensor,
    start_id: int,
    end_id: int,
    beam_size: int,
    max_length: int,
    caution: Caution | None,
    contrast: VisualContrast | None,
) -> list[list[_Hypothesis]]:
    """Every image's candidates. The B images' K beam slots are rows b·K + k of one batch;
    an image's live beams fill its first slots in score order (as a per-image search keeps
    them), its other slots are dead (score −∞)."""
    device = features.device
    batch, width, vocab = features.shape[0], beam_size, model.vocab_size
    images = torch.arange(batch, device=device)
    scorer = _Scorer(model, features, images.repeat_interleave(width), caution, contrast)
    scores = torch.zeros(batch, width, dtype=torch.float64, device=device)  # (B, K)
    live = torch.full((batch,), width, dtype=torch.long, device=device)  # live beams per image
    slots = torch.arange(width, device=device)
    tokens = torch.zeros(batch, width, 0, dtype=torch.long, device=device)  # (B, K, t)
    alphas: Tensor | None = None  # (B, K, t, ...)
    betas: Tensor | None = None  # (B, K, t)
    words = torch.full((batch * width,), start_id, dtype=torch.long, device=device)
    candidates: list[list[_Hypothesis]] = [[] for _ in range(batch)]

    for t in range(max_length):
        step_log_probs, step_alpha, step_beta = scorer.log_probs(words)
        step_log_probs = _never_decoded(step_log_probs.double(), start_id).view(batch, width, vocab)
        totals = scores.unsqueeze(2) + step_log_probs  # (B, K, V)
        if t == 0:
            totals = totals[:, :1]  # all beams start identical: expand only the first
        count = min(width, totals[0].numel())
        live = live.clamp(max=count)
        top_scores, flat = totals.flatten(1).topk(count, dim=1)  # (B, count)
        beams, words_ = split_beam_indices(flat, vocab)
        valid = slots[:count].unsqueeze(0) < live.unsqueeze(1)  # (B, count)
        ended = valid & (words_ == end_id)
        rows = beams + images.unsqueeze(1) * width  # (B, count) rows of the batch
        tokens = torch.cat([tokens.flatten(0, 1)[rows], words_.unsqueeze(2)], dim=2)
        alpha_rows = step_alpha[rows].unsqueeze(2)
        alphas = (
            alpha_rows if alphas is None else torch.cat([alphas.flatten(0, 1)[rows], alpha_rows], 2)
        )
        if step_beta is not None:
            beta_rows = step_beta[rows].unsqueeze(2)
            betas = (
                beta_rows if betas is None else torch.cat([betas.flatten(0, 1)[rows], beta_rows], 2)
            )
        for b, i in ended.nonzero().tolist():
            beta = None if betas is None else betas[b, i, :-1]
            candidates[b].append(
                _hypothesis(top_scores[b, i], t + 1, tokens[b, i, :-1], alphas[b, i, :-1], beta)
            )

        keep = valid & ~ended
        # live beams first, in score order (a stable sort of "dead" keeps their order)
        order = (~keep).to(torch.int8).sort(dim=1, stable=True).indices  # (B, count)
        live = keep.sum(dim=1)
        if count < width:  # fewer words than beams: pad the slots (dead)
            order = torch.cat([order, order[:, :1].expand(batch, width - count)], dim=1)
        alive = slots.unsqueeze(0) < live.unsqueeze(1)  # (B, K)
        scores = torch.where(alive, top_scores.gather(1, order), float("-inf"))
        tokens = tokens.gather(1, _expand_like(order, tokens))
        alphas = alphas.gather(1, _expand_like(order, alphas))
        betas = None if betas is None else betas.gather(1, _expand_like(order, betas))
        words = words_.gather(1, order).flatten()
        scorer.reorder(rows.gather(1, order).flatten())
        if not bool(alive.any()):
            break

    for b in range(batch):
        if not candidates[b]:  # nothing ended within max_length: rank the live beams
            for i in range(int(live[b])):
                beta = None if betas is None else betas[b, i]
                candidates[b].append(
                    _hypothesis(scores[b, i], tokens.shape[2], tokens[b, i], alphas[b, i], beta)
                )
    return candidates


def _expand_like(order: Tensor, table: Tensor) -> Tensor:
    """order (B, K) as gather indices along dim 1 of table (B, K', ...)."""
    return order.view(*order.shape, *([1] * (table.dim() - 2))).expand(
        *order.shape, *table.shape[2:]
    )


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
