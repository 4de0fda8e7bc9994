"""What `python -m captionlib` runs: every command calls the steps of `captionlib.steps` (the
same functions the chapters call through `captionlib.recipes`) and keeps a run folder that
is a view onto the artifact store, not a second store (chapter 12)::

    run_dir/run.json                       the resolved config and the artifacts it used
    run_dir/encoder, captioner             links to their artifact folders in the store
    run_dir/finetuned-<method>             link to the fine-tuned captioner and encoder
    run_dir/evaluation-<stage>-<split>     link to an evaluation (evaluation.json); the stage
                                           is "trained" or "finetuned-<method>"
    run_dir/explanations-<stage>-<split>   link to explanations.pt and explanation.png

Every artifact is keyed by what it was computed from, so a second `finetune` with other
settings points `finetuned-<method>` at a new artifact and drops the links to the previous
run's evaluations. In a distributed run (`captionlib.distributed`) rank 0 prepares data,
encoder and features while the other processes wait; all of them train the captioner.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import nn

from captionlib import steps
from captionlib.artifacts import artifact_path, atomic_write_bytes, cached, is_complete
from captionlib.distributed import DistContext
from captionlib.explain.api import explain
from captionlib.finetune import FinetuneHistory
from captionlib.generate import caption_features
from captionlib.models.base import Captioner
from captionlib.runconfig import RunConfig
from captionlib.train import TrainHistory
from captionlib.viz.relevance import relevance_grid

STAGES = ("trained", "finetuned")
VIEW_VERSION = 1  # of the evaluation and explanation artifacts made here


def _record(config: RunConfig, links: dict[str, Path]) -> None:
    """Point run_dir/<name> at each artifact (atomically) and record them in run.json."""
    folder = config.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.json"
    record = json.loads(path.read_text()) if path.is_file() else {"artifacts": {}}
    for name, target in links.items():
        link = folder / name
        tmp = folder / f".{name}.{os.getpid()}.link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.resolve(), target_is_directory=True)
        os.replace(tmp, link)
        record["artifacts"][name] = str(target.resolve())
    record["config"] = json.loads(json.dumps(asdict(config)))
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())


def _drop_views_of(config: RunConfig, label: str) -> None:
    """Remove the evaluation and explanation links of the stage `label` (its models
    changed)."""
    folder = config.run_dir
    path = folder / "run.json"
    record = json.loads(path.read_text()) if path.is_file() else {"artifacts": {}}
    for prefix in (f"evaluation-{label}-", f"explanations-{label}-"):
        for link in folder.glob(f"{prefix}*"):
            link.unlink()
            record["artifacts"].pop(link.name, None)
    if path.is_file():
        atomic_write_bytes(path, json.dumps(record, indent=1).encode())


def prepare_data(config: RunConfig, progress: bool = True) -> Path:
    """Generate ShapeWorld, or bring a real data set into the book's form (in the store)."""
    folder = steps.prepared_folder(config, progress)
    _record(config, {"data": folder})
    return folder


def train(
    config: RunConfig, context: DistContext | None = None, progress: bool = True
) -> TrainHistory:
    """Build-or-load the run's encoder, features and captioner (`steps.captioner`)."""
    context = context or steps.single_process(config)
    trained = steps.captioner(config, context, progress)
    if context.is_main:
        encoder_folder = steps.encoder(config, steps.single_process(config), False).folder
        _record(config, {"encoder": encoder_folder, "captioner": trained.folder})
    return trained.history


def stage_label(config: RunConfig, stage: str) -> str:
    """ "trained", or "finetuned-<method>" for the config's fine-tuning method."""
    return stage if stage == "trained" else f"finetuned-{config.finetune.method}"


def _stage_models(
    config: RunConfig, stage: str, progress: bool
) -> tuple[Captioner, nn.Module, dict[str, Any], Any]:
    """(captioner, encoder, artifact key, features of a split) of the trained or fine-tuned
    stage; the fine-tuned stage must have been built by `finetune` first."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "trained":
        if not is_complete(artifact_path("captioner", steps.captioner_key(config))):
            raise FileNotFoundError(
                f"no trained captioner for {config.name}: run `python -m captionlib train` first"
            )
        trained = steps.captioner(config, progress=progress)
        encoder = steps.encoder(config, progress=progress).encoder

        def features(split: str):
            return steps.split_features(config, split, progress=progress)

        return trained.model, encoder, trained.key, features
    key = steps.finetune_key(config, steps.finetune_settings(config))
    if not is_complete(artifact_path("finetuned", key)):
        raise FileNotFoundError(
            f"no {config.finetune.method} fine-tuning with these settings for {config.name}: "
            "run `python -m captionlib finetune` first"
        )
    tuned = steps.finetuned(config, progress=progress)

    def tuned_features(split: str):
        return steps.finetuned_features(config, tuned, split, progress)

    return tuned.model, tuned.encoder, tuned.key, tuned_features


def evaluate(
    config: RunConfig, split: str | None = None, stage: str = "trained", progress: bool = True
) -> dict[str, Any]:
    """Caption a split with beam search and score it (an artifact: evaluation.json)."""
    name = split or config.evaluation.split
    steps.split_of(steps.load_data(config, progress), name)
    model, _, model_key, features = _stage_models(config, stage, progress)
    section = config.evaluation
    key = {"model": model_key, "split": name, "evaluation": asdict(section)}
    key |= {"version": VIEW_VERSION}

    def build(folder: Path) -> None:
        store = features(name)
        vocabulary = steps.load_data(config, False).vocabulary
        model.to(steps.single_process(config).device)
        captions = caption_features(
            model, store, store.image_ids, vocabulary, section.beam_size, section.max_length
        )
        scores = steps.score_split(config, captions, name)
        result = {"split": name, "stage": stage, "scores": scores, "captions": captions}
        (folder / "evaluation.json").write_text(json.dumps(result, indent=1))

    folder = cached("evaluation", key, build)
    _record(config, {f"evaluation-{stage_label(config, stage)}-{name}": folder})
    result = json.loads((folder / "evaluation.json").read_text())
    result["captions"] = {int(i): text for i, text in result["captions"].items()}
    result["file"] = str(folder / "evaluation.json")
    return result


def explain_images(
    config: RunConfig,
    split: str | None = None,
    count: int | None = None,
    stage: str = "trained",
    progress: bool = True,
) -> dict[str, Any]:
    """Explain every word of the model's own captions of the split's first images (an
    artifact: explanations.pt with caption ids, per-word heatmaps (B, K, H, W) and word
    relevance (B, K, K); explanation.png with the first image's words)."""
    section = config.explain
    name = split or section.split
    data = steps.load_data(config, progress)
    images_split = steps.split_of(data, name)
    count = min(count or section.images, len(images_split))
    model, encoder, model_key, _ = _stage_models(config, stage, progress)
    key = {"model": model_key, "split": name, "images": count, "explain": asdict(section)}
    key |= {"version": VIEW_VERSION}
    summary: dict[str, Any] = {}

    def build(folder: Path) -> None:
        device = steps.single_process(config).device
        model.to(device)
        encoder.to(device)
        batch = next(iter(steps.image_loader(config, images_split, count)))
        images = batch["image"]  # (B, 3, S, S) normalised
        started = time.perf_counter()
        explanation = explain(
            model,
            encoder,
            images,
            method=section.method,
            beam_size=section.beam_size,
            max_length=section.max_length,
        )
        seconds = time.perf_counter() - started
        vocab = data.vocabulary
        words = [
            [vocab.id_to_word(int(i)) for i, keep in zip(row, mask, strict=True) if keep]
            for row, mask in zip(explanation.words, explanation.mask, strict=True)
        ]
        heatmap = explanation.heatmap
        relevance = explanation.word_relevance
        payload = {
            "method": explanation.method,
            "image_ids": batch["image_id"],
            "caption_ids": explanation.caption_ids.cpu(),
            "mask": explanation.mask.cpu(),
            "heatmap": heatmap.detach().cpu() if heatmap is not None else None,
            "word_relevance": relevance.detach().cpu() if relevance is not None else None,
        }
        torch.save(payload, folder / "explanations.pt")
        if heatmap is not None:
            figure = relevance_grid(
                images[0], words[0], heatmap[0, : len(words[0])].detach().cpu(), normalized=True
            )
            figure.savefig(folder / "explanation.png", dpi=80)
            plt.close(figure)
        image_ids = [int(i) for i in batch["image_id"]]
        summary.update(
            {
                "split": name,
                "method": explanation.method,
                "captions": {i: " ".join(w) for i, w in zip(image_ids, words, strict=True)},
                "seconds": seconds,
                "words": sum(len(w) for w in words),
            }
        )
        (folder / "summary.json").write_text(json.dumps(summary, indent=1))

    folder = cached("explanations", key, build)
    _record(config, {f"explanations-{stage_label(config, stage)}-{name}": folder})
    result = json.loads((folder / "summary.json").read_text())
    figure = folder / "explanation.png"
    result["file"] = str(folder / "explanations.pt")
    result["figure"] = str(figure) if figure.is_file() else None
    return result


def finetune(config: RunConfig, progress: bool = True) -> FinetuneHistory:
    """LRP-inference fine-tuning (or its control, finetune.method) of the trained captioner and
    its encoder, from images (`steps.finetuned`)."""
    if not is_complete(artifact_path("captioner", steps.captioner_key(config))):
        raise FileNotFoundError(
            f"no trained captioner for {config.name}: run `python -m captionlib train` first"
        )
    tuned = steps.finetuned(config, progress=progress)
    name = f"finetuned-{config.finetune.method}"
    previous = config.run_dir / name
    if previous.is_symlink() and previous.resolve() != tuned.folder.resolve():
        _drop_views_of(config, name)
    _record(config, {name: tuned.folder})
    return tuned.history
