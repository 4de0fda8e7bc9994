"""The studies of chapters 9–11 as steps of the same store: the explanation study, the
hallucination diagnosis, the fine-tuning results and the caution frontier (chapter 11's
decoding-time baselines), each driven by `RunConfig`s and keyed by the captioner keys of
`captionlib.steps` plus its own settings and version.

The book calls them through `captionlib.recipes` with its ShapeWorld configs; a COCO run
calls the same functions with its config (object words are then matched with the COCO
synonym table).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from captionlib import steps
from captionlib.artifacts import cached
from captionlib.evaluate.diagnosis import ObjectWord, diagnose, label_object_words, object_masks
from captionlib.evaluate.explanation_study import StudyConfig, run_study
from captionlib.evaluate.frontier import CAUTION_PENALTIES, caution_sweep, object_word_ids
from captionlib.evaluate.hallucination import (
    SynonymTable,
    coco_synonyms,
    ground_truth,
    hallucination_scores,
    reference_objects,
    shapeworld_synonyms,
    split_references,
)
from captionlib.evaluate.localization import image_objects
from captionlib.generate import caption_features, caption_text, decode_features
from captionlib.models.base import Captioner
from captionlib.models.decoding import VisualContrast, diffusion_noise
from captionlib.models.encoder import to_grid
from captionlib.runconfig import RunConfig
from captionlib.utils import die_with_parent, seed_everything, torch_threads

DIAGNOSIS_METHODS: dict[str, tuple[str, ...]] = {
    "adaptive": ("lrp", "attention", "gradcam", "guided_gradcam", "gradient_x_input"),
    "multihead": ("lrp", "attnlrp", "attention", "gradcam", "guided_gradcam", "gradient_x_input"),
}
DIAGNOSIS_BEAM_SIZE = 3
DIAGNOSIS_CHUNK_SIZE = 50  # images per explanation batch


def synonym_table(config: RunConfig) -> SynonymTable:
    """The object-word synonyms of the config's data set: ShapeWorld's, else COCO's."""
    return shapeworld_synonyms() if config.data.dataset == "shapeworld" else coco_synonyms()


def split_images(config: RunConfig, split: str) -> Tensor:
    """The split's images as uint8 (num_images, 3, S, S) at the encoder's image size."""
    data = steps.load_data(config, progress=False)
    return steps.load_images(steps.split_of(data, split), config.encoder.image_size)


# --- chapter 9: evaluating explanations ---------------------------------------------------------


def explanation_study(
    config: RunConfig, split: str, images: int, progress: bool = True
) -> dict[str, Any]:
    """Build-or-load chapter 9's localisation and ablation study of every explanation method
    for the config's captioner on the first `images` images of `split`.

    Returns `captionlib.evaluate.explanation_study.run_study`'s JSON-serialisable result
    (per-item values; read back with that module's `localization_summaries`, `image_drops`,
    `vanished`, `word_drops`).
    """
    study = StudyConfig(max_length=config.training.max_length)
    key = {
        **steps.captioner_key(config),
        "explanation_study": study.key(),
        "split": split,
        "images": images,
    }

    def build(folder: Path) -> None:
        trained = steps.captioner(config, progress=progress)
        encoder = steps.encoder(config, progress=progress).encoder
        images_split = steps.split_of(steps.load_data(config, progress), split)
        count = min(images, len(images_split))
        image_ids = images_split.image_ids[:count]
        annotations = [image_objects(images_split, image_id) for image_id in image_ids]
        seed_everything(study.seed)
        result = run_study(
            trained.model,
            encoder,
            split_images(config, split)[:count],
            image_ids,
            annotations,
            trained.vocabulary,
            synonym_table(config).category_of,
            study,
            prepare=steps.normalize,
            progress=progress,
        )
        (folder / "result.json").write_text(json.dumps(result))

    folder = cached(f"explanations-{config.captioner.kind}-{split}", key, build)
    return json.loads((folder / "result.json").read_text())


# --- chapter 10: debugging hallucinations -------------------------------------------------------


@dataclass
class HallucinationDiagnosis:
    """A captioner's hallucinations on a split and the statistics of every object word's
    explanation (chapter 10).

    captions: image id → beam-3 caption; token_ids: image id → its decoded word ids;
    scores: `hallucination_scores` (precision, recall, F1, CHAIRi, CHAIRs); words: every
    object word, labelled; statistics: method → statistic → one value per word (NaN where
    undefined); seconds, cpu_seconds: the build's wall-clock and CPU time (the CPU time
    of all threads: on a shared machine the wall-clock time also counts waiting).
    """

    kind: str
    split_name: str
    captions: dict[int, str]
    token_ids: dict[int, list[int]]
    scores: dict[str, float]
    words: list[ObjectWord]
    statistics: dict[str, dict[str, np.ndarray]]
    seconds: float
    cpu_seconds: float
    folder: Path


def diagnosis(config: RunConfig, split: str, progress: bool = True) -> HallucinationDiagnosis:
    """Build-or-load chapter 10's diagnosis of the config's captioner on `split`: its beam-3
    captions, their hallucination scores, and the explanation statistics of every object
    word for each method of DIAGNOSIS_METHODS."""
    kind = config.captioner.kind
    synonyms = synonym_table(config)
    settings = {
        "beam_size": DIAGNOSIS_BEAM_SIZE,
        "chunk_size": DIAGNOSIS_CHUNK_SIZE,
        "synonyms": config.data.dataset if config.data.dataset == "shapeworld" else "coco",
        "version": steps.STEP_VERSIONS["diagnosis"],
    }
    key = {
        **steps.captioner_key(config),
        "diagnosis": {**settings, "split": split, "methods": DIAGNOSIS_METHODS[kind]},
    }

    def build(folder: Path) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        trained = steps.captioner(config, progress=progress)
        images_split = steps.split_of(steps.load_data(config, progress), split)
        features = steps.split_features(config, split, progress=progress).to_tensor()
        decoded = decode_features(
            trained.model,
            features,
            trained.vocabulary,
            beam_size=DIAGNOSIS_BEAM_SIZE,
            max_length=config.training.max_length,
        )
        captions = {
            image_id: caption_text(caption, trained.vocabulary)
            for image_id, caption in zip(images_split.image_ids, decoded, strict=True)
        }
        words = label_object_words(
            captions,
            ground_truth(images_split, synonyms),
            reference_objects(split_references(images_split), synonyms),
            synonyms,
        )
        statistics = diagnose(
            trained.model,
            steps.encoder(config, progress=progress).encoder,
            steps.normalize(split_images(config, split)),
            [caption.token_ids for caption in decoded],
            words,
            {image_id: index for index, image_id in enumerate(images_split.image_ids)},
            DIAGNOSIS_METHODS[kind],
            masks={word.image_id: object_masks(images_split, word.image_id) for word in words},
            chunk_size=DIAGNOSIS_CHUNK_SIZE,
            progress=progress,
        )
        payload = {
            "captions": captions,
            "token_ids": {
                image_id: list(caption.token_ids)
                for image_id, caption in zip(images_split.image_ids, decoded, strict=True)
            },
            "scores": hallucination_scores(captions, images_split, synonyms),
            "words": [asdict(word) for word in words],
            "statistics": {
                method: {name: values.tolist() for name, values in stats.items()}
                for method, stats in statistics.items()
            },
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
        }
        (folder / "diagnosis.json").write_text(json.dumps(payload))

    folder = cached(f"diagnosis-{kind}-{split}", key, build)
    payload = json.loads((folder / "diagnosis.json").read_text())
    return HallucinationDiagnosis(
        kind=kind,
        split_name=split,
        captions={int(i): text for i, text in payload["captions"].items()},
        token_ids={int(i): ids for i, ids in payload["token_ids"].items()},
        scores=payload["scores"],
        words=[ObjectWord(**word) for word in payload["words"]],
        statistics={
            method: {name: np.asarray(values, dtype=np.float64) for name, values in stats.items()}
            for method, stats in payload["statistics"].items()
        },
        seconds=float(payload["seconds"]),
        cpu_seconds=float(payload["cpu_seconds"]),
        folder=folder,
    )


# --- chapter 11: LRP-inference fine-tuning ------------------------------------------------------

FINETUNE_STAGES = ("before", "control", "lrp")
FINETUNE_BEAM_SIZE = 3


@torch.no_grad()
def grid_features(encoder: nn.Module, images_uint8: Tensor) -> Tensor:
    """Encoder grid features (num_images, N, C) of uint8 images in memory, in batches of 128
    (for an encoder that fine-tuning changed; the frozen encoder's are stored)."""
    encoder.eval()
    return torch.cat(
        [to_grid(encoder(steps.normalize(chunk))) for chunk in images_uint8.split(128)]
    )


def caption_with(
    config: RunConfig,
    model: Captioner,
    encoder: nn.Module,
    split: str,
    beam_size: int = FINETUNE_BEAM_SIZE,
) -> dict[int, str]:
    """image id → beam-search caption of every image of `split`, features from `encoder`."""
    data = steps.load_data(config, progress=False)
    features = grid_features(encoder, split_images(config, split))
    return caption_features(
        model,
        features,
        steps.split_of(data, split).image_ids,
        data.vocabulary,
        beam_size,
        config.training.max_length,
    )


def finetune_scores(config: RunConfig, captions: dict[int, str], split: str) -> dict[str, float]:
    """BLEU-4, CIDEr-D (simple tokenizer) and the hallucination scores of a split's captions."""
    images_split = steps.split_of(steps.load_data(config, progress=False), split)
    metrics = steps.score_split(
        config, captions, split, metrics=("BLEU", "CIDEr"), tokenizer="simple"
    )
    return {
        "BLEU-4": metrics["BLEU-4"],
        "CIDEr-D": metrics["CIDEr"],
        **hallucination_scores(captions, images_split, synonym_table(config)),
    }


@dataclass
class FinetuningResults:
    """Chapter 11's measurements, all from the store.

    scores[kind][stage][split]: one dict of metrics per seed (for "before", the seed's
    cross-entropy checkpoint); captions the same way (image id → caption);
    seconds[kind][method]: fine-tuning seconds per seed.
    """

    scores: dict[str, dict[str, dict[str, list[dict[str, float]]]]]
    captions: dict[str, dict[str, dict[str, list[dict[int, str]]]]]
    seconds: dict[str, dict[str, list[float]]]
    seeds: tuple[int, ...]
    folder: Path


def finetuning_results(
    configs: Mapping[str, Sequence[RunConfig]],
    seeds: Sequence[int],
    splits: Sequence[str],
    processes: int = 2,
    progress: bool = True,
) -> FinetuningResults:
    """Build-or-load before / control / LRP-IFT scores of each captioner (name → one config
    per seed: the i-th config's cross-entropy captioner, fine-tuned with seeds[i]) on
    `splits` (beam 3; chapter 11). Missing cross-entropy captioners are trained first, side
    by side in `processes` workers (`steps.captioners`). The configs share their fine-tuning
    settings; the results are versioned with the fine-tuning step."""
    seeded_configs = [config for seeded in configs.values() for config in seeded]
    first = seeded_configs[0]
    if any(config.finetune != first.finetune for config in seeded_configs):
        raise ValueError("the captioners' configs must share their finetune settings")
    for name, seeded in configs.items():
        if len(seeded) != len(seeds):
            raise ValueError(f"configs[{name!r}] has {len(seeded)} configs for {len(seeds)} seeds")
    key = {
        "captioners": {
            name: [steps.captioner_key(config) for config in seeded]
            for name, seeded in configs.items()
        },
        "finetune": first.finetune.as_dict(),
        "finetune_version": steps.STEP_VERSIONS["finetuned"],
        "seeds": list(seeds),
        "splits": list(splits),
        "beam_size": FINETUNE_BEAM_SIZE,
    }

    def build(folder: Path) -> None:
        trained = iter(steps.captioners(seeded_configs, processes, progress))
        scores: dict[str, Any] = {}
        captions: dict[str, Any] = {}
        seconds: dict[str, Any] = {}
        for name, seeded in configs.items():
            runs: dict[str, list[tuple[Captioner, nn.Module]]] = {}
            runs["before"] = [
                (next(trained).model, steps.encoder(config, progress=progress).encoder)
                for config in seeded
            ]
            seconds[name] = {}
            for method in FINETUNE_STAGES[1:]:
                tuned = [
                    steps.finetuned(config, method, seed, progress)
                    for config, seed in zip(seeded, seeds, strict=True)
                ]
                runs[method] = [(run.model, run.encoder) for run in tuned]
                seconds[name][method] = [sum(run.history.seconds) for run in tuned]
            scores[name], captions[name] = {}, {}
            for stage, models in runs.items():
                scores[name][stage] = {split: [] for split in splits}
                captions[name][stage] = {split: [] for split in splits}
                for (model, model_encoder), config in zip(models, seeded, strict=True):
                    for split in splits:
                        texts = caption_with(config, model, model_encoder, split)
                        captions[name][stage][split].append(texts)
                        scores[name][stage][split].append(finetune_scores(config, texts, split))
        payload = {"scores": scores, "captions": captions, "seconds": seconds}
        (folder / "results.json").write_text(json.dumps(payload))

    folder = cached("finetune-results", key, build)
    payload = json.loads((folder / "results.json").read_text())
    captions = {
        name: {
            stage: {
                split: [{int(i): text for i, text in run.items()} for run in runs]
                for split, runs in by_split.items()
            }
            for stage, by_split in stages.items()
        }
        for name, stages in payload["captions"].items()
    }
    return FinetuningResults(payload["scores"], captions, payload["seconds"], tuple(seeds), folder)


# --- chapter 11: the caution frontier and visual contrastive decoding ---------------------------

FRONTIER_STAGES = ("before", "control")  # the checkpoints the caution knob is swept on


@dataclass(frozen=True)
class ContrastSettings:
    """Visual contrastive decoding's settings (Leng et al., 2024): the contrast weight α,
    the plausibility ratio β and the diffusion step of the distorted copy; the noise is
    drawn with `noise_seed` (in `caution_frontier`, seed s draws its own with
    noise_seed + s)."""

    alpha: float = 1.0
    beta: float = 0.1
    noise_step: int = 500
    noise_seed: int = 0


@torch.no_grad()
def contrast_features(
    encoder: nn.Module, images_uint8: Tensor, settings: ContrastSettings
) -> Tensor:
    """Encoder grid features (num_images, N, C) of the diffusion-noised copies of uint8
    images (`captionlib.models.decoding.diffusion_noise` at `settings.noise_step`), in
    batches of 128; the same noise for every call with the same settings."""
    encoder.eval()
    generator = torch.Generator().manual_seed(settings.noise_seed)
    noised = diffusion_noise(images_uint8.float() / 255.0, settings.noise_step, generator)
    # normalize divides by 255: the noised copy is passed on the uint8 scale, unclipped
    return torch.cat(
        [to_grid(encoder(steps.normalize(chunk * 255.0))) for chunk in noised.split(128)]
    )


@dataclass
class FrontierStudy:
    """Chapter 11's caution sweeps and contrastive-decoding points, all from the store.

    sweeps[kind][stage][split]: per seed, one metrics dict per λ of `penalties` (stage in
    FRONTIER_STAGES); contrast[kind][split]: per seed, the metrics of visual contrastive
    decoding on that seed's cross-entropy checkpoint.
    """

    sweeps: dict[str, dict[str, dict[str, list[list[dict[str, float]]]]]]
    contrast: dict[str, dict[str, list[dict[str, float]]]]
    penalties: tuple[float, ...]
    settings: ContrastSettings
    seeds: tuple[int, ...]
    folder: Path


def _checkpoint(config: RunConfig, stage: str, seed: int) -> tuple[Captioner, nn.Module]:
    """The captioner and encoder of one frontier checkpoint: the cross-entropy captioner with
    the frozen encoder ("before") or the control fine-tuned with `seed`."""
    if stage == "before":
        model = steps.captioner(config, progress=False).model
        return model, steps.encoder(config, progress=False).encoder
    control = steps.finetuned(config, "control", seed, progress=False)
    return control.model, control.encoder


def _frontier_task(
    config: RunConfig,
    stage: str,
    seed: int,
    split: str,
    penalties: tuple[float, ...],
    settings: ContrastSettings | None,
) -> list[dict[str, float]]:
    """One checkpoint's caution sweep of a split (`settings` None), or its visual contrastive
    decoding point (a list of one). Features and decoding use one thread, in this process
    or a worker, so the numbers do not depend on the number of workers."""
    with torch_threads(1):
        data = steps.load_data(config, progress=False)
        image_ids = steps.split_of(data, split).image_ids
        images = split_images(config, split)
        model, encoder = _checkpoint(config, stage, seed)
        features = grid_features(encoder, images)
        score = partial(finetune_scores, config, split=split)
        if settings is None:
            words = object_word_ids(data.vocabulary, synonym_table(config).category_of)
            return caution_sweep(
                model,
                features,
                image_ids,
                data.vocabulary,
                words,
                score,
                penalties,
                FINETUNE_BEAM_SIZE,
                config.training.max_length,
            )
        contrast = VisualContrast(
            contrast_features(
                encoder, images, replace(settings, noise_seed=settings.noise_seed + seed)
            ),
            settings.alpha,
            settings.beta,
        )
        captions = caption_features(
            model,
            features,
            image_ids,
            data.vocabulary,
            FINETUNE_BEAM_SIZE,
            config.training.max_length,
            contrast=contrast,
        )
        return [score(captions)]


def caution_frontier(
    configs: Mapping[str, Sequence[RunConfig]],
    seeds: Sequence[int],
    splits: Sequence[str],
    penalties: Sequence[float] = CAUTION_PENALTIES,
    settings: ContrastSettings = ContrastSettings(),
    processes: int = 2,
    progress: bool = True,
) -> FrontierStudy:
    """Build-or-load the caution sweeps (object-word logits lowered by each λ of
    `penalties`) of the cross-entropy checkpoint and the control of each captioner
    (name → one config per seed, the i-th config's captioner fine-tuned with seeds[i]), and
    visual contrastive decoding on the cross-entropy checkpoint (seed s with its own noise
    draw, `ContrastSettings.noise_seed` + s), on `splits` (beam 3).

    A checkpoint listed for several seeds (the same config given for each) is decoded once.
    The decodes run in `processes` forked worker processes of one thread each on Linux
    (speed only: the numbers are the same for any count); with 1, or on other systems,
    they run in this process."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    for name, seeded in configs.items():
        if len(seeded) != len(seeds):
            raise ValueError(f"configs[{name!r}] has {len(seeded)} configs for {len(seeds)} seeds")
    key = {
        "captioners": {
            name: [steps.captioner_key(config) for config in seeded]
            for name, seeded in configs.items()
        },
        "controls": {
            name: [
                steps.finetune_key(config, steps.finetune_settings(config, "control", seed))
                for config, seed in zip(seeded, seeds, strict=True)
            ]
            for name, seeded in configs.items()
        },
        "seeds": list(seeds),
        "splits": list(splits),
        "penalties": [float(penalty) for penalty in penalties],
        "contrast": asdict(settings),
        "beam_size": FINETUNE_BEAM_SIZE,
        "version": steps.STEP_VERSIONS["frontier"],
    }
    lambdas = tuple(float(penalty) for penalty in penalties)

    def build(folder: Path) -> None:
        # every distinct (checkpoint, split, sweep or contrast) once, identified by its keys
        checkpoints = [config for seeded in configs.values() for config in seeded]
        steps.captioners(checkpoints, processes, progress)
        tasks: dict[str, tuple] = {}
        slots: list[tuple[str, str, str, str]] = []  # (name, stage or "contrast", split, task)
        for name, seeded in configs.items():
            for config, seed in zip(seeded, seeds, strict=True):
                steps.finetuned(config, "control", seed, progress)  # built here, read by workers
                checkpoints = {
                    "before": steps.captioner_key(config),
                    "control": steps.finetune_key(
                        config, steps.finetune_settings(config, "control", seed)
                    ),
                }
                for split in splits:
                    jobs = [(stage, stage, None) for stage in FRONTIER_STAGES]
                    jobs.append(("contrast", "before", settings))
                    for slot, stage, contrast in jobs:
                        # a contrast point per seed: each seed draws its own noise
                        drawn = seed if slot == "contrast" else None
                        task = json.dumps([checkpoints[stage], split, slot, drawn], sort_keys=True)
                        tasks.setdefault(task, (config, stage, seed, split, lambdas, contrast))
                        slots.append((name, slot, split, task))
        if processes == 1 or sys.platform != "linux":
            results = [_frontier_task(*arguments) for arguments in tasks.values()]
        else:  # forked workers: nothing re-imports the caller's script (as spawn would)
            with ProcessPoolExecutor(
                processes, mp_context=get_context("fork"), initializer=die_with_parent
            ) as pool:
                futures = [pool.submit(_frontier_task, *arguments) for arguments in tasks.values()]
                results = [future.result() for future in futures]
        done = dict(zip(tasks, results, strict=True))
        sweeps: dict[str, Any] = {
            name: {stage: {split: [] for split in splits} for stage in FRONTIER_STAGES}
            for name in configs
        }
        contrast_points: dict[str, Any] = {
            name: {split: [] for split in splits} for name in configs
        }
        for name, slot, split, task in slots:
            if slot == "contrast":
                contrast_points[name][split].append(done[task][0])
            else:
                sweeps[name][slot][split].append(done[task])
        payload = {"sweeps": sweeps, "contrast": contrast_points}
        (folder / "frontier.json").write_text(json.dumps(payload))

    folder = cached("caution-frontier", key, build)
    payload = json.loads((folder / "frontier.json").read_text())
    return FrontierStudy(
        payload["sweeps"],
        payload["contrast"],
        tuple(float(penalty) for penalty in penalties),
        settings,
        tuple(seeds),
        folder,
    )
