"""Two-stage LRP for the attention captioners, every word of a caption at once (chapter 7).

Stage 1 explains the decoder: the caption is teacher-forced through the model's own
`forward` inside `ops.lrp_mode(...)`, word t+1 is explained at step t starting from its
logit (book/method.md §5), and the relevance of the encoder features F and of every input word
embedding is input × gradient. Stage 2 (`captionlib.explain.cnn`) pushes R(F) through the
CNN down to the pixels with zennit.

Every word of every caption comes from ONE forward pass and ONE vectorised backward pass:
the backward for word t is seeded with a one at the explained logit of step t, and the
T−1 seeds run together through `torch.autograd.grad(..., is_grads_batched=True)`. This
gives the same numbers as replicating each caption T−1 times along the batch (tests hold
them equal to a one-word-at-a-time loop and to the explicit reference implementation) while
the CNN and the decoder run forward only once per image. `replicate=True` runs the
replicated scheme itself (more forward work, plain batched kernels: often faster on a GPU).

The explainer only reads the model: it runs in eval mode with the parameters' gradients
switched off and restores both afterwards.

`initial="contrastive"` changes only where the backward starts (chapter 8): instead of the
explained word's logit, every logit of the step gets the initial relevance of softmax-gradient
LRP (SGLRP; Iwana, Kuroki & Uchida 2019), s = ∂p_k/∂z (`contrastive_start`). In gradient
form the relevance of a logit z_j is z_j · ∂/∂z_j, so the backward is seeded with s_j / z_j
at every logit; the rules below the logits are the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from zennit.core import Composite

from captionlib import ops
from captionlib.data.vocab import Vocabulary
from captionlib.explain.cnn import hooked_forward, propagate
from captionlib.models.base import Captioner
from captionlib.models.encoder import to_grid
from captionlib.models.multihead import MultiHeadCaptioner

INITIAL_RELEVANCE = ("logit", "contrastive")


@dataclass
class Conservation:
    """Where each explained logit went; every field is (B, T−1), one value per word.

    logits: the total initial relevance: the explained logit (initial="logit"), or the sum
    of the contrastive start vector over the vocabulary (initial="contrastive", 0 up to
    rounding); features: Σ R(F) over locations and channels; words: Σ R(E(w_i)) over the
    preceding words; pixels: Σ R(pixels), or None when only stage 1 ran. With every bias
    zeroed and ε = 0, features + words == logits (and pixels == features when the CNN biases
    are zeroed too); otherwise the biases and ε absorb the difference.
    """

    logits: Tensor
    features: Tensor
    words: Tensor
    pixels: Tensor | None = None

    @property
    def inputs(self) -> Tensor:
        """Relevance that reached the decoder's inputs, features + words, (B, T−1)."""
        return self.features + self.words

    def relative_error(self) -> Tensor:
        """`|inputs − logits| / |logits|` per word, (B, T−1) (0 where the logit is 0)."""
        scale = self.logits.abs()
        error = (self.inputs - self.logits).abs()
        return torch.where(scale > 0, error / torch.where(scale > 0, scale, 1.0), error)


@dataclass
class Explanation:
    """Explanations of every word of B captions (chapters 5, 7 and 8 fill it).

    - method: how it was made ("lrp", "attnlrp", "attention", …).
    - caption_ids: (B, T) the teacher-forced captions, <start> first.
    - words: (B, T−1) the explained token ids, caption_ids[:, 1:]; word t is predicted at
      step t from the inputs caption_ids[:, :t+1].
    - logits: (B, T−1) the explained logits (LRP's initial relevance unless
      initial="contrastive", whose start vector is extras["initial_relevance"]).
    - mask: (B, T−1) True where the explained word is not padding.
    - locations: (B, T−1, N) one score per grid location: the relevance of F summed over
      channels (LRP) or the attention weight (attention).
    - grid_size: (h, w) of the feature grid, N = h·w (row-major).
    - pixels: (B, T−1, 3, H, W) signed relevance per colour channel, or None.
    - heatmap: (B, T−1, H, W) pixels summed over channels (LRP) or the upsampled attention
      map, or None.
    - word_relevance: (B, T−1, T−1): [b, t, i] is the relevance of input word i
      (caption_ids[b, i], i = 0 is <start>) for explained word t; exactly 0 for i > t.
    - conservation: per-word totals (LRP only).
    - extras: method-specific tensors (e.g. "beta" (B, T−1) for captioner A's attention;
      "initial_relevance" (B, T−1, V) for LRP with initial="contrastive").
    """

    method: str
    caption_ids: Tensor
    words: Tensor
    logits: Tensor
    mask: Tensor
    locations: Tensor
    grid_size: tuple[int, int]
    pixels: Tensor | None = None
    heatmap: Tensor | None = None
    word_relevance: Tensor | None = None
    conservation: Conservation | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class DecoderRelevance:
    """Stage-1 result for B captions of T tokens (K = T − 1 explained words).

    logits: (B, K) explained logits; features: (B, K, N, C) relevance of every entry of F;
    words: (B, K, K) relevance of each input word (summed over embedding dims); initial:
    (B, K) the total initial relevance (the logits for initial="logit"); start: (B, K, V)
    the initial relevance of every logit for initial="contrastive", else None.
    """

    logits: Tensor
    features: Tensor
    words: Tensor
    initial: Tensor | None = None
    start: Tensor | None = None

    @property
    def total(self) -> Tensor:
        """The total initial relevance per word, (B, K)."""
        return self.logits if self.initial is None else self.initial


@contextlib.contextmanager
def explaining(model: nn.Module, encoder: nn.Module | None = None) -> Iterator[None]:
    """Eval mode for both, and no parameter gradients for the encoder, inside the block;
    both restored afterwards.

    Encoder parameters that require grad make the vectorised CNN backward several times
    slower (it then computes weight gradients nobody asked for). The decoder keeps its
    flags: PyTorch picks a different (equally correct) kernel for some linear layers when
    their weights need no gradient, and the explainer must reproduce the model's own
    logits bit for bit. No `.grad` is ever written: gradients are taken w.r.t. inputs only.
    """
    modules = [model] if encoder is None else [model, encoder]
    modes = [(module, module.training) for module in modules]
    flags = [] if encoder is None else [(p, p.requires_grad) for p in encoder.parameters()]
    try:
        for module in modules:
            module.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.train(training)
        for parameter, required in flags:
            parameter.requires_grad_(required)


def check_lrp_options(
    model: Captioner, attention: str, head: int | None, initial: str = "logit"
) -> None:
    """Clear errors for rule settings a captioner does not support."""
    if initial not in INITIAL_RELEVANCE:
        raise ValueError(f"initial must be one of {INITIAL_RELEVANCE}, got {initial!r}")
    if attention not in ops.ATTENTION_RULES:
        raise ValueError(f"attention must be one of {ops.ATTENTION_RULES}, got {attention!r}")
    multihead = isinstance(model, MultiHeadCaptioner)
    name = type(model).__name__
    if attention == "attnlrp" and not multihead:
        raise ValueError(f"attention='attnlrp' is defined for MultiHeadCaptioner only, got {name}")
    if head is not None:
        if not multihead:
            raise ValueError(f"head={head} needs a multi-head captioner, got {name}")
        if not 0 <= head < model.heads:
            raise ValueError(f"head must be in [0, {model.heads}), got {head}")


def check_captions(model: Captioner, caption_ids: Tensor) -> None:
    """caption_ids must be (B, T) int64 with T ≥ 2 and ids inside the vocabulary."""
    if caption_ids.dim() != 2 or caption_ids.shape[1] < 2:
        raise ValueError(
            f"caption_ids must be (B, T) with T >= 2, got shape {tuple(caption_ids.shape)}"
        )
    if caption_ids.dtype != torch.long:
        raise ValueError(f"caption_ids must be int64, got {caption_ids.dtype}")
    if caption_ids.numel() and not 0 <= int(caption_ids.min()) <= int(caption_ids.max()) < (
        model.vocab_size
    ):
        raise ValueError(f"caption_ids must be in [0, {model.vocab_size}), got out-of-range ids")


def decoder_relevance(
    model: Captioner,
    features: Tensor,
    caption_ids: Tensor,
    epsilon: float = 0.01,
    attention: str = "constant",
    head: int | None = None,
    replicate: bool = False,
    initial: str = "logit",
) -> DecoderRelevance:
    """Stage 1: relevance of F (B, N, C) and of the input words for every word of the caption.

    One forward of the model inside `ops.lrp_mode`, one vectorised backward with one seed
    per explained word; replicate=True instead repeats each caption T−1 times along the
    batch (replica k seeds word k) and runs one ordinary backward. initial: "logit" (start
    from the explained logit) or "contrastive" (`contrastive_start`). Call it inside
    `explaining(model)` (eval mode; `explain_lrp` does).
    """
    if replicate:
        grid = features.repeat_interleave(caption_ids.shape[1] - 1, dim=0)  # (B·K, N, C)
        return _replicated_relevance(model, grid, caption_ids, epsilon, attention, head, initial)
    grid = features.detach().requires_grad_()  # (B, N, C)
    embeddings = model.embedding(caption_ids[:, :-1]).detach().requires_grad_()  # (B, K, E)
    with (
        torch.enable_grad(),
        ops.lrp_mode(epsilon=epsilon, attention=attention, head=head),
    ):
        logits = model(grid, caption_ids, embeddings=embeddings).logits  # (B, K, V)
        explained = explained_logits(logits, caption_ids)  # (B, K)
        start = None if initial == "logit" else contrastive_start(logits, caption_ids)
        started = explained if start is None else seeded_logits(logits, start)
        grad_features, grad_words = torch.autograd.grad(
            started, (grid, embeddings), word_seeds(explained), is_grads_batched=True
        )  # (K, B, N, C), (K, B, K, E)
    feature_relevance = (grid.detach() * grad_features).transpose(0, 1)  # (B, K, N, C)
    word_relevance = (embeddings.detach() * grad_words).sum(-1).transpose(0, 1)  # (B, K, K)
    if start is None:
        return DecoderRelevance(
            logits=explained.detach(), features=feature_relevance, words=word_relevance
        )
    return DecoderRelevance(
        logits=explained.detach(),
        features=feature_relevance,
        words=word_relevance,
        initial=start.sum(2),
        start=start,
    )


def _replicated_relevance(
    model: Captioner,
    grid: Tensor,
    caption_ids: Tensor,
    epsilon: float,
    attention: str,
    head: int | None,
    initial: str = "logit",
) -> DecoderRelevance:
    """Stage 1 on replicated features: grid (B·K, N, C), row b·K + k explains word k of
    caption b."""
    batch, length = caption_ids.shape
    steps = length - 1
    replicas = caption_ids.repeat_interleave(steps, dim=0)  # (B·K, T)
    grid = grid.detach().requires_grad_()
    embeddings = model.embedding(replicas[:, :-1]).detach().requires_grad_()  # (B·K, K, E)
    with (
        torch.enable_grad(),
        ops.lrp_mode(epsilon=epsilon, attention=attention, head=head),
    ):
        logits = model(grid, replicas, embeddings=embeddings).logits  # (B·K, K, V)
        explained = explained_logits(logits, replicas)  # (B·K, K)
        start = None if initial == "logit" else contrastive_start(logits, replicas)
        started = explained if start is None else seeded_logits(logits, start)
        seeds = torch.eye(steps, dtype=explained.dtype, device=explained.device)
        grad_features, grad_words = torch.autograd.grad(
            started, (grid, embeddings), seeds.repeat(batch, 1)
        )
    feature_relevance = (grid.detach() * grad_features).view(batch, steps, *grid.shape[1:])
    word_relevance = (embeddings.detach() * grad_words).sum(-1).view(batch, steps, steps)
    logits_explained = explained.detach().view(batch, steps, steps)[:, 0]  # (B, K)
    if start is None:
        return DecoderRelevance(
            logits=logits_explained, features=feature_relevance, words=word_relevance
        )
    first = start.view(batch, steps, steps, -1)[:, 0]  # (B, K, V): replica 0 of each caption
    return DecoderRelevance(
        logits=logits_explained,
        features=feature_relevance,
        words=word_relevance,
        initial=first.sum(2),
        start=first,
    )


def explained_logits(logits: Tensor, caption_ids: Tensor) -> Tensor:
    """The logit of each next word: logits (B, K, V), caption_ids (B, K + 1) → (B, K).

    Written as a one-hot product rather than `gather` so that the vectorised backward has a
    batching rule for every operation (x · 1 + Σ 0 · y is exactly x for finite logits).
    """
    one_hot = torch.zeros_like(logits).scatter_(2, caption_ids[:, 1:].unsqueeze(2), 1.0)
    return (logits * one_hot).sum(2)


def contrastive_start(logits: Tensor, caption_ids: Tensor) -> Tensor:
    """SGLRP's initial relevance at every logit (Iwana, Kuroki & Uchida 2019; chapter 8).

    logits (B, K, V), caption_ids (B, K + 1) → (B, K, V). With p = softmax(z) the model's
    next-word distribution at step t and k the explained word caption_ids[:, t + 1], the
    start vector is the gradient of p_k with respect to the logits::

        s_k = p_k (1 − p_k),    s_j = −p_k p_j  for every other word j ≠ k.

    The explained word starts with positive relevance and every competitor with negative
    relevance in proportion to its probability, so Σ_j s_j = 0. Computed in float64 (1 − p_k
    as Σ_{j≠k} p_j, exact when the model is confident), returned in the logits' dtype.
    """
    probabilities = logits.detach().to(torch.float64).softmax(2)  # (B, K, V)
    index = caption_ids[:, 1:].unsqueeze(2)  # (B, K, 1)
    target = probabilities.gather(2, index)  # p_k, (B, K, 1)
    others = probabilities.scatter(2, index, 0.0).sum(2, keepdim=True)  # 1 − p_k
    start = (-target * probabilities).scatter(2, index, target * others)
    return start.to(logits.dtype)


def seeded_logits(logits: Tensor, start: Tensor) -> Tensor:
    """Σ_j (s_j / z_j) · z_j per step: logits z and start vector s (B, K, V) → (B, K), the
    weights s_j / z_j constants. Its backward seeds every logit so that, in gradient form
    (relevance = z · ∂/∂z), logit j starts with relevance s_j. A logit that is exactly 0
    carries no relevance (weight 0)."""
    values = logits.detach()
    weights = torch.where(values != 0, start / torch.where(values != 0, values, 1.0), 0.0)
    return (logits * weights).sum(2)


def word_seeds(explained: Tensor) -> Tensor:
    """Backward seeds (K, B, K) for explained logits (B, K): seed k is one at word k."""
    batch, steps = explained.shape
    seeds = torch.eye(steps, dtype=explained.dtype, device=explained.device)  # (K, K)
    return seeds.unsqueeze(1).expand(steps, batch, steps).contiguous()


def explain_lrp(
    model: Captioner,
    caption_ids: Tensor,
    *,
    images: Tensor | None = None,
    encoder: nn.Module | None = None,
    features: Tensor | None = None,
    epsilon: float = 0.01,
    attention: str = "constant",
    head: int | None = None,
    composite: Composite | None = None,
    pad_id: int | None = Vocabulary.PAD_ID,
    replicate: bool = False,
    initial: str = "logit",
) -> Explanation:
    """LRP for every word of B captions (book/method.md §5; chapters 7 and 8).

    model: captioner A or B; caption_ids: (B, T) teacher-forced captions (<start> first).
    Give either images (B, 3, H, W) and the encoder (its `.features` CNN, or the CNN
    itself, maps images to F (B, C, h, w)): both stages, pixel relevance included; or
    features (B, N, C) (e.g. cached): stage 1 only, with the grid assumed square.
    epsilon: ε of the decoder's ε-rules (0.01 in the paper). attention: "constant" (the
    paper's rule) or "attnlrp" (captioner B). head: explain one head of captioner B (the
    paper's per-head explanation), None for all heads jointly. composite: zennit composite
    for the CNN (default: the paper's α1β0 without bias). pad_id: padding token for `mask`.
    replicate: repeat each caption (and image) T−1 times along the batch and run ordinary
    backward passes instead of the vectorised one: same numbers (up to rounding), more
    forward work; often faster on a GPU, slower on a CPU. initial: where the relevance
    starts, "logit" (the explained word's logit, one-hot: the paper's choice) or
    "contrastive" (SGLRP: every logit z_j of the step starts with s_j = ∂p_k/∂z_j, i.e.
    p_k (1 − p_k) for the explained word k and −p_k p_j for every other word; see
    `contrastive_start`); the start vector is returned as extras["initial_relevance"].
    """
    check_captions(model, caption_ids)
    check_lrp_options(model, attention, head, initial)
    if (images is None) == (features is None):
        raise ValueError("give exactly one of images (with encoder) or features")
    pixels: Tensor | None = None
    parameter = next(model.parameters())
    caption_ids = caption_ids.to(parameter.device)
    with explaining(model, encoder):
        if features is not None:
            if features.dim() != 3:
                raise ValueError(f"features must be (B, N, C), got {tuple(features.shape)}")
            side = int(round(features.shape[1] ** 0.5))
            if side * side != features.shape[1]:
                raise ValueError(f"features have N={features.shape[1]} locations, not a square")
            grid_size = (side, side)
            grid = features.to(device=parameter.device, dtype=parameter.dtype)
            decoder = decoder_relevance(
                model, grid, caption_ids, epsilon, attention, head, replicate, initial
            )
        elif encoder is None:
            raise ValueError("images need the encoder that produced the model's features")
        else:
            cnn = getattr(encoder, "features", encoder)
            images = images.to(device=parameter.device, dtype=parameter.dtype)  # type: ignore[union-attr]
            steps = caption_ids.shape[1] - 1
            if replicate:
                images = images.repeat_interleave(steps, dim=0)  # (B·K, 3, H, W)
            with hooked_forward(cnn, images, composite) as (inputs, feature_map):
                grid_size = (feature_map.shape[2], feature_map.shape[3])
                grid = to_grid(feature_map)  # (B, N, C), or (B·K, N, C) replicated
                if replicate:
                    decoder = _replicated_relevance(
                        model, grid, caption_ids, epsilon, attention, head, initial
                    )
                else:
                    decoder = decoder_relevance(
                        model, grid, caption_ids, epsilon, attention, head, initial=initial
                    )
                batch, _, locations, channels = decoder.features.shape
                relevance_map = decoder.features.transpose(2, 3).reshape(
                    batch, steps, channels, *grid_size
                )  # (B, K, C, h, w)
                if replicate:
                    pixels = propagate(inputs, feature_map, relevance_map.flatten(0, 1))
                    pixels = pixels.view(batch, steps, *pixels.shape[1:])
                else:
                    pixels = propagate(inputs, feature_map, relevance_map)  # (B, K, 3, H, W)
    words = caption_ids[:, 1:]
    mask = torch.ones_like(words, dtype=torch.bool) if pad_id is None else words != pad_id
    conservation = Conservation(
        logits=decoder.total,
        features=decoder.features.sum((2, 3)),
        words=decoder.words.sum(2),
        pixels=None if pixels is None else pixels.sum((2, 3, 4)),
    )
    return Explanation(
        method="attnlrp" if attention == "attnlrp" else "lrp",
        caption_ids=caption_ids,
        words=words,
        logits=decoder.logits,
        mask=mask,
        locations=decoder.features.sum(3),
        grid_size=grid_size,
        pixels=pixels,
        heatmap=None if pixels is None else pixels.sum(2),
        word_relevance=decoder.words,
        conservation=conservation,
        extras={"feature_relevance": decoder.features}
        | ({} if decoder.start is None else {"initial_relevance": decoder.start}),
    )
