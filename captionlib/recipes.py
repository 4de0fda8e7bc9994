"""The book's data, encoder and captioners, build once and then load (chapters 1–4, 9–11).

A facade over `captionlib.steps` with the book's settings, which live in one place: the
packaged configs shapeworld_adaptive.yaml (captioner A) and shapeworld_multihead.yaml
(captioner B). The first call trains and stores an artifact under data/cache/, later calls
(later chapters, `python -m captionlib train --config shapeworld_adaptive`) load it.
Chapters 9–11's studies (explanation evaluation, hallucination diagnosis, fine-tuning
results) are steps of `captionlib.studies`, stored the same way and keyed by the captioners
they measure. Nothing here trains, decodes or evaluates by itself.

::

    splits = recipes.shapeworld_splits()
    encoder = recipes.pretrained_encoder()
    captioner = recipes.trained_captioner("adaptive")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from typing import Any, NamedTuple

import torch

from captionlib import steps, studies
from captionlib.data.coco import CocoSplit
from captionlib.data.shapeworld import object_words
from captionlib.data.vocab import Vocabulary
from captionlib.evaluate.frontier import CAUTION_PENALTIES as CAUTION_PENALTIES
from captionlib.evaluate.objects import ObjectMentionReport, absent_object_mentions
from captionlib.finetune import FinetuneConfig
from captionlib.generate import caption_text, decode_features
from captionlib.models.base import Captioner
from captionlib.models.decoding import DecodedCaption
from captionlib.models.encoder import SmallVGG
from captionlib.runconfig import RunConfig, load_run_config
from captionlib.steps import FinetunedCaptioner, PretrainedEncoder, TrainedCaptioner
from captionlib.steps import classify as classify
from captionlib.steps import multilabel_targets as multilabel_targets
from captionlib.steps import normalize as normalize
from captionlib.studies import FinetuningResults, FrontierStudy, HallucinationDiagnosis

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


def extract_features(encoder: SmallVGG, images_uint8: torch.Tensor) -> torch.Tensor:
    """Encoder grid features (num_images, N, C) of uint8 images in memory, in batches of 128
    (the stored features of `encoder_features` are the same numbers in float16)."""
    return studies.grid_features(encoder, images_uint8)


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
    """Build-or-load the book's captioner `kind` ("adaptive" or "multihead") trained with
    `seed`."""
    return steps.captioner(_seeded(kind, seed), progress=progress)


def trained_captioners(
    kind: str, seeds: Sequence[int], progress: bool = True
) -> list[TrainedCaptioner]:
    """Build-or-load the book's captioner `kind` for each training seed, the missing ones
    trained two at a time, one CPU thread each (on the CPU, on Linux; chapters 3 and 4)."""
    return steps.captioners([_seeded(kind, seed) for seed in seeds], progress=progress)


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

DIAGNOSIS_METHODS = studies.DIAGNOSIS_METHODS
DIAGNOSIS_SPLITS = ("test", "shifted")


def hallucination_diagnosis(
    kind: str, split_name: str, progress: bool = True
) -> HallucinationDiagnosis:
    """Build-or-load the chapter-10 diagnosis of captioner `kind` on "test" or "shifted"."""
    if split_name not in DIAGNOSIS_SPLITS:
        raise ValueError(f"split must be one of {DIAGNOSIS_SPLITS}, got {split_name!r}")
    return studies.diagnosis(book_config(kind), split_name, progress)


# --- chapter 11: LRP-inference fine-tuning ------------------------------------------------------

FINETUNE_SEEDS = (0, 1, 2)
FINETUNE_STAGES = ("before", "control", "lrp")
FINETUNE_SPLITS = ("test", "shifted")


def _finetune_configs() -> dict[str, list[RunConfig]]:
    """kind → the book's config of each seed in FINETUNE_SEEDS (chapter 11's runs)."""
    return {kind: [_seeded(kind, seed) for seed in FINETUNE_SEEDS] for kind in CAPTIONER_KINDS}


def finetune_checkpoints(progress: bool = True) -> dict[str, list[TrainedCaptioner]]:
    """Build-or-load the cross-entropy captioner of each kind for every seed in
    FINETUNE_SEEDS, the ones fine-tuning starts from (chapter 11); the missing ones are
    trained two at a time (`steps.captioners`)."""
    configs = _finetune_configs()
    trained = iter(
        steps.captioners([c for seeded in configs.values() for c in seeded], progress=progress)
    )
    return {kind: [next(trained) for _ in seeded] for kind, seeded in configs.items()}


def finetune_config(method: str, seed: int) -> FinetuneConfig:
    """The book's fine-tuning settings (`FINETUNING`) with `method` and `seed`."""
    return steps.finetune_settings(_BOOK, method, seed)


def finetune_key(kind: str, method: str, seed: int) -> dict[str, Any]:
    """Artifact key: the seed-`seed` cross-entropy captioner's key plus the fine-tuning
    config."""
    return steps.finetune_key(_seeded(kind, seed), finetune_config(method, seed))


def finetuned_captioner(
    kind: str, method: str, seed: int = 0, progress: bool = True
) -> FinetunedCaptioner:
    """Build-or-load captioner `kind` fine-tuned with `method` ("lrp" or "control").

    Seed s starts from the cross-entropy captioner trained with seed s and the pretrained
    encoder, and fine-tunes with seed s (data order, the caption drawn per image, dropout),
    so the spread over seeds covers training and fine-tuning.
    """
    return steps.finetuned(_seeded(kind, seed), method, seed, progress)


def caption_split(
    model: Captioner, encoder: SmallVGG, split_name: str, beam_size: int = 3
) -> dict[int, str]:
    """image id → caption of every image of a split, features from `encoder` (chapter 11)."""
    return studies.caption_with(_BOOK, model, encoder, split_name, beam_size)


def finetune_scores(captions: dict[int, str], split_name: str) -> dict[str, float]:
    """BLEU-4, CIDEr-D (simple tokenizer) and the hallucination scores of a split's captions."""
    return studies.finetune_scores(_BOOK, captions, split_name)


def finetuning_results(progress: bool = True) -> FinetuningResults:
    """Build-or-load before / control / LRP-IFT scores of both captioners on the test and
    shifted splits, for every seed in FINETUNE_SEEDS: seed s trains the cross-entropy
    captioner and fine-tunes it (beam 3; chapter 11)."""
    return studies.finetuning_results(
        _finetune_configs(), FINETUNE_SEEDS, FINETUNE_SPLITS, progress=progress
    )


def caution_frontier(progress: bool = True) -> FrontierStudy:
    """Build-or-load chapter 11's caution sweeps (λ in `CAUTION_PENALTIES`) of both
    captioners' cross-entropy checkpoints and their control runs, and visual contrastive
    decoding (`studies.ContrastSettings`' defaults), seed for seed with
    `finetuning_results`, on the test and shifted splits."""
    return studies.caution_frontier(
        _finetune_configs(), FINETUNE_SEEDS, FINETUNE_SPLITS, CAUTION_PENALTIES, progress=progress
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
    config = book_config(kind)
    return studies.explanation_study(config, split_name, EXPLANATION_STUDY_IMAGES, progress)
