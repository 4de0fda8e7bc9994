"""LRP-inference fine-tuning (LRP-IFT) and its cross-entropy control (chapter 11).

During teacher-forced fine-tuning, for every sample and step t (book/method.md §8):

1. k = the model's own predicted word (argmax of the dropout-free logits y_t); stop words
   and special tokens get all weights 1;
2. the logit y_t[k] is explained through the output layer only, with the ε-rule of
   `captionlib.ops` (the same rules the explainers use): relevance R of the two
   readout terms (ĉ_t, h2_t) for captioner A, (â_t, h_t) for captioner B;
3. weights `w = 1 + R / max_d |R_d|` ∈ [0, 2], one vector per term (supporting dimensions
   amplified up to ×2, opposing ones shrunk towards 0), treated as constants;
4. ỹ_t = W_o (w_1 ⊙ first + w_2 ⊙ second) + b_o;
5. loss = CE(ỹ, y*) + CE(y, y*) over the non-padding ground-truth words.

The control fine-tunes with CE(y, y*) alone. Both update the decoder and the encoder, from
images. Choices this module makes (chapter 11 discusses them):

- The explanation and ỹ use the output layer without dropout (step 4 has none). So the
  LRP-IFT run draws exactly the random numbers the control run draws, and with the same
  seed both see the same batches and the same dropout masks: the comparison isolates the
  re-weighting.
- Each term is normalised by its own maximum ("separate", default): each of ĉ_t and h2_t
  gets the full range [0, 2], as step 3 reads ("for ĉ_t and h2_t"). "joint" divides both by
  the larger of the two maxima, so the term with less relevance stays closer to 1.

::

    config = FinetuneConfig(method="lrp", seed=0)
    history = finetune_captioner(model, encoder, batches, config, vocabulary=vocab)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from captionlib import ops
from captionlib.data.vocab import Vocabulary
from captionlib.models.base import Captioner, CaptionerOutput
from captionlib.models.encoder import to_grid
from captionlib.progress import progress_bar
from captionlib.train import caption_loss

METHODS = ("lrp", "control")
NORMALIZATIONS = ("separate", "joint")

# English function words: articles, pronouns, prepositions (spatial ones included: they
# relate objects but name none), conjunctions and auxiliaries. Chapter 11 prints which of
# them are in the book's vocabulary.
# fmt: off
STOP_WORDS: frozenset[str] = frozenset({
    "a", "an", "the", "this", "that", "these", "those", "there", "here", "it", "its", "they",
    "them", "their", "he", "she", "his", "her", "i", "me", "my", "we", "our", "you", "your",
    "who", "whom", "which", "what", "is", "are", "was", "were", "be", "been", "being", "am",
    "has", "have", "had", "do", "does", "did", "will", "would", "can", "could", "of", "in",
    "on", "at", "to", "for", "from", "by", "with", "without", "about", "above", "below",
    "over", "under", "across", "through", "into", "onto", "upon", "near", "next", "beside",
    "besides", "behind", "front", "between", "among", "along", "around", "against", "toward",
    "towards", "off", "up", "down", "out", "inside", "outside", "beneath", "underneath",
    "left", "right", "and", "or", "but", "nor", "so", "as", "than", "then", "while", "if",
    "because"
})
# fmt: on


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run (chapter 11).

    - method: "lrp" (LRP-IFT) or "control" (plain cross-entropy, otherwise identical).
    - epochs: passes over the batches; batch_size: images per batch; captions_per_image:
      captions drawn per image and epoch (used by `image_caption_batches`).
    - lr, encoder_lr: Adam learning rates of the decoder and of the encoder.
    - betas, grad_clip: Adam betas; gradient values are clamped to ±grad_clip (as training).
    - epsilon: the ε of the ε-rule; normalization: "separate" or "joint" (module docstring).
    - seed: data order and dropout.
    """

    method: str = "lrp"
    epochs: int = 1
    batch_size: int = 32
    captions_per_image: int = 1
    lr: float = 1e-4
    encoder_lr: float = 2e-5
    betas: tuple[float, float] = (0.8, 0.999)
    grad_clip: float = 0.1
    epsilon: float = 0.01
    normalization: str = "separate"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"FinetuneConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"FinetuneConfig.normalization must be one of {NORMALIZATIONS}, "
                f"got {self.normalization!r}"
            )
        for name in ("epochs", "batch_size", "captions_per_image"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FinetuneConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FinetuneConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.encoder_lr >= 0:
            raise ValueError(f"FinetuneConfig.encoder_lr must be >= 0, got {self.encoder_lr!r}")
        if not self.epsilon >= 0:
            raise ValueError(f"FinetuneConfig.epsilon must be >= 0, got {self.epsilon!r}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"FinetuneConfig.betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"FinetuneConfig.seed must be an int >= 0, got {self.seed!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able settings (for artifact keys and checkpoints)."""
        return asdict(self) | {"betas": list(self.betas)}


@dataclass
class FinetuneHistory:
    """Per-batch records of a run: total loss, its plain CE(y, y*) part, and per-epoch seconds.

    For the control, loss == cross_entropy; for LRP-IFT, loss = CE(ỹ) + cross_entropy.
    """

    loss: list[float] = field(default_factory=list)
    cross_entropy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stop_word_ids(vocabulary: Vocabulary, words: Iterable[str] = STOP_WORDS) -> Tensor:
    """(S,) int64 ids of the special tokens and of the stop words present in the vocabulary."""
    ids = {vocabulary.word_to_id(word) for word in words if word in vocabulary}
    ids.update(range(len(Vocabulary.SPECIALS)))
    return torch.tensor(sorted(ids), dtype=torch.long)


@contextlib.contextmanager
def dropout_disabled(model: Captioner) -> Iterator[None]:
    """Run `model.logits_from` without its output dropout (and without drawing random numbers)."""
    dropout = getattr(model, "dropout", None)
    if not isinstance(dropout, nn.Dropout):
        raise NotImplementedError(f"{type(model).__name__} has no `dropout` nn.Dropout")
    was_training = dropout.training
    dropout.train(False)
    try:
        yield
    finally:
        dropout.train(was_training)


def _check_readout(readout: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
    if readout is None:
        raise ValueError("the model returned no readout: LRP-IFT needs StepOutput.readout")
    first, second = readout
    if first.shape != second.shape:
        raise ValueError(
            f"readout terms differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}"
        )
    return first, second


def lrp_ift_weights(
    model: Captioner,
    readout: tuple[Tensor, Tensor],
    predicted_ids: Tensor | None,
    stop_ids: Tensor,
    epsilon: float = 0.01,
    normalization: str = "separate",
) -> tuple[Tensor, Tensor]:
    """The LRP-IFT weights (w_first, w_second), each shaped like the readout terms (..., D).

    readout: (first, second), e.g. (B, T−1, D) each; predicted_ids: (...) the explained word
    k per row, or None for the argmax of the dropout-free logits; stop_ids: (S,) ids whose
    rows get weight 1. The logit y[k] is explained through the output layer with ε-LRP
    (`ops.lrp_mode`): R = input × gradient after one backward for all rows at once (rows
    are independent). The weights are constants (no gradient).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    first, second = _check_readout(readout)
    with torch.enable_grad(), ops.lrp_mode(epsilon=epsilon), dropout_disabled(model):
        first_in = first.detach().requires_grad_()
        second_in = second.detach().requires_grad_()
        logits = model.logits_from(first_in, second_in)  # (..., V)
        words = logits.detach().argmax(-1) if predicted_ids is None else predicted_ids
        if words.shape != logits.shape[:-1]:
            raise ValueError(
                f"predicted_ids must have shape {tuple(logits.shape[:-1])}, "
                f"got {tuple(words.shape)}"
            )
        explained = logits.gather(-1, words.unsqueeze(-1))  # (..., 1): start relevance y[k]
        grad_first, grad_second = torch.autograd.grad(explained.sum(), (first_in, second_in))
    relevance_first = first.detach() * grad_first  # (..., D)
    relevance_second = second.detach() * grad_second
    scale_first = relevance_first.abs().amax(-1, keepdim=True)  # (..., 1)
    scale_second = relevance_second.abs().amax(-1, keepdim=True)
    if normalization == "joint":
        scale_first = scale_second = torch.maximum(scale_first, scale_second)
    keep = torch.isin(words, stop_ids.to(words.device)).unsqueeze(-1)  # (..., 1)
    weights = []
    for relevance, scale in ((relevance_first, scale_first), (relevance_second, scale_second)):
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        weight = torch.where(scale > 0, 1 + relevance / safe, torch.ones_like(relevance))
        weights.append(torch.where(keep, torch.ones_like(weight), weight))
    return weights[0], weights[1]


def reweighted_logits(
    model: Captioner, readout: tuple[Tensor, Tensor], weights: tuple[Tensor, Tensor]
) -> Tensor:
    """ỹ = W_o (w_1 ⊙ first + w_2 ⊙ second) + b_o, without dropout: (..., V)."""
    first, second = _check_readout(readout)
    with dropout_disabled(model):
        return model.logits_from(weights[0] * first, weights[1] * second)


def control_loss(output: CaptionerOutput, caption_ids: Tensor) -> Tensor:
    """The control's loss: CE(y, y*) over non-padding targets caption_ids[:, 1:]."""
    return caption_loss(output.logits, caption_ids, Vocabulary.PAD_ID)


def lrp_ift_loss(
    model: Captioner,
    output: CaptionerOutput,
    caption_ids: Tensor,
    stop_ids: Tensor,
    epsilon: float = 0.01,
    normalization: str = "separate",
) -> tuple[Tensor, Tensor]:
    """LRP-IFT loss CE(ỹ, y*) + CE(y, y*) for a teacher-forced output; returns (loss, CE(y)).

    output: `model(features, caption_ids)` with its readout (B, T−1, D) each;
    caption_ids: (B, T); stop_ids: (S,) ids whose rows keep weight 1.
    """
    readout = _check_readout(output.readout)
    weights = lrp_ift_weights(model, readout, None, stop_ids, epsilon, normalization)
    plain = control_loss(output, caption_ids)
    tilde = caption_loss(reweighted_logits(model, readout, weights), caption_ids)
    return tilde + plain, plain


def finetune_captioner(
    model: Captioner,
    encoder: nn.Module,
    batches: Callable[[int], Iterable[Mapping[str, Tensor]]],
    config: FinetuneConfig,
    progress: bool = True,
    *,
    vocabulary: Vocabulary | None = None,
    device: torch.device | None = None,
) -> FinetuneHistory:
    """Fine-tune decoder and encoder in place with LRP-IFT or the control (chapter 11).

    batches(epoch) yields dicts with `images` (M, 3, S, S) normalised floats, `caption_ids`
    (B, T) and optionally `image_rows` (B,) int64: the image row of each caption (default:
    caption i belongs to image i). The encoder's grid `to_grid(encoder(images))` feeds the
    captioner. `vocabulary` gives the stop-word ids (needed for method "lrp"). The random
    generator is seeded with config.seed, so runs that differ only in the method draw the
    same dropout masks. Adam with one learning rate per part, gradient values clamped.
    """
    if config.method == "lrp" and vocabulary is None:
        raise ValueError("finetune_captioner: method 'lrp' needs the vocabulary (stop words)")
    device = device or torch.device("cpu")
    model.to(device)
    encoder.to(device)
    stop_ids = stop_word_ids(vocabulary).to(device) if vocabulary is not None else None
    for parameter in encoder.parameters():
        parameter.requires_grad_(True)
    parameters = [*model.parameters(), *encoder.parameters()]
    optimizer = torch.optim.Adam(
        [
            {"params": list(model.parameters()), "lr": config.lr},
            {"params": list(encoder.parameters()), "lr": config.encoder_lr},
        ],
        betas=config.betas,
    )
    torch.manual_seed(config.seed)
    history = FinetuneHistory()
    for epoch in range(config.epochs):
        started = time.perf_counter()
        model.train()
        encoder.train()
        desc = f"{config.method} epoch {epoch + 1}/{config.epochs}"
        bar = progress_bar(batches(epoch), desc=desc, progress=progress)
        for batch in bar:
            images = batch["images"].to(device)
            caption_ids = batch["caption_ids"].to(device)
            grid = to_grid(encoder(images))  # (M, N, C)
            if "image_rows" in batch:
                grid = grid[batch["image_rows"].to(device)]  # (B, N, C)
            output = model(grid, caption_ids)
            if config.method == "lrp":
                loss, plain = lrp_ift_loss(
                    model, output, caption_ids, stop_ids, config.epsilon, config.normalization
                )
            else:
                loss = plain = control_loss(output, caption_ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_value_(parameters, config.grad_clip)
            optimizer.step()
            history.loss.append(float(loss.detach()))
            history.cross_entropy.append(float(plain.detach()))
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}")
        history.seconds.append(time.perf_counter() - started)
    model.eval()
    encoder.eval()
    return history


def image_caption_batches(
    images: Tensor,
    captions: Sequence[Sequence[Tensor]],
    batch_size: int,
    captions_per_image: int,
    seed: int,
    transform: Callable[[Tensor], Tensor],
) -> Callable[[int], Iterator[dict[str, Tensor]]]:
    """The batches for `finetune_captioner`: every image once per epoch (chapter 11).

    images: (num_images, 3, S, S) uint8; captions: per image, its encoded captions (each
    (T_i,) int64 with <start> … <end>); transform: uint8 batch → normalised floats. Epoch e
    shuffles the images and draws `captions_per_image` of each image's captions with a
    generator seeded by (seed, e) only, so every method sees the same batches.
    """
    if len(captions) != len(images):
        raise ValueError(f"got captions for {len(captions)} images, images has {len(images)}")
    if batch_size < 1 or captions_per_image < 1:
        raise ValueError("batch_size and captions_per_image must be >= 1")
    empty = [index for index, items in enumerate(captions) if not items]
    if empty:
        raise ValueError(f"images without captions: rows {empty[:10]}")

    def batches(epoch: int) -> Iterator[dict[str, Tensor]]:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(images), generator=generator)
        for indices in order.split(batch_size):
            chosen, rows = [], []
            for row, index in enumerate(indices.tolist()):
                own = captions[index]
                picks = torch.randperm(len(own), generator=generator)[:captions_per_image]
                chosen += [own[int(p)] for p in picks]
                rows += [row] * len(picks)
            length = max(len(c) for c in chosen)
            caption_ids = torch.full((len(chosen), length), Vocabulary.PAD_ID, dtype=torch.long)
            for i, caption in enumerate(chosen):
                caption_ids[i, : len(caption)] = caption
            yield {
                "images": transform(images[indices]),
                "caption_ids": caption_ids,  # (B, T)
                "image_rows": torch.tensor(rows, dtype=torch.long),  # (B,)
            }

    return batches
