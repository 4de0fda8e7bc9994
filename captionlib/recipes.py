"""The book's data, encoder and captioners, build once and then load (chapters 1–4, 9–11).

A facade over `captionlib.steps` with the book's settings, which live in one place: the
packaged configs shapeworld_adaptive.yaml (captioner A) and shapeworld_multihead.yaml
(captioner B). The first call trains and stores an artifact under data/cache/, later calls
(later chapters, `python -m captionlib train --config shapeworld_adaptive`) load it.
Chapters 9–11's studies (explanation evaluation, hallucination diagnosis, fine-tuning
results) are stored the same way, keyed by the captioners they measure.

::

    splits = recipes.shapeworld_splits()
    encoder = recipes.pretrained_encoder()
    captioner = recipes.trained_captioner("adaptive")
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from captionlib import steps
from captionlib.artifacts import cached
from captionlib.data.coco import CocoSplit
from captionlib.data.shapeworld import object_words
from captionlib.data.vocab import Vocabulary
from captionlib.evaluate.diagnosis import ObjectWord, diagnose, label_object_words, object_masks
from captionlib.evaluate.explanation_study import StudyConfig, run_study
from captionlib.evaluate.hallucination import (
    ground_truth,
    hallucination_scores,
    reference_objects,
    shapeworld_synonyms,
    split_references,
)
from captionlib.evaluate.localization import image_objects
from captionlib.evaluate.objects import ObjectMentionReport, absent_object_mentions
from captionlib.finetune import FinetuneConfig
from captionlib.generate import caption_features, caption_text, decode_features
from captionlib.models.base import Captioner
from captionlib.models.decoding import DecodedCaption
from captionlib.models.encoder import SmallVGG, to_grid
from captionlib.runconfig import RunConfig, load_run_config
from captionlib.steps import FinetunedCaptioner, PretrainedEncoder, TrainedCaptioner, normalize
from captionlib.steps import classify as classify
from captionlib.steps import multilabel_targets as multilabel_targets
from captionlib.utils import seed_everything

SPLIT_NAMES = ("train", "val", "test", "shifted")
CAPTIONER_KINDS = ("adaptive", "multihead")


@cache
def book_config(kind: str = "adaptive") -> RunConfig:
    """The book's run config of captioner `kind` (the packaged shapeworld_<kind>.yaml)."""
    if kind not in CAPTIONER_KINDS:
        raise ValueError(f"captioner kind must be one of {list(CAPTIONER_KINDS)}, got {kind!r}")
    return load_run_config(f"shapeworld_{kind}")


def _seeded(kind: str, seed: int) -> RunConfig:
    """The book's config of `kind` with captioner training seed `seed`."""
    config = book_config(kind)
    return replace(config, training=replace(config.training, seed=seed))


_BOOK = book_config("adaptive")
MIN_WORD_COUNT = _BOOK.data.word_threshold()
MAX_CAPTION_LENGTH = _BOOK.data.max_caption_length
ENCODER: dict[str, Any] = {
    "channels": list(_BOOK.encoder.channels),
    "convs_per_block": _BOOK.encoder.convs_per_block,
    "in_size": _BOOK.encoder.image_size,
}
ENCODER_TRAINING = _BOOK.encoder_pretraining
CAPTION_TRAINING = _BOOK.training
CAPTIONER_SIZES: dict[str, dict[str, Any]] = {
    kind: dict(book_config(kind).captioner.sizes) for kind in CAPTIONER_KINDS
}
FINETUNING: FinetuneConfig = _BOOK.finetune


# --- data ---------------------------------------------------------------------------------------


def shapeworld_splits() -> dict[str, CocoSplit]:
    """The four ShapeWorld splits (train, val, test, shifted), generated on first use."""
    return steps.load_data(_BOOK).splits


def vocabulary() -> Vocabulary:
    """The vocabulary of the training captions (words seen at least MIN_WORD_COUNT times)."""
    return steps.load_data(_BOOK).vocabulary


def load_images(split: CocoSplit) -> torch.Tensor:
    """All images of a split as uint8 (num_images, 3, H, W), in image-index order."""
    return steps.load_images(split)


@cache
def split_images(split_name: str) -> torch.Tensor:
    """The book's ShapeWorld split `split_name` as uint8 (num_images, 3, H, W), loaded once per
    process (chapters 9–11 read the same images several times)."""
    if split_name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split_name!r}")
    return load_images(shapeworld_splits()[split_name])


# --- encoder ------------------------------------------------------------------------------------


def pretrained_encoder(progress: bool = True) -> PretrainedEncoder:
    """Build-or-load the encoder pretrained on multi-label object classification (chapter 2)."""
    return steps.encoder(_BOOK, progress=progress)


@torch.no_grad()
def extract_features(encoder: SmallVGG, images_uint8: torch.Tensor) -> torch.Tensor:
    """Encoder grid features (num_images, N, C) of uint8 images in memory, in batches of 128
    (the stored features of `encoder_features` are the same numbers in float16)."""
    encoder.eval()
    return torch.cat([to_grid(encoder(normalize(chunk))) for chunk in images_uint8.split(128)])


def encoder_features(split_name: str, progress: bool = True) -> torch.Tensor:
    """Build-or-load the frozen encoder's features of a split, (num_images, N, C) float32."""
    if split_name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split_name!r}")
    return steps.split_features(_BOOK, split_name, progress=progress).to_tensor()


# --- captioners ---------------------------------------------------------------------------------


def captioner_key(kind: str, seed: int = 0) -> dict[str, Any]:
    """The artifact key of the book's captioner `kind` trained with `seed`."""
    return steps.captioner_key(_seeded(kind, seed))


def new_captioner(kind: str, vocab_size: int, feature_dim: int) -> Captioner:
    """A freshly initialised captioner of the book's size."""
    return steps.new_captioner(book_config(kind), vocab_size, feature_dim)


def trained_captioner(kind: str, seed: int = 0, progress: bool = True) -> TrainedCaptioner:
    """Build-or-load the book's captioner `kind` ("adaptive" or "multihead")."""
    return steps.captioner(_seeded(kind, seed), progress=progress)


class CaptionerEvaluation(NamedTuple):
    """A captioner's beam-search captions of a split and their scores (chapters 3–4)."""

    decoded: list[DecodedCaption]
    captions: dict[int, str]
    scores: dict[str, float]  # caption metrics + "names absent object"
    report: ObjectMentionReport


def decode_split(
    trained: TrainedCaptioner, split_name: str, beam_size: int = 3, progress: bool = False
) -> tuple[list[DecodedCaption], dict[int, str]]:
    """Beam-search captions (bad endings removed) of every image of a ShapeWorld split from the
    frozen encoder's cached features: the decoded captions and image id → text."""
    split = shapeworld_splits()[split_name]
    decoded = decode_features(
        trained.model,
        encoder_features(split_name, progress=progress),
        trained.vocabulary,
        beam_size=beam_size,
        max_length=CAPTION_TRAINING.max_length,
    )
    captions = {
        image_id: caption_text(caption, trained.vocabulary)
        for image_id, caption in zip(split.image_ids, decoded, strict=True)
    }
    return decoded, captions


def evaluate_captioner(
    trained: TrainedCaptioner, split_name: str, beam_size: int = 3
) -> CaptionerEvaluation:
    """Caption a ShapeWorld split (beam search, bad endings removed) and score it as
    `python -m captionlib evaluate` does (`steps.score_split`: BLEU, METEOR when Java is
    present, ROUGE-L, CIDEr-D), plus the share of captions naming an absent object."""
    split = shapeworld_splits()[split_name]
    decoded, captions = decode_split(trained, split_name, beam_size)
    scores = steps.score_split(_BOOK, captions, split_name)
    report = absent_object_mentions(captions, split, object_words)
    scores["names absent object"] = report.absent_caption_share
    return CaptionerEvaluation(decoded, captions, scores, report)


# --- chapter 10: debugging hallucinations -------------------------------------------------------

DIAGNOSIS_METHODS: dict[str, tuple[str, ...]] = {
    "adaptive": ("lrp", "attention", "gradcam", "guided_gradcam", "gradient_x_input"),
    "multihead": ("lrp", "attnlrp", "attention", "gradcam", "guided_gradcam", "gradient_x_input"),
}
DIAGNOSIS_SPLITS = ("test", "shifted")
DIAGNOSIS_CONFIG = {"beam_size": 3, "chunk_size": 50, "synonyms": "shapeworld", "version": 3}


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


def hallucination_diagnosis(
    kind: str, split_name: str, progress: bool = True
) -> HallucinationDiagnosis:
    """Build-or-load the chapter-10 diagnosis of captioner `kind` on "test" or "shifted"."""
    if split_name not in DIAGNOSIS_SPLITS:
        raise ValueError(f"split must be one of {DIAGNOSIS_SPLITS}, got {split_name!r}")
    key = {
        **captioner_key(kind),
        "diagnosis": {**DIAGNOSIS_CONFIG, "split": split_name, "methods": DIAGNOSIS_METHODS[kind]},
    }

    def build(folder: Path) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        trained = trained_captioner(kind, progress=progress)
        split = shapeworld_splits()[split_name]
        decoded, captions = decode_split(
            trained, split_name, DIAGNOSIS_CONFIG["beam_size"], progress
        )
        synonyms = shapeworld_synonyms()
        words = label_object_words(
            captions,
            ground_truth(split, synonyms),
            reference_objects(split_references(split), synonyms),
            synonyms,
        )
        statistics = diagnose(
            trained.model,
            pretrained_encoder(progress=progress).encoder,
            normalize(split_images(split_name)),
            [caption.token_ids for caption in decoded],
            words,
            {image_id: index for index, image_id in enumerate(split.image_ids)},
            DIAGNOSIS_METHODS[kind],
            masks={word.image_id: object_masks(split, word.image_id) for word in words},
            chunk_size=DIAGNOSIS_CONFIG["chunk_size"],
            progress=progress,
        )
        payload = {
            "captions": captions,
            "token_ids": {
                image_id: list(caption.token_ids)
                for image_id, caption in zip(split.image_ids, decoded, strict=True)
            },
            "scores": hallucination_scores(captions, split, synonyms),
            "words": [asdict(word) for word in words],
            "statistics": {
                method: {name: values.tolist() for name, values in stats.items()}
                for method, stats in statistics.items()
            },
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
        }
        (folder / "diagnosis.json").write_text(json.dumps(payload))

    folder = cached(f"diagnosis-{kind}-{split_name}", key, build)
    payload = json.loads((folder / "diagnosis.json").read_text())
    return HallucinationDiagnosis(
        kind=kind,
        split_name=split_name,
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

FINETUNE_SEEDS = (0, 1, 2)
FINETUNE_STAGES = ("before", "control", "lrp")
FINETUNE_SPLITS = ("test", "shifted")


def finetune_config(method: str, seed: int) -> FinetuneConfig:
    """The book's fine-tuning settings (`FINETUNING`) with `method` and `seed`."""
    return steps.finetune_settings(_BOOK, method, seed)


def finetune_key(kind: str, method: str, seed: int) -> dict[str, Any]:
    """Artifact key: the seed-0 cross-entropy captioner's key plus the fine-tuning config."""
    return steps.finetune_key(book_config(kind), finetune_config(method, seed))


def finetuned_captioner(
    kind: str, method: str, seed: int = 0, progress: bool = True
) -> FinetunedCaptioner:
    """Build-or-load captioner `kind` fine-tuned with `method` ("lrp" or "control").

    Every run starts from the same seed-0 cross-entropy checkpoint and the pretrained
    encoder; `seed` sets the data order, the caption drawn per image and dropout.
    """
    return steps.finetuned(book_config(kind), method, seed, progress)


def caption_split(
    model: Captioner, encoder: SmallVGG, split_name: str, beam_size: int = 3
) -> dict[int, str]:
    """image id → caption of every image of a split, features from `encoder` (chapter 11)."""
    split = shapeworld_splits()[split_name]
    features = extract_features(encoder, split_images(split_name))
    return caption_features(
        model, features, split.image_ids, vocabulary(), beam_size, CAPTION_TRAINING.max_length
    )


def finetune_scores(captions: dict[int, str], split_name: str) -> dict[str, float]:
    """BLEU-4, CIDEr-D (simple tokenizer) and the hallucination scores of a split's captions."""
    split = shapeworld_splits()[split_name]
    metrics = steps.score_split(
        _BOOK, captions, split_name, metrics=("BLEU", "CIDEr"), tokenizer="simple"
    )
    return {
        "BLEU-4": metrics["BLEU-4"],
        "CIDEr-D": metrics["CIDEr"],
        **hallucination_scores(captions, split, shapeworld_synonyms()),
    }


@dataclass
class FinetuningResults:
    """Chapter 11's measurements, all from the cache.

    scores[kind][stage][split]: one dict of metrics per seed ("before": one entry, the
    cross-entropy checkpoint); captions the same way (image id → caption);
    seconds[kind][method]: fine-tuning seconds per seed.
    """

    scores: dict[str, dict[str, dict[str, list[dict[str, float]]]]]
    captions: dict[str, dict[str, dict[str, list[dict[int, str]]]]]
    seconds: dict[str, dict[str, list[float]]]
    seeds: tuple[int, ...]
    folder: Path


def finetuning_results(progress: bool = True) -> FinetuningResults:
    """Build-or-load before / control / LRP-IFT scores of both captioners on the test and
    shifted splits, for every seed in FINETUNE_SEEDS (beam 3; chapter 11)."""
    key = {
        "captioners": {kind: captioner_key(kind) for kind in CAPTIONER_KINDS},
        "finetune": FINETUNING.as_dict(),
        "finetune_version": steps.STEP_VERSIONS["finetuned"],
        "seeds": list(FINETUNE_SEEDS),
        "splits": list(FINETUNE_SPLITS),
        "beam_size": 3,
    }

    def build(folder: Path) -> None:
        scores: dict[str, Any] = {}
        captions: dict[str, Any] = {}
        seconds: dict[str, Any] = {}
        encoder = pretrained_encoder(progress=progress).encoder
        for kind in CAPTIONER_KINDS:
            runs = {"before": [(trained_captioner(kind, progress=progress).model, encoder)]}
            seconds[kind] = {}
            for method in FINETUNE_STAGES[1:]:
                tuned = [finetuned_captioner(kind, method, s, progress) for s in FINETUNE_SEEDS]
                runs[method] = [(run.model, run.encoder) for run in tuned]
                seconds[kind][method] = [sum(run.history.seconds) for run in tuned]
            scores[kind], captions[kind] = {}, {}
            for stage, models in runs.items():
                scores[kind][stage] = {name: [] for name in FINETUNE_SPLITS}
                captions[kind][stage] = {name: [] for name in FINETUNE_SPLITS}
                for model, model_encoder in models:
                    for name in FINETUNE_SPLITS:
                        texts = caption_split(model, model_encoder, name)
                        captions[kind][stage][name].append(texts)
                        scores[kind][stage][name].append(finetune_scores(texts, name))
        payload = {"scores": scores, "captions": captions, "seconds": seconds}
        (folder / "results.json").write_text(json.dumps(payload))

    folder = cached("finetune-results", key, build)
    payload = json.loads((folder / "results.json").read_text())
    captions = {
        kind: {
            stage: {
                name: [{int(i): text for i, text in run.items()} for run in runs]
                for name, runs in splits.items()
            }
            for stage, splits in stages.items()
        }
        for kind, stages in payload["captions"].items()
    }
    return FinetuningResults(
        payload["scores"], captions, payload["seconds"], FINETUNE_SEEDS, folder
    )


# --- chapter 9: evaluating explanations ---------------------------------------------------------

EXPLANATION_STUDY_IMAGES = 300  # per split; 4 settings: ~6 CPU-minutes (500 would take ~10)


def explanation_evaluation(kind: str, split_name: str, progress: bool = True) -> dict[str, Any]:
    """Build-or-load chapter 9's localisation and ablation study of every explanation method
    for captioner `kind` on the first EXPLANATION_STUDY_IMAGES images of `split_name`.

    Returns `captionlib.evaluate.explanation_study.run_study`'s JSON-serialisable result
    (per-item values; read back with that module's `localization_summaries`, `image_drops`,
    `vanished`, `word_drops`).
    """
    if split_name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split_name!r}")
    config = StudyConfig(max_length=CAPTION_TRAINING.max_length)
    key = {
        **captioner_key(kind),
        "explanation_study": config.key(),
        "split": split_name,
        "images": EXPLANATION_STUDY_IMAGES,
    }

    def build(folder: Path) -> None:
        trained = trained_captioner(kind, progress=progress)
        encoder = pretrained_encoder(progress=progress).encoder
        split = shapeworld_splits()[split_name]
        count = min(EXPLANATION_STUDY_IMAGES, len(split))
        image_ids = split.image_ids[:count]
        images = split_images(split_name)[:count]
        annotations = [image_objects(split, image_id) for image_id in image_ids]
        seed_everything(config.seed)
        result = run_study(
            trained.model,
            encoder,
            images,
            image_ids,
            annotations,
            trained.vocabulary,
            shapeworld_synonyms().category_of,
            config,
            prepare=normalize,
            progress=progress,
        )
        (folder / "result.json").write_text(json.dumps(result))

    folder = cached(f"explanations-{kind}-{split_name}", key, build)
    return json.loads((folder / "result.json").read_text())
