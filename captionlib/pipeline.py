"""The steps the command line runs: data, encoder, features, train, evaluate, explain,
fine-tune, each from one `RunConfig` (chapter 12).

Every step writes into the run folder (`config.run_dir`) and reuses what an earlier step left
there, so `train`, then `evaluate`, then `explain` share the encoder and the features::

    run_dir/run_config.json       the data, encoder, captioner and training settings
    run_dir/vocabulary.json       the training vocabulary
    run_dir/prepared/             a real data set in the book's form (captionlib.data.prepare)
    run_dir/encoder.pt            the frozen encoder (SmallVGG pretrained here, or VGG16)
    run_dir/features/<split>.npy  its features, memory-mapped (captionlib.features)
    run_dir/captioner.pt          the best captioner; train_state.pt lets a run resume
    run_dir/evaluation_<split>.json, explanations_<split>.pt, explanation_<split>.png
    run_dir/finetuned-<method>/   the same files for the fine-tuned encoder and captioner

In a distributed run (`captionlib.distributed`), rank 0 prepares data, encoder and features
while the other processes wait; all of them then train the captioner together. On several
nodes the run folder must be on a file system that every node sees.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as functional
from sklearn.metrics import average_precision_score
from torch import Tensor, nn
from torch.utils.data import DataLoader

from captionlib.artifacts import atomic_write_bytes
from captionlib.checkpoints import load_checkpoint, save_checkpoint
from captionlib.data.coco import (
    CaptionDataset,
    CocoSplit,
    ImageDataset,
    collate_captions,
    image_transform,
    load_coco_split,
    references,
)
from captionlib.data.prepare import MANIFEST, PreparedData, load_prepared, prepare_dataset
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
from captionlib.explain.api import explain
from captionlib.features import MemmapFeatures, extract_features, store_exists
from captionlib.finetune import FinetuneHistory, finetune_captioner
from captionlib.generate import caption_text, decode_features
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.encoder import MultiLabelHead, SmallVGG, vgg16_features
from captionlib.models.multihead import MultiHeadCaptioner
from captionlib.recipes import classify, load_images, multilabel_targets, normalize
from captionlib.runconfig import RunConfig
from captionlib.train import TrainHistory, pretrain_encoder, train_captioner
from captionlib.utils import seed_everything, select_device
from captionlib.viz.relevance import relevance_grid

CAPTIONERS: dict[str, type[Captioner]] = {
    "adaptive": AdaptiveAttentionCaptioner,
    "multihead": MultiHeadCaptioner,
}
STAGES = ("trained", "finetuned")


def single_process(config: RunConfig) -> DistContext:
    """The context of an ordinary (not distributed) run on the config's device."""
    return DistContext(device=select_device(config.device_name()))


def stage_dir(config: RunConfig, stage: str = "trained") -> Path:
    """The run folder ("trained") or the folder of the fine-tuned models ("finetuned")."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "trained":
        return config.run_dir
    return config.run_dir / f"finetuned-{config.finetune.method}"


# --- data ---------------------------------------------------------------------------------------


def prepare_data(config: RunConfig, progress: bool = True) -> Path:
    """Generate ShapeWorld, or bring a real data set into the book's form; return its folder."""
    if config.data.dataset == "shapeworld":
        return ensure_shapeworld(ShapeWorldConfig(**config.data.shapeworld), progress)
    folder = config.run_dir / "prepared"
    if not (folder / MANIFEST).is_file():
        prepare_dataset(
            config.data.dataset,
            config.data.root,  # type: ignore[arg-type]
            folder,
            min_count=config.data.word_threshold(),
            max_tokens=config.data.max_caption_length,
            progress=progress,
        )
    return folder


def load_data(config: RunConfig, progress: bool = True) -> PreparedData:
    """The splits and the training vocabulary of the config's data set (prepared if needed)."""
    folder = prepare_data(config, progress)
    if config.data.dataset != "shapeworld":
        return load_prepared(folder)
    splits = {
        name: load_coco_split(
            folder / f"captions_{name}.json", folder / "images", folder / f"instances_{name}.json"
        )
        for name in SHAPEWORLD_SPLITS
    }
    train_captions = (caption for captions in splits["train"].captions for caption in captions)
    vocabulary = Vocabulary.build(train_captions, config.data.word_threshold())
    return PreparedData(splits, vocabulary, {"dataset": "shapeworld", "source": str(folder)})


def _split(data: PreparedData, name: str) -> CocoSplit:
    if name not in data.splits:
        raise ValueError(f"split {name!r} not in the data set; it has {sorted(data.splits)}")
    return data.splits[name]


# --- encoder ------------------------------------------------------------------------------------


def new_encoder(config: RunConfig, pretrained: bool = False) -> nn.Module:
    """A fresh encoder images (B, 3, S, S) → F (B, C, S/16 or S/8, …) of the config's kind."""
    section = config.encoder
    if section.kind == "vgg16":
        return vgg16_features(pretrained=pretrained)
    return SmallVGG(section.channels, section.convs_per_block, section.image_size)


def _mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    present = targets.sum(0) > 0
    return float(average_precision_score(targets[:, present], scores[:, present], average="macro"))


def _images(split: CocoSplit, size: int) -> Tensor:
    images = load_images(split)  # (num_images, 3, H, W) uint8
    if images.shape[-1] != size or images.shape[-2] != size:
        resized = functional.interpolate(images.float(), (size, size), mode="bilinear")
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images


def _pretrain_small_vgg(
    encoder: SmallVGG, data: PreparedData, config: RunConfig, device: torch.device, progress: bool
) -> None:
    train, val = _split(data, "train"), _split(data, "val")
    if train.instances is None or val.instances is None:
        raise ValueError(
            "encoder.pretrained for small_vgg pretrains on object labels, but the data set has "
            "no instances files; set encoder.pretrained: false"
        )
    settings = config.encoder_pretraining
    size = config.encoder.image_size
    train_images, val_images = _images(train, size), _images(val, size)
    train_targets, val_targets = multilabel_targets(train), multilabel_targets(val)
    head = MultiLabelHead(encoder.out_channels, train_targets.shape[1])

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        for indices in torch.randperm(len(train_images), generator=generator).split(
            settings.batch_size
        ):
            yield normalize(train_images[indices]), train_targets[indices]

    def evaluate(encoder_: nn.Module, head_: nn.Module) -> float:
        scores = classify(encoder_.cpu(), head_.cpu(), val_images)  # type: ignore[arg-type]
        encoder_.to(device)
        head_.to(device)
        return _mean_average_precision(scores, val_targets)

    pretrain_encoder(encoder, head, batches, evaluate, settings, device, progress)


def _encoder_config(config: RunConfig) -> dict[str, Any]:
    """The encoder settings that determine its weights (stored in encoder.pt)."""
    section = asdict(config.encoder)
    kept = ("kind", "image_size", "pretrained", "channels", "convs_per_block")
    return {key: section[key] for key in kept} | {"pretraining": asdict(config.encoder_pretraining)}


def build_encoder(
    config: RunConfig, data: PreparedData, context: DistContext, progress: bool = True
) -> nn.Module:
    """Build-or-load the run's frozen encoder (run_dir/encoder.pt); rank 0 builds it."""
    path = config.run_dir / "encoder.pt"
    with main_first(context):
        if context.is_main and not path.is_file():
            seed_everything(config.seed)
            encoder = new_encoder(config, pretrained=config.encoder.pretrained)
            if isinstance(encoder, SmallVGG) and config.encoder.pretrained:
                _pretrain_small_vgg(encoder, data, config, context.device, progress)
            save_checkpoint(path, encoder.state_dict(), _encoder_config(config))
    return load_encoder(config, path)


def load_encoder(config: RunConfig, path: Path) -> nn.Module:
    """The encoder stored at `path`, frozen, in eval mode; its config must match the run's."""
    encoder = new_encoder(config, pretrained=False)
    encoder.load_state_dict(load_checkpoint(path, _encoder_config(config))["state_dict"])
    encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder


# --- features -----------------------------------------------------------------------------------


def image_loader(config: RunConfig, split: CocoSplit, batch_size: int) -> DataLoader:
    """Images of a split in order, resized to encoder.image_size and ImageNet-normalised."""
    dataset = ImageDataset(split, image_transform(config.encoder.image_size))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=config.data.num_workers,
        collate_fn=collate_captions,
    )


def split_features(
    config: RunConfig,
    data: PreparedData,
    name: str,
    encoder: nn.Module,
    folder: Path,
    context: DistContext,
    progress: bool = True,
) -> MemmapFeatures:
    """Build-or-load the memory-mapped features of split `name` under folder/features/."""
    split = _split(data, name)
    path = folder / "features" / name
    with main_first(context):
        if context.is_main and not store_exists(path):
            extract_features(
                encoder,
                image_loader(config, split, config.encoder.batch_size),
                path,
                split.image_ids,
                device=context.device,
                dtype=config.encoder.feature_dtype,
                meta={"encoder": _encoder_config(config), "split": name},
                autocast=config.encoder.autocast,
                progress=progress,
            )
    store = MemmapFeatures(path)
    store.check_image_ids(split.image_ids)
    return store


# --- captioner ----------------------------------------------------------------------------------


def new_captioner(config: RunConfig, vocab_size: int, feature_dim: int) -> Captioner:
    """A fresh captioner of the config's kind and sizes."""
    try:
        return CAPTIONERS[config.captioner.kind](
            vocab_size=vocab_size, feature_dim=feature_dim, **config.captioner.sizes
        )
    except TypeError as error:
        raise ValueError(f"captioner.sizes: {error}") from error


def caption_store(
    model: Captioner,
    store: MemmapFeatures,
    vocab: Vocabulary,
    beam_size: int,
    max_length: int,
    chunk: int = 500,
) -> dict[int, str]:
    """image id → caption for every row of a feature store, read chunk by chunk."""
    device = next(model.parameters()).device
    captions: dict[int, str] = {}
    for start in range(0, len(store), chunk):
        rows = store[start : start + chunk].to(device)  # (chunk, N, C)
        decoded = decode_features(model, rows, vocab, beam_size, max_length)
        ids = store.image_ids[start : start + chunk]
        captions.update({i: caption_text(c, vocab) for i, c in zip(ids, decoded, strict=True)})
    return captions


_RUN_SECTIONS = ("data", "encoder", "captioner", "training")


def check_run_folder(config: RunConfig) -> None:
    """Record the settings a run folder's files depend on (run_config.json), or refuse to
    train into a folder whose files came from other settings."""
    folder = config.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    current = json.loads(json.dumps({key: asdict(getattr(config, key)) for key in _RUN_SECTIONS}))
    path = folder / "run_config.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            message = f"{path} is not valid JSON ({error}); delete the run folder"
            raise ValueError(message) from error
        changed = [key for key in _RUN_SECTIONS if stored.get(key) != current[key]]
        if changed:
            raise ValueError(
                f"{folder} holds a run with other {', '.join(changed)} settings; train into "
                "another folder (--set output=...) or delete it"
            )
    else:
        atomic_write_bytes(path, json.dumps(current, indent=1).encode())


def train(
    config: RunConfig, context: DistContext | None = None, progress: bool = True
) -> TrainHistory:
    """Train the captioner on frozen-encoder features; keep the best validation-CIDEr epoch."""
    context = context or single_process(config)
    show = progress and context.is_main
    with main_first(context):
        data = load_data(config, show)
    folder = config.run_dir
    if context.is_main:
        check_run_folder(config)
        data.vocabulary.save(folder / "vocabulary.json")
    encoder = build_encoder(config, data, context, show)
    train_store = split_features(config, data, "train", encoder, folder, context, show)
    val_store = split_features(config, data, "val", encoder, folder, context, show)
    dataset = CaptionDataset(
        data.splits["train"],
        data.vocabulary,
        max_length=config.data.max_caption_length,
        features=train_store,  # type: ignore[arg-type]
        strict=False,
    )
    seed_everything(config.seed)
    model = new_captioner(config, len(data.vocabulary), train_store.shape[-1])
    module = wrap_model(model, context)
    training = config.training
    val_references = references(data.splits["val"])

    def batches(epoch: int) -> DataLoader:
        return distributed_loader(
            dataset,
            training.batch_size,
            context,
            epoch,
            seed=training.seed,
            num_workers=config.data.num_workers,
        )

    def validate(model_: nn.Module) -> float:
        score = 0.0
        if context.is_main:
            predictions = caption_store(
                model_,  # type: ignore[arg-type]
                val_store,
                data.vocabulary,
                training.val_beam_size,
                training.max_length,
            )
            predictions = {i: predictions[i] for i in val_references}
            score = score_captions(
                predictions, val_references, metrics=("CIDEr",), tokenizer="simple"
            )["CIDEr"]
        return broadcast_float(score, context)

    history = train_captioner(
        model,
        batches,
        validate,
        training,
        checkpoint_path=folder / "train_state.pt",
        device=context.device,
        progress=show,
        training_module=module if context.enabled else None,
        is_main=context.is_main,
    )
    if context.is_main:
        save_checkpoint(
            folder / "captioner.pt", model.state_dict(), model.config(), data.vocabulary.words
        )
        atomic_write_bytes(folder / "history.json", json.dumps(history.as_dict()).encode())
    barrier(context)
    return history


def load_models(
    config: RunConfig, data: PreparedData, stage: str = "trained"
) -> tuple[Captioner, nn.Module]:
    """The trained (or fine-tuned) captioner and its encoder, in eval mode."""
    folder = stage_dir(config, stage)
    path = folder / "captioner.pt"
    if not path.is_file():
        step = "train" if stage == "trained" else "finetune"
        raise FileNotFoundError(f"{path} not found: run `python -m captionlib {step}` first")
    payload = load_checkpoint(path, expected_vocabulary=data.vocabulary.words)
    model = CAPTIONERS[config.captioner.kind].from_config(payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, load_encoder(config, folder / "encoder.pt")


# --- evaluate, explain, fine-tune ---------------------------------------------------------------


def evaluate(
    config: RunConfig, split: str | None = None, stage: str = "trained", progress: bool = True
) -> dict[str, Any]:
    """Caption a split with beam search and score it; writes evaluation_<split>.json."""
    name = split or config.evaluation.split
    context = single_process(config)
    data = load_data(config, progress)
    model, encoder = load_models(config, data, stage)
    folder = stage_dir(config, stage)
    store = split_features(config, data, name, encoder, folder, context, progress)
    section = config.evaluation
    model.to(context.device)
    captions = caption_store(model, store, data.vocabulary, section.beam_size, section.max_length)
    refs = references(_split(data, name))
    scores = score_captions(
        {i: captions[i] for i in refs}, refs, metrics=section.metrics, tokenizer=section.tokenizer
    )
    result = {"split": name, "stage": stage, "scores": scores, "captions": captions}
    atomic_write_bytes(folder / f"evaluation_{name}.json", json.dumps(result, indent=1).encode())
    return result


def explain_images(
    config: RunConfig,
    split: str | None = None,
    count: int | None = None,
    stage: str = "trained",
    progress: bool = True,
) -> dict[str, Any]:
    """Explain every word of the model's own captions of the split's first images.

    Writes explanations_<split>.pt (caption ids, per-word heatmaps (B, K, H, W),
    word relevance (B, K, K)) and explanation_<split>.png (the first image's words).
    """
    section = config.explain
    name = split or section.split
    count = count or section.images
    context = single_process(config)
    data = load_data(config, progress)
    model, encoder = load_models(config, data, stage)
    model.to(context.device)
    encoder.to(context.device)
    images_split = _split(data, name)
    count = min(count, len(images_split))
    batch = next(iter(image_loader(config, images_split, count)))
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
    folder = stage_dir(config, stage)
    heatmap = explanation.heatmap
    payload = {
        "method": explanation.method,
        "image_ids": batch["image_id"],
        "caption_ids": explanation.caption_ids.cpu(),
        "mask": explanation.mask.cpu(),
        "heatmap": heatmap.detach().cpu() if heatmap is not None else None,
        "word_relevance": (
            explanation.word_relevance.detach().cpu()
            if explanation.word_relevance is not None
            else None
        ),
    }
    torch.save(payload, folder / f"explanations_{name}.pt")
    figure_path = folder / f"explanation_{name}.png"
    if heatmap is not None:
        figure = relevance_grid(
            images[0], words[0], heatmap[0, : len(words[0])].detach().cpu(), normalized=True
        )
        figure.savefig(figure_path, dpi=80)
        plt.close(figure)
    image_ids = [int(i) for i in batch["image_id"]]
    return {
        "split": name,
        "method": explanation.method,
        "captions": {i: " ".join(w) for i, w in zip(image_ids, words, strict=True)},
        "seconds": seconds,
        "words": sum(len(w) for w in words),
        "file": str(folder / f"explanations_{name}.pt"),
        "figure": str(figure_path) if heatmap is not None else None,
    }


def _finetune_batches(config: RunConfig, split: CocoSplit, vocab: Vocabulary):
    """batches(epoch) for `finetune_captioner`, streaming images from disk (the encoder trains,
    so its features cannot be cached): each image once, `captions_per_image` of its captions."""
    settings = config.finetune
    encoded = [
        [
            torch.tensor(vocab.encode(c, config.data.max_caption_length, strict=False))
            for c in captions
        ]
        for captions in split.captions
    ]
    dataset = ImageDataset(split, image_transform(config.encoder.image_size))

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=settings.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=config.data.num_workers,
            collate_fn=collate_captions,
        )
        for batch in loader:
            chosen, rows = [], []
            for row, index in enumerate(batch["image_index"].tolist()):
                own = encoded[index]
                for pick in torch.randperm(len(own), generator=generator)[
                    : settings.captions_per_image
                ]:
                    chosen.append(own[int(pick)])
                    rows.append(row)
            caption_ids = collate_captions([{"caption_ids": c} for c in chosen])["caption_ids"]
            yield {
                "images": batch["image"],
                "caption_ids": caption_ids,  # (B, T)
                "image_rows": torch.tensor(rows, dtype=torch.long),  # (B,)
            }

    return batches


def finetune(config: RunConfig, progress: bool = True) -> FinetuneHistory:
    """LRP-inference fine-tuning (or its control, finetune.method) of the trained captioner and
    its encoder, from images; writes run_dir/finetuned-<method>/."""
    context = single_process(config)
    data = load_data(config, progress)
    model, encoder = load_models(config, data, "trained")
    train_split = data.splits["train"]
    if any(not captions for captions in train_split.captions):
        raise ValueError("fine-tuning needs captions for every training image")
    history = finetune_captioner(
        model,
        encoder,
        _finetune_batches(config, train_split, data.vocabulary),
        config.finetune,
        progress,
        vocabulary=data.vocabulary,
        device=context.device,
    )
    folder = stage_dir(config, "finetuned")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "features", ignore_errors=True)  # made by the previous encoder
    save_checkpoint(
        folder / "captioner.pt", model.state_dict(), model.config(), data.vocabulary.words
    )
    save_checkpoint(folder / "encoder.pt", encoder.state_dict(), _encoder_config(config))
    atomic_write_bytes(folder / "history.json", json.dumps(history.as_dict()).encode())
    return history
