"""Training loops: encoder pretraining and captioner training (chapters 2–3).

Captioners train with teacher forcing on cached encoder features (the encoder is frozen, as in
the paper), with Adam, gradient values clamped, validation CIDEr after every epoch, model
selection on it, and the learning rate multiplied by 0.8 after `patience` epochs without gain
(book/method.md §4). A run can checkpoint every epoch and resume from the last checkpoint.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from captionlib.checkpoints import load_checkpoint, save_checkpoint
from captionlib.progress import progress_bar


@dataclass(frozen=True)
class CaptionTrainConfig:
    """Optimisation settings of captioner training (book/method.md §4 values where they apply)."""

    epochs: int = 8
    batch_size: int = 64
    lr: float = 5e-4
    betas: tuple[float, float] = (0.8, 0.999)
    grad_clip: float = 0.1
    lr_decay: float = 0.8
    patience: int = 2
    val_beam_size: int = 3
    max_length: int = 20
    seed: int = 0
    # PyTorch threads of training on the CPU (applied by steps.captioner): the summation
    # order, hence the weights, depend on it, so it is a setting and part of the captioner's
    # key, not the machine's default
    threads: int = 1

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "val_beam_size",
            "max_length",
            "patience",
            "threads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"CaptionTrainConfig.{name} must be >= 1")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("CaptionTrainConfig.lr and grad_clip must be positive")


@dataclass
class TrainHistory:
    """Per-epoch records: training loss, validation score, learning rate, seconds."""

    train_loss: list[float] = field(default_factory=list)
    val_score: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def caption_loss(logits: Tensor, caption_ids: Tensor, pad_id: int = 0) -> Tensor:
    """Cross-entropy of logits (B, T-1, V) against caption_ids[:, 1:], padding ignored."""
    targets = caption_ids[:, 1:]
    return functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id
    )


def _rng_state() -> dict[str, Any]:
    """PyTorch's CPU and CUDA generator states (dropout draws from them)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_captioner(
    model: nn.Module,
    batches: Callable[[int], Iterable[Mapping[str, Tensor]]],
    validate: Callable[[nn.Module], float],
    config: CaptionTrainConfig,
    checkpoint_path: Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    training_module: nn.Module | None = None,
    is_main: bool = True,
) -> TrainHistory:
    """Train `model` in place; on return it holds the weights of the best validation epoch.

    batches(epoch) yields dicts with `features` (B, N, C) and `caption_ids` (B, T);
    validate(model) returns the selection score (validation CIDEr-D in the book).
    With `checkpoint_path`, the state after each epoch (weights, optimizer, history and the
    random generators' states) is saved there and a run resumes from it, computing what the
    uninterrupted run would have computed.

    Distributed training (chapter 12): `training_module` runs the training forward instead of
    `model` (a DistributedDataParallel wrapper of `model`, already on `device`), and only the
    process with `is_main` writes checkpoints. `train_loss` is then this process's share.
    """
    device = device or torch.device("cpu")
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    history = TrainHistory()
    best_state = copy.deepcopy(model.state_dict())
    best_score = float("-inf")
    start_epoch = 0
    epochs_without_gain = 0
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        resumed = load_checkpoint(checkpoint_path)
        model.load_state_dict(resumed["state_dict"])
        extra = resumed["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        history = TrainHistory(**extra["history"])
        best_state = extra["best_state"]
        best_score = max(history.val_score) if history.val_score else float("-inf")
        start_epoch = len(history.train_loss)
        epochs_without_gain = int(extra.get("epochs_without_gain", 0))
        _set_rng_state(extra["rng"])
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        runner = training_module if training_module is not None else model
        runner.train()
        total, count = 0.0, 0
        desc = f"epoch {epoch + 1}/{config.epochs}"
        bar = progress_bar(batches(epoch), desc=desc, progress=progress)
        for batch in bar:
            features = batch["features"].to(device)
            caption_ids = batch["caption_ids"].to(device)
            output = runner(features, caption_ids)
            loss = caption_loss(output.logits, caption_ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
            optimizer.step()
            total += loss.item() * caption_ids.shape[0]
            count += caption_ids.shape[0]
            bar.set_postfix(loss=f"{total / count:.3f}")
        model.eval()
        score = float(validate(model))
        history.train_loss.append(total / max(count, 1))
        history.val_score.append(score)
        history.lr.append(optimizer.param_groups[0]["lr"])
        history.seconds.append(time.perf_counter() - started)
        if score > best_score:
            best_score, history.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
            if epochs_without_gain >= config.patience:
                for group in optimizer.param_groups:
                    group["lr"] *= config.lr_decay
                epochs_without_gain = 0
        if checkpoint_path is not None and is_main:
            save_checkpoint(
                checkpoint_path,
                model.state_dict(),
                config=asdict(config),
                extra={
                    "optimizer": optimizer.state_dict(),
                    "history": history.as_dict(),
                    "best_state": best_state,
                    "epochs_without_gain": epochs_without_gain,
                    "rng": _rng_state(),
                },
            )
    model.load_state_dict(best_state)
    model.eval()
    return history


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Settings of the encoder's multi-label pretraining (our "ImageNet", chapter 2)."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def pretrain_encoder(
    encoder: nn.Module,
    head: nn.Module,
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    evaluate: Callable[[nn.Module, nn.Module], float],
    config: EncoderTrainConfig,
    device: torch.device | None = None,
    progress: bool = True,
) -> TrainHistory:
    """Train encoder + multi-label head with binary cross-entropy on (images, labels) batches.

    evaluate(encoder, head) returns a validation score (mean average precision in the book).
    """
    device = device or torch.device("cpu")
    encoder.to(device)
    head.to(device)
    parameters = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    history = TrainHistory()
    for epoch in range(config.epochs):
        started = time.perf_counter()
        encoder.train()
        head.train()
        total, count = 0.0, 0
        desc = f"epoch {epoch + 1}/{config.epochs}"
        bar = progress_bar(batches(epoch), desc=desc, progress=progress)
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device)
            loss = functional.binary_cross_entropy_with_logits(head(encoder(images)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * images.shape[0]
            count += images.shape[0]
            bar.set_postfix(loss=f"{total / count:.3f}")
        encoder.eval()
        head.eval()
        history.train_loss.append(total / max(count, 1))
        history.val_score.append(float(evaluate(encoder, head)))
        history.lr.append(config.lr)
        history.seconds.append(time.perf_counter() - started)
    history.best_epoch = len(history.val_score) - 1
    return history
