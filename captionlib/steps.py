"""The pipeline's steps, one artifact each: data → encoder → features → captioner →
fine-tuned captioner, plus decoding and scoring a split (chapters 1–4, 11 and 12).

Every step takes a `RunConfig`. The book (through the `captionlib.recipes` facade with
configs/shapeworld_*.yaml), `python -m captionlib` and `torchrun` all call these functions,
so a captioner trained by a chapter is the captioner the command line finds, and the other
way round. Each step's output is an artifact of the store (`captionlib.artifacts`) keyed by

- the step's name and version (`STEP_VERSIONS`, bumped whenever its code changes what it
  computes; tests/test_step_versions.py fails when the code changes without a bump),
- the settings that change its result (never the ones that only change speed: workers,
  feature-extraction batch size, device), and
- the keys of its inputs,

so a changed data root or any result-affecting setting builds a new artifact instead of
serving a stale one, and a failed build leaves nothing behind. In a distributed run rank 0
builds data, encoder and features while the others wait; all processes train together.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import Tensor, nn
from torch.utils.data import DataLoader

from captionlib.artifacts import artifact_path, cached, config_hash, is_complete
from captionlib.checkpoints import load_checkpoint, save_checkpoint
from captionlib.data.coco import (
    CaptionDataset,
    CocoSplit,
    ImageDataset,
    category_names,
    collate_captions,
    image_transform,
    load_coco_split,
    load_image,
    objects_in_image,
    references,
)
from captionlib.data.prepare import PreparedData, load_prepared, prepare_dataset
from captionlib.data.shapeworld import SPLITS as SHAPEWORLD_SPLITS
from captionlib.data.shapeworld import ShapeWorldConfig, ensure_shapeworld
from captionlib.data.vocab import Vocabulary
from captionlib.distributed import (
    DistContext,
    barrier,
    broadcast_float,
    distributed_loader,
    main_first,
    wrap_model,
)
from captionlib.evaluate.captions import score_captions
from captionlib.evaluate.explanation_study import STUDY_VERSION
from captionlib.features import MemmapFeatures, extract_features
from captionlib.finetune import FinetuneConfig, FinetuneHistory, finetune_captioner
from captionlib.finetune import image_caption_batches as finetune_batches
from captionlib.generate import caption_features
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.encoder import MultiLabelHead, SmallVGG, vgg16_features
from captionlib.models.multihead import MultiHeadCaptioner
from captionlib.runconfig import RunConfig
from captionlib.train import TrainHistory, pretrain_encoder, train_captioner
from captionlib.utils import die_with_parent, seed_everything, select_device, torch_threads

STEP_VERSIONS: dict[str, int] = {
    "prepared": 1,
    "encoder": 1,
    "features": 1,
    "captioner": 3,  # 3: training.threads pinned on the CPU (2: batched beam search)
    "finetuned": 3,  # also versions chapter 11's results (3: one training seed per run)
    "diagnosis": 3,  # chapter 10 (captionlib.studies.diagnosis)
    "frontier": 1,  # chapter 11 (captionlib.studies.caution_frontier)
    "explanations": STUDY_VERSION,  # chapter 9 (set in captionlib.evaluate.explanation_study)
}
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as for real COCO with VGG16
IMAGE_STD = (0.229, 0.224, 0.225)
CAPTIONERS: dict[str, type[Captioner]] = {
    "adaptive": AdaptiveAttentionCaptioner,
    "multihead": MultiHeadCaptioner,
}
IN_MEMORY_BYTES = 2 << 30  # features and images smaller than this are read into memory once


def single_process(config: RunConfig) -> DistContext:
    """The context of an ordinary (not distributed) run on the config's device."""
    return DistContext(device=select_device(config.device_name()))


def _build_on_main(context: DistContext, kind: str, key: dict, build: Callable) -> Path:
    """Rank 0 builds (or finds) the artifact; the other processes wait, then find it."""
    with main_first(context):
        if context.is_main:
            cached(kind, key, build)
    return artifact_path(kind, key)


# --- data ---------------------------------------------------------------------------------------


def data_identity(config: RunConfig) -> dict[str, Any]:
    """What the images and captions are: ShapeWorld's generator settings, or a real data set
    and the resolved folder it is read from."""
    if config.data.dataset == "shapeworld":
        settings = asdict(ShapeWorldConfig(**config.data.shapeworld))
        return {"dataset": "shapeworld", "shapeworld": settings}
    root = Path(config.data.root).expanduser().resolve()  # type: ignore[arg-type]
    return {"dataset": config.data.dataset, "root": str(root)}


def vocabulary_settings(config: RunConfig) -> dict[str, int]:
    """The settings of the training vocabulary and of caption encoding."""
    return {
        "min_word_count": config.data.word_threshold(),
        "max_caption_length": config.data.max_caption_length,
    }


def data_key(config: RunConfig) -> dict[str, Any]:
    """The prepared data's artifact key: the data set, its folder and the vocabulary."""
    return {
        **data_identity(config),
        **vocabulary_settings(config),
        "version": STEP_VERSIONS["prepared"],
    }


def prepared_folder(config: RunConfig, progress: bool = True) -> Path:
    """The folder of the config's data in the book's form: ShapeWorld generated, or a real
    data set prepared (`captionlib.data.prepare`) into the store, keyed by its source
    folder, on first use."""
    if config.data.dataset == "shapeworld":
        return ensure_shapeworld(ShapeWorldConfig(**config.data.shapeworld), progress)
    key = data_key(config)

    def build(folder: Path) -> None:
        prepare_dataset(
            config.data.dataset,
            key["root"],
            folder / "data",
            min_count=config.data.word_threshold(),
            max_tokens=config.data.max_caption_length,
            progress=progress,
        )

    return cached("prepared", key, build) / "data"


_DATA: dict[str, PreparedData] = {}


def load_data(config: RunConfig, progress: bool = True) -> PreparedData:
    """The splits and the training vocabulary of the config's data (`prepared_folder`),
    loaded once per process."""
    memo = config_hash(data_key(config))
    if memo in _DATA:
        return _DATA[memo]
    folder = prepared_folder(config, progress)
    if config.data.dataset == "shapeworld":
        splits = {
            name: load_coco_split(
                folder / f"captions_{name}.json",
                folder / "images",
                folder / f"instances_{name}.json",
            )
            for name in SHAPEWORLD_SPLITS
        }
        train = (caption for captions in splits["train"].captions for caption in captions)
        vocabulary = Vocabulary.build(train, config.data.word_threshold())
        data = PreparedData(splits, vocabulary, {"dataset": "shapeworld", "source": str(folder)})
    else:
        data = load_prepared(folder)
    _DATA[memo] = data
    return data


def split_of(data: PreparedData, name: str) -> CocoSplit:
    """The split `name` of a data set, or a ValueError naming the splits it has."""
    if name not in data.splits:
        raise ValueError(f"split {name!r} not in the data set; it has {sorted(data.splits)}")
    return data.splits[name]


def normalize(images_uint8: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) → float (B, 3, H, W) normalised with IMAGE_MEAN / IMAGE_STD."""
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


def _read_image(path: Path, size: int) -> np.ndarray:
    image = load_image(path)
    if image.size != (size, size):
        image = load_image(path, size)
    return np.asarray(image)


def load_images(split: CocoSplit, size: int | None = None) -> Tensor:
    """All images of a split as uint8 (num_images, 3, S, S), in image-index order (resized
    to `size` × `size` where they differ)."""
    arrays = [
        np.asarray(load_image(path)) if size is None else _read_image(path, size)
        for path in split.file_paths
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class SplitImages:
    """A split's images as uint8 rows (3, S, S), indexed by a tensor of row numbers: read
    into memory once when they fit in IN_MEMORY_BYTES, else from disk per batch (COCO)."""

    def __init__(self, split: CocoSplit, size: int) -> None:
        self.split, self.size = split, size
        fits = len(split) * 3 * size * size <= IN_MEMORY_BYTES
        self.images = load_images(split, size) if fits else None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, rows: Tensor) -> Tensor:
        if self.images is not None:
            return self.images[rows]
        arrays = [_read_image(self.split.file_paths[int(r)], self.size) for r in rows]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def multilabel_targets(split: CocoSplit) -> Tensor:
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
    """The frozen encoder, its pretraining head (None for VGG16) and its history (chapter 2)."""

    encoder: nn.Module
    head: MultiLabelHead | None
    history: TrainHistory
    folder: Path


def encoder_key(config: RunConfig) -> dict[str, Any]:
    """The encoder's artifact key: its architecture and pretraining (and, for a SmallVGG
    pretrained on the data set's object labels, that data set)."""
    section = config.encoder
    settings: dict[str, Any] = {
        "kind": section.kind,
        "image_size": section.image_size,
        "pretrained": section.pretrained,
    }
    key: dict[str, Any] = {"encoder": settings, "version": STEP_VERSIONS["encoder"]}
    if section.kind == "small_vgg":
        settings |= {"channels": list(section.channels), "convs_per_block": section.convs_per_block}
        if section.pretrained:
            settings["pretraining"] = asdict(config.encoder_pretraining)
            key["data"] = data_identity(config)
    return key


def new_encoder(config: RunConfig, pretrained: bool = False) -> nn.Module:
    """A fresh encoder images (B, 3, S, S) → F (B, C, S/8 or S/16, …) of the config's kind."""
    section = config.encoder
    if section.kind == "vgg16":
        return vgg16_features(pretrained=pretrained)
    return SmallVGG(section.channels, section.convs_per_block, section.image_size)


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Macro mean average precision over the categories present in `targets` (chapter 2)."""
    present = targets.sum(0) > 0
    return float(
        average_precision_score(
            targets[:, present].numpy(), scores[:, present].numpy(), average="macro"
        )
    )


@torch.no_grad()
def classify(encoder: nn.Module, head: nn.Module, images_uint8: Tensor) -> Tensor:
    """Multi-label logits (num_images, num_categories) for uint8 images, in batches of 128,
    on the encoder's device (returned on the CPU)."""
    encoder.eval()
    head.eval()
    device = next(encoder.parameters()).device
    return torch.cat(
        [head(encoder(normalize(chunk).to(device))).cpu() for chunk in images_uint8.split(128)]
    )


def _pretrain_small_vgg(
    encoder: SmallVGG, data: PreparedData, config: RunConfig, device: torch.device, progress: bool
) -> tuple[MultiLabelHead, TrainHistory]:
    train, val = split_of(data, "train"), split_of(data, "val")
    if train.instances is None or val.instances is None:
        raise ValueError(
            "encoder.pretrained for small_vgg pretrains on object labels, but the data set has "
            "no instances files; set encoder.pretrained: false"
        )
    settings = config.encoder_pretraining
    size = config.encoder.image_size
    train_images, val_images = load_images(train, size), load_images(val, size)
    train_targets, val_targets = multilabel_targets(train), multilabel_targets(val)
    head = MultiLabelHead(encoder.out_channels, train_targets.shape[1])

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        order = torch.randperm(len(train_images), generator=generator)
        for indices in order.split(settings.batch_size):
            images = train_images[indices]
            flip = torch.Generator().manual_seed(int(indices[0]))
            if torch.rand((), generator=flip) < 0.5:
                images = images.flip(-1)  # horizontal flips: scenes are left-right symmetric
            yield normalize(images), train_targets[indices]

    def evaluate(encoder_: nn.Module, head_: nn.Module) -> float:
        return mean_average_precision(classify(encoder_, head_, val_images), val_targets)

    history = pretrain_encoder(encoder, head, batches, evaluate, settings, device, progress)
    return head, history


def frozen(*modules: nn.Module) -> None:
    """Eval mode and no gradients for every parameter of `modules`."""
    for module in modules:
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def encoder(
    config: RunConfig, context: DistContext | None = None, progress: bool = True
) -> PretrainedEncoder:
    """Build-or-load the run's frozen encoder: the book's SmallVGG pretrained on multi-label
    object classification, or torchvision's VGG16 (chapter 2)."""
    context = context or single_process(config)
    key = encoder_key(config)
    show = progress and context.is_main

    def build(folder: Path) -> None:
        seed_everything(config.encoder_pretraining.seed)
        model = new_encoder(config, pretrained=config.encoder.pretrained)
        history = TrainHistory()
        if isinstance(model, SmallVGG) and config.encoder.pretrained:
            head, history = _pretrain_small_vgg(
                model, load_data(config, show), config, context.device, show
            )
            classes = int(head.classifier.out_features)
            save_checkpoint(folder / "head.pt", head.cpu().state_dict(), {"classes": classes})
        save_checkpoint(folder / "encoder.pt", model.cpu().state_dict(), key["encoder"])
        (folder / "history.json").write_text(json.dumps(history.as_dict()))

    folder = _build_on_main(context, "encoder", key, build)
    model = new_encoder(config, pretrained=False)
    model.load_state_dict(load_checkpoint(folder / "encoder.pt", key["encoder"])["state_dict"])
    head = None
    if (folder / "head.pt").is_file():
        payload = load_checkpoint(folder / "head.pt")
        head = MultiLabelHead(model.out_channels, payload["config"]["classes"])
        head.load_state_dict(payload["state_dict"])
        frozen(head)
    frozen(model)
    history = TrainHistory(**json.loads((folder / "history.json").read_text()))
    return PretrainedEncoder(model, head, history, folder)


# --- features -----------------------------------------------------------------------------------


def features_key(config: RunConfig, source: dict[str, Any], split: str) -> dict[str, Any]:
    """Key of the grid features of `split` computed by the encoder whose artifact key is
    `source` (the pretrained encoder's, or a fine-tuning run's)."""
    return {
        "source": source,
        "split": split,
        "dtype": config.encoder.feature_dtype,
        "autocast": config.encoder.autocast,
        "version": STEP_VERSIONS["features"],
    }


def image_loader(config: RunConfig, split: CocoSplit, batch_size: int) -> DataLoader:
    """Images of a split in order, resized to encoder.image_size and ImageNet-normalised."""
    dataset = ImageDataset(split, image_transform(config.encoder.image_size, IMAGE_MEAN, IMAGE_STD))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=config.data.num_workers,
        collate_fn=collate_captions,
        worker_init_fn=die_with_parent,
    )


def split_features(
    config: RunConfig,
    split: str,
    context: DistContext | None = None,
    progress: bool = True,
    source: tuple[dict[str, Any], nn.Module] | None = None,
) -> MemmapFeatures:
    """Build-or-load the memory-mapped grid features (num_images, N, C) of `split` from the
    frozen encoder, or from `source` = (artifact key, encoder) of a fine-tuned encoder."""
    context = context or single_process(config)
    data = load_data(config, progress and context.is_main)
    images = split_of(data, split)
    if source is None:
        source = (encoder_key(config), encoder(config, context, progress).encoder)
    source_key, model = source
    key = features_key(config, source_key, split)

    def build(folder: Path) -> None:
        extract_features(
            model,
            image_loader(config, images, config.encoder.batch_size),
            folder / "features",
            images.image_ids,
            device=context.device,
            dtype=config.encoder.feature_dtype,
            meta={"split": split, "encoder": encoder_key(config)["encoder"]},
            autocast=config.encoder.autocast,
            progress=progress and context.is_main,
        )
        model.cpu()

    store = MemmapFeatures(_build_on_main(context, "features", key, build) / "features")
    store.check_image_ids(images.image_ids)
    return store


def in_memory(store: MemmapFeatures) -> MemmapFeatures | Tensor:
    """The store's rows as one float32 tensor when they fit in IN_MEMORY_BYTES, else the
    store itself (read row by row)."""
    fits = np.prod(store.shape) * 4 <= IN_MEMORY_BYTES
    return store.to_tensor() if fits else store


# --- captioners ---------------------------------------------------------------------------------


@dataclass
class TrainedCaptioner:
    """A trained captioner with its vocabulary and training history (chapters 3–4)."""

    model: Captioner
    vocabulary: Vocabulary
    history: TrainHistory
    kind: str
    folder: Path
    key: dict[str, Any]


def captioner_key(config: RunConfig, processes: int = 1) -> dict[str, Any]:
    """The captioner's artifact key: its features, vocabulary, architecture and training
    (and the number of processes that trained it: the data order depends on it)."""
    return {
        "features": features_key(config, encoder_key(config), "train") | {"split": None},
        "data": data_identity(config),
        "vocabulary": vocabulary_settings(config),
        "captioner": {"kind": config.captioner.kind, "sizes": dict(config.captioner.sizes)},
        "training": asdict(config.training),
        "processes": processes,
        "version": STEP_VERSIONS["captioner"],
    }


def new_captioner(config: RunConfig, vocab_size: int, feature_dim: int) -> Captioner:
    """A freshly initialised captioner of the config's kind and sizes."""
    try:
        return CAPTIONERS[config.captioner.kind](
            vocab_size=vocab_size, feature_dim=feature_dim, **config.captioner.sizes
        )
    except TypeError as error:
        raise ValueError(f"captioner.sizes: {error}") from error


def _train(
    config: RunConfig,
    data: PreparedData,
    context: DistContext,
    stores: tuple[MemmapFeatures, MemmapFeatures],
    folder: Path | None,
    resume: Path,
    progress: bool,
) -> None:
    """Train the captioner on frozen-encoder features (`stores`: the train and val split's);
    rank 0 writes it into `folder`."""
    show = progress and context.is_main
    train_store, val_store = stores
    training = config.training
    dataset = CaptionDataset(
        data.splits["train"],
        data.vocabulary,
        max_length=config.data.max_caption_length,
        features=in_memory(train_store),  # type: ignore[arg-type]
        strict=False,
    )
    val_features = in_memory(val_store)
    val_references = references(data.splits["val"])
    seed_everything(training.seed)
    model = new_captioner(config, len(data.vocabulary), train_store.shape[-1])
    module = wrap_model(model, context)

    def batches(epoch: int) -> DataLoader:
        return distributed_loader(
            dataset,
            training.batch_size,
            context,
            epoch,
            seed=training.seed * 1000,
            num_workers=config.data.num_workers,
        )

    def validate(model_: nn.Module) -> float:
        score = 0.0
        if context.is_main:
            predictions = caption_features(
                model_,  # type: ignore[arg-type]
                val_features,
                val_store.image_ids,
                data.vocabulary,
                training.val_beam_size,
                training.max_length,
            )
            predictions = {i: predictions[i] for i in val_references}
            score = score_captions(
                predictions, val_references, metrics=("CIDEr",), tokenizer="simple"
            )["CIDEr"]
        return broadcast_float(score, context)

    resume.parent.mkdir(parents=True, exist_ok=True)
    history = train_captioner(
        model,
        batches,
        validate,
        training,
        checkpoint_path=resume,
        device=context.device,
        progress=show,
        training_module=module if context.enabled else None,
        is_main=context.is_main,
    )
    if folder is not None:
        model.cpu()
        words = data.vocabulary.words
        save_checkpoint(folder / "captioner.pt", model.state_dict(), model.config(), words)
        (folder / "history.json").write_text(json.dumps(history.as_dict()))


def load_captioner(folder: Path, config: RunConfig, vocabulary: Vocabulary) -> Captioner:
    """The captioner stored in an artifact folder, in eval mode."""
    payload = load_checkpoint(folder / "captioner.pt", expected_vocabulary=vocabulary.words)
    model = CAPTIONERS[config.captioner.kind].from_config(payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model


def captioner(
    config: RunConfig, context: DistContext | None = None, progress: bool = True
) -> TrainedCaptioner:
    """Build-or-load the run's captioner, trained on frozen-encoder features with the best
    validation-CIDEr epoch kept (chapters 3, 4, 12); on the CPU, training runs with
    `training.threads` PyTorch threads. A killed training run resumes from its last finished
    epoch (`<artifact>.resume/train_state.pt`, removed once it is published)."""
    context = context or single_process(config)
    with main_first(context):
        data = load_data(config, progress and context.is_main)
    key = captioner_key(config, context.world_size)
    path = artifact_path("captioner", key)
    resume = path.parent / f"{path.name}.resume" / "train_state.pt"

    def build(folder: Path | None) -> None:
        # the encoder and features keep the caller's threads; training runs with its own
        stores = (
            split_features(config, "train", context, progress),
            split_features(config, "val", context, progress),
        )
        threads: int | None = config.training.threads if context.device.type == "cpu" else None
        with torch_threads(threads) if threads is not None else contextlib.nullcontext():
            _train(config, data, context, stores, folder, resume, progress)

    if not context.enabled:
        cached("captioner", key, build)
    else:
        barrier(context)
        if not is_complete(path):
            if context.is_main:
                cached("captioner", key, build)
            else:
                build(None)  # trains alongside rank 0; only rank 0 writes
        barrier(context)
    if context.is_main and resume.parent.is_dir():
        shutil.rmtree(resume.parent, ignore_errors=True)
    model = load_captioner(path, config, data.vocabulary)
    history = TrainHistory(**json.loads((path / "history.json").read_text()))
    return TrainedCaptioner(model, data.vocabulary, history, config.captioner.kind, path, key)


def _train_in_worker(config: RunConfig) -> None:
    """Build one captioner in a forked worker of `captioners`, with one thread throughout (a
    forked child must not start the thread pool its parent used) and no progress bars."""
    with torch_threads(1):
        captioner(config, progress=False)


def captioners(
    configs: Sequence[RunConfig], processes: int = 2, progress: bool = True
) -> list[TrainedCaptioner]:
    """Build-or-load several captioners (training seeds, say; chapters 3, 4 and 11), the
    missing ones trained side by side in `processes` forked one-thread workers when they all
    train on the CPU with `training.threads` = 1, on Linux; otherwise one at a time. The
    artifacts are those `captioner` builds one at a time (same keys, same weights). Workers
    show no progress bars; when one fails, the queued trainings are cancelled, the running
    ones finish, and the error is raised."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    missing: dict[str, RunConfig] = {}
    for config in configs:
        path = artifact_path("captioner", captioner_key(config))
        if not is_complete(path):
            missing.setdefault(str(path), config)
    for config in missing.values():  # data and features once, before any worker starts
        load_data(config, progress)
        for split in ("train", "val"):
            split_features(config, split, progress=progress)
    side_by_side = all(
        config.training.threads == 1 and single_process(config).device.type == "cpu"
        for config in missing.values()
    )
    if side_by_side and len(missing) > 1 and processes > 1 and sys.platform == "linux":
        # forked workers: nothing re-imports the caller's script (as spawn would)
        with ProcessPoolExecutor(
            min(processes, len(missing)),
            mp_context=get_context("fork"),
            initializer=die_with_parent,
        ) as pool:
            futures = [pool.submit(_train_in_worker, config) for config in missing.values()]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return [captioner(config, progress=progress) for config in configs]


def score_split(
    config: RunConfig,
    captions: dict[int, str],
    split: str,
    metrics: str | Sequence[str] | None = None,
    tokenizer: str | None = None,
) -> dict[str, float]:
    """Caption metrics of a split's captions against its references (evaluation section's
    metrics and tokenizer unless given)."""
    refs = references(split_of(load_data(config, False), split))
    return score_captions(
        {i: captions[i] for i in refs},
        refs,
        metrics=metrics or config.evaluation.metrics,
        tokenizer=tokenizer or config.evaluation.tokenizer,
    )


# --- fine-tuning --------------------------------------------------------------------------------


@dataclass
class FinetunedCaptioner:
    """A captioner and its encoder after LRP-IFT or the control (chapter 11)."""

    model: Captioner
    encoder: nn.Module
    vocabulary: Vocabulary
    history: FinetuneHistory
    kind: str
    method: str
    seed: int
    folder: Path
    key: dict[str, Any]


def finetune_settings(config: RunConfig, method: str | None = None, seed: int | None = None):
    """The config's fine-tuning settings, with `method` and `seed` where given."""
    settings: FinetuneConfig = config.finetune
    if method is not None:
        settings = replace(settings, method=method)
    if seed is not None:
        settings = replace(settings, seed=seed)
    return settings


def finetune_key(config: RunConfig, settings: FinetuneConfig) -> dict[str, Any]:
    """Artifact key: the trained captioner's and the encoder's keys plus the fine-tuning."""
    return {
        "captioner": captioner_key(config),
        "encoder": encoder_key(config),
        "finetune": settings.as_dict(),
        "version": STEP_VERSIONS["finetuned"],
    }


def finetuned(
    config: RunConfig,
    method: str | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> FinetunedCaptioner:
    """Build-or-load the run's captioner and encoder fine-tuned from images with
    `finetune.method` ("lrp": LRP-inference fine-tuning, or "control"), overriding method
    and seed where given (chapter 11). Every run starts from the trained captioner and the
    pretrained encoder; the seed sets the image order, the caption drawn per image and
    dropout."""
    settings = finetune_settings(config, method, seed)
    key = finetune_key(config, settings)
    context = single_process(config)
    data = load_data(config, progress)

    def build(folder: Path) -> None:
        train = split_of(data, "train")
        if any(not captions for captions in train.captions):
            raise ValueError("fine-tuning needs captions for every training image")
        seed_everything(settings.seed)
        model = captioner(config, progress=progress).model
        model_encoder = encoder(config, progress=progress).encoder
        length = config.data.max_caption_length
        encoded = [
            [torch.tensor(data.vocabulary.encode(c, length, strict=False)) for c in captions]
            for captions in train.captions
        ]
        batches = finetune_batches(
            _train_images(config, train),
            encoded,
            settings.batch_size,
            settings.captions_per_image,
            settings.seed,
            normalize,
        )
        history = finetune_captioner(
            model,
            model_encoder,
            batches,
            settings,
            progress=progress,
            vocabulary=data.vocabulary,
            device=context.device,
        )
        words = data.vocabulary.words
        save_checkpoint(folder / "captioner.pt", model.cpu().state_dict(), model.config(), words)
        state = model_encoder.cpu().state_dict()
        save_checkpoint(folder / "encoder.pt", state, encoder_key(config)["encoder"])
        (folder / "history.json").write_text(json.dumps(history.as_dict()))

    folder = cached("finetuned", key, build)
    model = load_captioner(folder, config, data.vocabulary)
    tuned_encoder = new_encoder(config)
    tuned_encoder.load_state_dict(load_checkpoint(folder / "encoder.pt")["state_dict"])
    frozen(tuned_encoder)
    history = FinetuneHistory(**json.loads((folder / "history.json").read_text()))
    kind = config.captioner.kind
    return FinetunedCaptioner(
        model,
        tuned_encoder,
        data.vocabulary,
        history,
        kind,
        settings.method,
        settings.seed,
        folder,
        key,
    )


_TRAIN_IMAGES: dict[str, SplitImages] = {}


def _train_images(config: RunConfig, split: CocoSplit) -> SplitImages:
    """The training images for fine-tuning, read once per process (every run uses them)."""
    memo = config_hash({"data": data_identity(config), "size": config.encoder.image_size})
    if memo not in _TRAIN_IMAGES:
        _TRAIN_IMAGES[memo] = SplitImages(split, config.encoder.image_size)
    return _TRAIN_IMAGES[memo]


def finetuned_features(
    config: RunConfig, tuned: FinetunedCaptioner, split: str, progress: bool = False
) -> MemmapFeatures:
    """The features of `split` from a fine-tuned encoder (an artifact keyed by its run)."""
    return split_features(config, split, progress=progress, source=(tuned.key, tuned.encoder))
