"""The book's standard data, encoder and captioners: build once, then load (chapters 1–4).

Every function here is build-or-load through the artifact cache (`captionlib.artifacts`): the
first call trains and stores the artifact under data/cache/, later calls (and later chapters)
load it. The cache key is the full config, including the configs of everything upstream, so
changing the data or the encoder retrains what depends on them and nothing else.

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
from sklearn.metrics import average_precision_score

from captionlib.artifacts import cached
from captionlib.checkpoints import load_checkpoint, save_checkpoint
from captionlib.data.coco import (
    CaptionDataset,
    CocoSplit,
    caption_loader,
    category_names,
    load_coco_split,
    load_image,
    objects_in_image,
    references,
)
from captionlib.data.shapeworld import ShapeWorldConfig, ensure_shapeworld, object_words
from captionlib.data.vocab import Vocabulary
from captionlib.evaluate.captions import score_captions
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
from captionlib.finetune import (
    FinetuneConfig,
    FinetuneHistory,
    finetune_captioner,
    image_caption_batches,
)
from captionlib.generate import caption_features, caption_text, decode_features
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.decoding import DecodedCaption
from captionlib.models.encoder import MultiLabelHead, SmallVGG, to_grid
from captionlib.models.multihead import MultiHeadCaptioner
from captionlib.progress import progress_bar
from captionlib.train import (
    CaptionTrainConfig,
    EncoderTrainConfig,
    TrainHistory,
    pretrain_encoder,
    train_captioner,
)
from captionlib.utils import seed_everything

SPLIT_NAMES = ("train", "val", "test", "shifted")
RECIPE_VERSION = 2  # bump when training code changes in a way the configs below do not show
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as for real COCO with VGG16
IMAGE_STD = (0.229, 0.224, 0.225)
MIN_WORD_COUNT = 3
MAX_CAPTION_LENGTH = 20
CAPTIONERS: dict[str, type[Captioner]] = {
    "adaptive": AdaptiveAttentionCaptioner,
    "multihead": MultiHeadCaptioner,
}
CAPTIONER_SIZES: dict[str, dict[str, Any]] = {
    "adaptive": {"embed_dim": 128, "hidden_dim": 128, "attention_dim": 96, "dropout": 0.5},
    "multihead": {"embed_dim": 128, "hidden_dim": 128, "heads": 8, "head_dim": 16, "dropout": 0.3},
}
ENCODER = {"channels": [16, 32, 64], "convs_per_block": 1, "in_size": 112}
ENCODER_TRAINING = EncoderTrainConfig(epochs=5, batch_size=32, lr=2e-3)
CAPTION_TRAINING = CaptionTrainConfig(epochs=5, batch_size=64, val_beam_size=1, max_length=16)


# --- data ---------------------------------------------------------------------------------------


def shapeworld_config() -> ShapeWorldConfig:
    """The book's ShapeWorld configuration (chapter 1)."""
    return ShapeWorldConfig()


def _data_key() -> dict[str, Any]:
    return {"shapeworld": asdict(shapeworld_config()), "recipe_version": RECIPE_VERSION}


@cache
def shapeworld_splits() -> dict[str, CocoSplit]:
    """The four ShapeWorld splits (train, val, test, shifted), generated on first use."""
    folder = ensure_shapeworld(shapeworld_config())
    return {
        name: load_coco_split(
            folder / f"captions_{name}.json",
            folder / "images",
            folder / f"instances_{name}.json",
        )
        for name in SPLIT_NAMES
    }


@cache
def vocabulary() -> Vocabulary:
    """The vocabulary of the training captions (words seen at least MIN_WORD_COUNT times)."""
    train = shapeworld_splits()["train"]
    return Vocabulary.build(
        (caption for captions in train.captions for caption in captions), MIN_WORD_COUNT
    )


def load_images(split: CocoSplit, progress: bool = False) -> torch.Tensor:
    """All images of a split as uint8 (num_images, 3, H, W), in image-index order."""
    arrays = [
        np.asarray(load_image(path))
        for path in progress_bar(split.file_paths, desc="images", progress=progress)
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@cache
def split_images(split_name: str) -> torch.Tensor:
    """The book's ShapeWorld split `split_name` as uint8 (num_images, 3, H, W), loaded once per
    process (chapters 9–11 read the same images several times)."""
    if split_name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split_name!r}")
    return load_images(shapeworld_splits()[split_name])


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float (B, 3, H, W) normalised with IMAGE_MEAN / IMAGE_STD."""
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


def multilabel_targets(split: CocoSplit) -> torch.Tensor:
    """(num_images, num_categories) 0/1 targets: which categories each image contains."""
    names = category_names(split)
    targets = torch.zeros(len(split), len(names))
    for index, image_id in enumerate(split.image_ids):
        for name in objects_in_image(split, image_id):
            targets[index, names.index(name)] = 1.0
    return targets


# --- encoder ------------------------------------------------------------------------------------


@dataclass
class PretrainedEncoder:
    """The frozen encoder, its pretraining head and its training history (chapter 2)."""

    encoder: SmallVGG
    head: MultiLabelHead
    history: TrainHistory
    folder: Path


def _encoder_key() -> dict[str, Any]:
    return {**_data_key(), "encoder": ENCODER, "training": asdict(ENCODER_TRAINING)}


def _mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    present = targets.sum(0) > 0
    return float(
        average_precision_score(
            targets[:, present].numpy(), scores[:, present].numpy(), average="macro"
        )
    )


@torch.no_grad()
def classify(encoder: SmallVGG, head: MultiLabelHead, images_uint8: torch.Tensor) -> torch.Tensor:
    """Multi-label logits (num_images, num_categories) for uint8 images, in batches of 128."""
    encoder.eval()
    head.eval()
    return torch.cat([head(encoder(normalize(chunk))) for chunk in images_uint8.split(128)], dim=0)


def pretrained_encoder(progress: bool = True) -> PretrainedEncoder:
    """Build-or-load the encoder pretrained on multi-label object classification."""
    key = _encoder_key()

    def build(folder: Path) -> None:
        seed_everything(ENCODER_TRAINING.seed)
        splits = shapeworld_splits()
        train_images, val_images = load_images(splits["train"]), load_images(splits["val"])
        train_targets, val_targets = (
            multilabel_targets(splits["train"]),
            multilabel_targets(splits["val"]),
        )
        encoder = SmallVGG(**ENCODER)
        head = MultiLabelHead(encoder.out_channels, train_targets.shape[1])

        def batches(epoch: int):
            order = torch.randperm(
                len(train_images), generator=torch.Generator().manual_seed(epoch)
            )
            for indices in order.split(ENCODER_TRAINING.batch_size):
                images = train_images[indices]
                if torch.rand((), generator=torch.Generator().manual_seed(int(indices[0]))) < 0.5:
                    images = images.flip(-1)  # horizontal flips: scenes are left-right symmetric
                yield normalize(images), train_targets[indices]

        def evaluate(encoder_: SmallVGG, head_: MultiLabelHead) -> float:
            return _mean_average_precision(classify(encoder_, head_, val_images), val_targets)

        history = pretrain_encoder(
            encoder, head, batches, evaluate, ENCODER_TRAINING, progress=progress
        )
        save_checkpoint(folder / "encoder.pt", encoder.state_dict(), encoder.config())
        save_checkpoint(folder / "head.pt", head.state_dict(), {"classes": head_classes(head)})
        (folder / "history.json").write_text(json.dumps(history.as_dict()))

    folder = cached("encoder", key, build)
    encoder = SmallVGG(**ENCODER)
    encoder.load_state_dict(load_checkpoint(folder / "encoder.pt", encoder.config())["state_dict"])
    head_payload = load_checkpoint(folder / "head.pt")
    head = MultiLabelHead(encoder.out_channels, head_payload["config"]["classes"])
    head.load_state_dict(head_payload["state_dict"])
    encoder.eval()
    head.eval()
    for parameter in [*encoder.parameters(), *head.parameters()]:
        parameter.requires_grad_(False)
    history = TrainHistory(**json.loads((folder / "history.json").read_text()))
    return PretrainedEncoder(encoder, head, history, folder)


def head_classes(head: MultiLabelHead) -> int:
    """Number of classes of a multi-label head."""
    return int(head.classifier.out_features)


@torch.no_grad()
def extract_features(encoder: SmallVGG, images_uint8: torch.Tensor) -> torch.Tensor:
    """Encoder grid features (num_images, N, C) for uint8 images, in batches of 128."""
    encoder.eval()
    return torch.cat([to_grid(encoder(normalize(chunk))) for chunk in images_uint8.split(128)])


def encoder_features(split_name: str, progress: bool = True) -> torch.Tensor:
    """Build-or-load the frozen encoder's features of a split, (num_images, N, C) float32."""
    if split_name not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split_name!r}")
    key = {**_encoder_key(), "features": "grid-float16"}

    def build(folder: Path) -> None:
        encoder = pretrained_encoder(progress=progress).encoder
        for name, split in shapeworld_splits().items():
            features = extract_features(encoder, load_images(split, progress=progress))
            torch.save(features.half(), folder / f"features_{name}.pt")

    folder = cached("features", key, build)
    return torch.load(folder / f"features_{split_name}.pt", weights_only=True).float()


# --- captioners ---------------------------------------------------------------------------------


@dataclass
class TrainedCaptioner:
    """A trained captioner with its vocabulary and training history (chapters 3–4)."""

    model: Captioner
    vocabulary: Vocabulary
    history: TrainHistory
    kind: str
    folder: Path


def captioner_key(kind: str, seed: int = 0) -> dict[str, Any]:
    """The artifact key of the book's captioner `kind` trained with `seed`."""
    if kind not in CAPTIONERS:
        raise ValueError(f"captioner kind must be one of {sorted(CAPTIONERS)}, got {kind!r}")
    training = asdict(CAPTION_TRAINING) | {"seed": seed}
    return {
        **_encoder_key(),
        "vocabulary": {"min_count": MIN_WORD_COUNT, "max_length": MAX_CAPTION_LENGTH},
        "captioner": kind,
        "sizes": CAPTIONER_SIZES[kind],
        "caption_training": training,
    }


def new_captioner(kind: str, vocab_size: int, feature_dim: int) -> Captioner:
    """A freshly initialised captioner of the book's size."""
    return CAPTIONERS[kind](vocab_size=vocab_size, feature_dim=feature_dim, **CAPTIONER_SIZES[kind])


def trained_captioner(kind: str, seed: int = 0, progress: bool = True) -> TrainedCaptioner:
    """Build-or-load the book's captioner `kind` ("adaptive" or "multihead")."""
    key = captioner_key(kind, seed)
    vocab = vocabulary()
    config = CaptionTrainConfig(
        **(key["caption_training"] | {"betas": tuple(CAPTION_TRAINING.betas)})
    )

    def build(folder: Path) -> None:
        seed_everything(seed)
        splits = shapeworld_splits()
        train_features = encoder_features("train", progress=progress)
        val_features = encoder_features("val", progress=progress)
        dataset = CaptionDataset(
            splits["train"], vocab, features=train_features, max_length=MAX_CAPTION_LENGTH
        )
        model = new_captioner(kind, len(vocab), train_features.shape[-1])
        val_references = {
            image_id: captions
            for image_id, captions in zip(
                splits["val"].image_ids, splits["val"].captions, strict=True
            )
        }

        def batches(epoch: int):
            return caption_loader(
                dataset, config.batch_size, shuffle=True, seed=seed * 1000 + epoch
            )

        def validate(model_: Captioner) -> float:
            predictions = caption_features(
                model_,
                val_features,
                splits["val"].image_ids,
                vocab,
                beam_size=config.val_beam_size,
                max_length=config.max_length,
            )
            return score_captions(
                predictions, val_references, metrics=("CIDEr",), tokenizer="simple"
            )["CIDEr"]

        history = train_captioner(
            model, batches, validate, config, checkpoint_path=None, progress=progress
        )
        save_checkpoint(folder / "captioner.pt", model.state_dict(), model.config(), vocab.words)
        (folder / "history.json").write_text(json.dumps(history.as_dict()))

    folder = cached(f"captioner-{kind}", key, build)
    model = new_captioner(kind, len(vocab), ENCODER["channels"][-1])
    payload = load_checkpoint(folder / "captioner.pt", model.config(), vocab.words)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    history = TrainHistory(**json.loads((folder / "history.json").read_text()))
    return TrainedCaptioner(model, vocab, history, kind, folder)


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
    """Caption a ShapeWorld split (beam search, bad endings removed) and score it: BLEU,
    METEOR (when Java is present), ROUGE-L, CIDEr-D and the share of captions naming an
    absent object."""
    split = shapeworld_splits()[split_name]
    decoded, captions = decode_split(trained, split_name, beam_size)
    scores = score_captions(captions, references(split), metrics="default", tokenizer="auto")
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

FINETUNING = FinetuneConfig(
    epochs=1, batch_size=32, captions_per_image=1, lr=1e-4, encoder_lr=2e-5
)  # one pass over the 3000 training images; decoder lr 5× below captioner training's 5e-4,
# encoder lr 100× below its pretraining's 2e-3
FINETUNE_SEEDS = (0, 1, 2)
FINETUNE_STAGES = ("before", "control", "lrp")
FINETUNE_SPLITS = ("test", "shifted")
FINETUNE_VERSION = 1  # bump when the fine-tuning code changes in a way the config does not show


@dataclass
class FinetunedCaptioner:
    """A captioner and its encoder after LRP-IFT or the control (chapter 11)."""

    model: Captioner
    encoder: SmallVGG
    vocabulary: Vocabulary
    history: FinetuneHistory
    kind: str
    method: str
    seed: int
    folder: Path


def finetune_config(method: str, seed: int) -> FinetuneConfig:
    """The book's fine-tuning settings (`FINETUNING`) with `method` and `seed`."""
    return replace(FINETUNING, method=method, seed=seed)


def finetune_key(kind: str, method: str, seed: int) -> dict[str, Any]:
    """Artifact key: the seed-0 cross-entropy captioner's key plus the fine-tuning config."""
    return {
        **captioner_key(kind),
        "finetune": finetune_config(method, seed).as_dict(),
        "finetune_version": FINETUNE_VERSION,
    }


@cache
def _finetune_data() -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """Training images (uint8) and each image's encoded captions, loaded once per process."""
    train, vocab = shapeworld_splits()["train"], vocabulary()
    captions = [
        [torch.tensor(vocab.encode(text, MAX_CAPTION_LENGTH), dtype=torch.long) for text in texts]
        for texts in train.captions
    ]
    return split_images("train"), captions


def finetuned_captioner(
    kind: str, method: str, seed: int = 0, progress: bool = True
) -> FinetunedCaptioner:
    """Build-or-load captioner `kind` fine-tuned with `method` ("lrp" or "control").

    Every run starts from the same seed-0 cross-entropy checkpoint and the pretrained
    encoder; `seed` sets the data order, the caption drawn per image and dropout.
    """
    config = finetune_config(method, seed)
    key = finetune_key(kind, method, seed)
    vocab = vocabulary()

    def build(folder: Path) -> None:
        seed_everything(seed)
        model = trained_captioner(kind, progress=progress).model
        encoder = pretrained_encoder(progress=progress).encoder
        images, captions = _finetune_data()
        batches = image_caption_batches(
            images, captions, config.batch_size, config.captions_per_image, seed, normalize
        )
        history = finetune_captioner(
            model, encoder, batches, config, progress=progress, vocabulary=vocab
        )
        save_checkpoint(folder / "captioner.pt", model.state_dict(), model.config(), vocab.words)
        save_checkpoint(folder / "encoder.pt", encoder.state_dict(), encoder.config())
        (folder / "history.json").write_text(json.dumps(history.as_dict()))

    folder = cached(f"finetuned-{kind}", key, build)
    model = new_captioner(kind, len(vocab), ENCODER["channels"][-1])
    model.load_state_dict(
        load_checkpoint(folder / "captioner.pt", model.config(), vocab.words)["state_dict"]
    )
    encoder = SmallVGG(**ENCODER)
    encoder.load_state_dict(load_checkpoint(folder / "encoder.pt", encoder.config())["state_dict"])
    model.eval()
    encoder.eval()
    history = FinetuneHistory(**json.loads((folder / "history.json").read_text()))
    return FinetunedCaptioner(model, encoder, vocab, history, kind, method, seed, folder)


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
    metrics = score_captions(
        captions, references(split), metrics=("BLEU", "CIDEr"), tokenizer="simple"
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
        "captioners": {kind: captioner_key(kind) for kind in CAPTIONERS},
        "finetune": FINETUNING.as_dict(),
        "finetune_version": FINETUNE_VERSION,
        "seeds": list(FINETUNE_SEEDS),
        "splits": list(FINETUNE_SPLITS),
        "beam_size": 3,
    }

    def build(folder: Path) -> None:
        scores: dict[str, Any] = {}
        captions: dict[str, Any] = {}
        seconds: dict[str, Any] = {}
        encoder = pretrained_encoder(progress=progress).encoder
        for kind in CAPTIONERS:
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
