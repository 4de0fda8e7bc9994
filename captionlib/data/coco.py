"""COCO-format captions and instances through pycocotools; images, transforms, loaders (chapter 1).

The same code reads ShapeWorld and real COCO 2014/2017::

    split = load_coco_split("annotations/captions_val2017.json", "val2017",
                            instances_json="annotations/instances_val2017.json")
    vocab = Vocabulary.build(chain.from_iterable(train.captions), min_count=5)
    data = CaptionDataset(split, vocab, image_transform(224))
    batch = next(iter(caption_loader(data, batch_size=8)))   # image (8, 3, 224, 224), ...

Images are normalised with the ImageNet channel mean and standard deviation
(`IMAGENET_MEAN`, `IMAGENET_STD`) for ShapeWorld as well: one convention for every encoder,
including torchvision's pretrained VGG16.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from captionlib.data.vocab import Vocabulary
from captionlib.utils import die_with_parent

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PIL modes converted to RGB by `load_image`; anything else (16-bit, float) is rejected.
_CONVERTIBLE_MODES = ("RGB", "L", "LA", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "1")


@dataclass
class CocoSplit:
    """One split of a COCO-format data set.

    `image_ids[i]`, `file_paths[i]` and `captions[i]` describe image `i` (the image index);
    ids are sorted ascending. `captions_coco` and `instances` are the pycocotools indexes
    of the two annotation files (`instances` is None when no instances file was given).
    """

    image_ids: list[int]
    file_paths: list[Path]
    captions: list[list[str]]
    image_dir: Path
    captions_file: Path
    captions_coco: COCO
    instances_file: Path | None = None
    instances: COCO | None = None

    def __post_init__(self) -> None:
        self._index = {image_id: i for i, image_id in enumerate(self.image_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_captions(self) -> int:
        return sum(len(captions) for captions in self.captions)

    def index_of(self, image_id: int) -> int:
        """The image index of COCO image id `image_id`."""
        if image_id not in self._index:
            raise KeyError(f"image id {image_id} is not in the split {self.captions_file}")
        return self._index[image_id]


def _read_json(path: Path, kind: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{kind} annotation file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as handle:
            payload = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{kind} annotation file {path} is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{kind} annotation file {path} must hold a JSON object at the top")
    return payload


def _records(payload: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    records = payload.get(key)
    if records is None:
        raise ValueError(f"annotation file {path} has no '{key}' field")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"annotation file {path}: '{key}' must be a list of objects")
    return records


def _check_fields(
    records: Sequence[dict[str, Any]], fields: Mapping[str, type | tuple[type, ...]], where: str
) -> None:
    for position, record in enumerate(records):
        for field, kind in fields.items():
            if field not in record:
                raise ValueError(f"{where}[{position}] has no '{field}' field")
            value = record[field]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(
                    f"{where}[{position}]: field '{field}' has type {type(value).__name__}"
                )


def _check_unique(ids: Iterable[int], where: str) -> None:
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"{where}: duplicate ids {duplicates[:10]}")


def _unknown_ids(ids: Iterable[int], known: set[int]) -> list[int]:
    return sorted({i for i in ids if i not in known})


def _coco_index(payload: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = payload
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def read_coco(path: str | Path) -> COCO:
    """A pycocotools index of one COCO annotation file, without pycocotools' progress
    printout (chapter 1). A missing file or malformed JSON raises an error naming the file."""
    path = Path(path)
    return _coco_index(_read_json(path, "COCO"))


def _load_instances(path: Path, image_ids: set[int]) -> COCO:
    payload = _read_json(path, "instances")
    images = _records(payload, "images", path)
    annotations = _records(payload, "annotations", path)
    categories = _records(payload, "categories", path)
    _check_fields(images, {"id": int}, f"{path}: images")
    _check_fields(categories, {"id": int, "name": str}, f"{path}: categories")
    _check_fields(
        annotations,
        {"id": int, "image_id": int, "category_id": int, "bbox": list},
        f"{path}: annotations",
    )
    _check_unique((a["id"] for a in annotations), f"{path}: annotations")
    instance_images = {image["id"] for image in images}
    missing = _unknown_ids(image_ids, instance_images)
    if missing:
        raise ValueError(f"instances file {path} lacks images of the captions file: {missing[:10]}")
    unknown = _unknown_ids((a["image_id"] for a in annotations), instance_images)
    if unknown:
        raise ValueError(f"instances file {path}: annotations for unknown image ids {unknown[:10]}")
    unknown = _unknown_ids((a["category_id"] for a in annotations), {c["id"] for c in categories})
    if unknown:
        raise ValueError(f"instances file {path}: annotations with unknown categories {unknown}")
    return _coco_index(payload)


def load_coco_split(
    captions_json: str | Path,
    image_dir: str | Path,
    instances_json: str | Path | None = None,
) -> CocoSplit:
    """Load a COCO-format captions file (and optionally its instances file).

    `image_dir` is the folder the images' `file_name` fields are relative to. Images without
    captions are kept (they have an empty caption list); images are checked only when read.
    """
    captions_file, image_dir = Path(captions_json), Path(image_dir)
    payload = _read_json(captions_file, "captions")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    images = _records(payload, "images", captions_file)
    annotations = _records(payload, "annotations", captions_file)
    if not images or not annotations:
        raise ValueError(f"captions file {captions_file} is empty (no images or no captions)")
    _check_fields(images, {"id": int, "file_name": str}, f"{captions_file}: images")
    _check_fields(
        annotations, {"id": int, "image_id": int, "caption": str}, f"{captions_file}: annotations"
    )
    _check_unique((image["id"] for image in images), f"{captions_file}: images")
    _check_unique((a["id"] for a in annotations), f"{captions_file}: annotations")
    file_names = {image["id"]: image["file_name"] for image in images}
    unknown = _unknown_ids((a["image_id"] for a in annotations), set(file_names))
    if unknown:
        raise ValueError(
            f"captions file {captions_file}: captions for unknown image ids {unknown[:10]}"
        )

    coco = _coco_index(payload)
    image_ids = sorted(file_names)
    captions = [
        [a["caption"] for a in sorted(coco.imgToAnns[image_id], key=lambda a: a["id"])]
        for image_id in image_ids
    ]
    instances_file = Path(instances_json) if instances_json is not None else None
    instances = _load_instances(instances_file, set(image_ids)) if instances_file else None
    return CocoSplit(
        image_ids=image_ids,
        file_paths=[image_dir / file_names[image_id] for image_id in image_ids],
        captions=captions,
        image_dir=image_dir,
        captions_file=captions_file,
        captions_coco=coco,
        instances_file=instances_file,
        instances=instances,
    )


def load_image(
    path: str | Path, size: int | None = None, expected_size: tuple[int, int] | None = None
) -> Image.Image:
    """Read an image file as RGB, optionally resized to `size` x `size` (bilinear).

    Grey-scale, palette and RGBA images are converted to RGB (alpha is dropped);
    `expected_size` = (width, height) rejects an image of another size before resizing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as handle:
            handle.load()
            image = handle.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from error
    if image.mode not in _CONVERTIBLE_MODES:
        raise ValueError(f"image file {path} has mode {image.mode!r}; expected RGB-convertible")
    if image.mode != "RGB":
        image = image.convert("RGB")
    if expected_size is not None and image.size != tuple(expected_size):
        raise ValueError(
            f"image file {path} has size {image.size} (width, height), expected {expected_size}"
        )
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def image_transform(
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[Image.Image], Tensor]:
    """PIL RGB image -> normalised float tensor (3, size, size); no resize when size is None."""
    steps: list[Callable] = [transforms.Resize((size, size))] if size is not None else []
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def denormalize(
    images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Undo `image_transform`'s normalisation: (..., 3, H, W) -> values in [0, 1] (clamped)."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * std_t + mean_t).clamp(0.0, 1.0)


class ImageDataset(Dataset):
    """One item per image: dict(image (3, H, W), image_index, image_id)."""

    def __init__(self, split: CocoSplit, transform: Callable[[Image.Image], Tensor]) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = load_image(self.split.file_paths[index])
        return {
            "image": self.transform(image),
            "image_index": index,
            "image_id": self.split.image_ids[index],
        }


class CaptionDataset(Dataset):
    """One item per (image, caption) pair, in image order then caption order.

    An item is dict(image (3, H, W) | features, image_index, image_id, caption_ids (T,)).
    With `features` (a tensor whose row i belongs to image i, e.g. (num_images, N, C)
    cached encoder features) items carry `features` instead of `image` and no image is read.
    Every caption is encoded up front, so a caption with no known words fails here (with
    `strict`) and not in the middle of an epoch.
    """

    def __init__(
        self,
        split: CocoSplit,
        vocab: Vocabulary,
        transform: Callable[[Image.Image], Tensor] | None = None,
        max_length: int = 30,
        features: Tensor | None = None,
        strict: bool = True,
    ) -> None:
        if features is None and transform is None:
            raise ValueError("CaptionDataset needs a transform (or precomputed features)")
        if features is not None and (features.dim() < 2 or features.shape[0] != len(split)):
            raise ValueError(
                f"features must have one row per image ({len(split)}), "
                f"got shape {tuple(features.shape)}"
            )
        self.split = split
        self.vocab = vocab
        self.transform = transform
        self.features = features
        self.items: list[tuple[int, Tensor]] = [
            (index, torch.tensor(vocab.encode(caption, max_length, strict), dtype=torch.long))
            for index, captions in enumerate(split.captions)
            for caption in captions
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_index, caption_ids = self.items[index]
        item: dict[str, Any] = {
            "image_index": image_index,
            "image_id": self.split.image_ids[image_index],
            "caption_ids": caption_ids,
        }
        if self.features is not None:
            item["features"] = self.features[image_index]
        else:
            item["image"] = self.transform(load_image(self.split.file_paths[image_index]))
        return item


def collate_captions(batch: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
    """Stack a list of items into a batch; pad `caption_ids` with `<pad>` to (B, T).

    `lengths` (B,) counts each caption's tokens including `<start>` and `<end>`.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Tensor] = {
        key: torch.tensor([item[key] for item in batch], dtype=torch.long)
        for key in ("image_index", "image_id")
        if key in batch[0]
    }
    for key in ("image", "features"):
        if key in batch[0]:
            out[key] = torch.stack([item[key] for item in batch])  # (B, ...)
    if "caption_ids" in batch[0]:
        captions = [item["caption_ids"] for item in batch]
        lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)  # (B,)
        padded = torch.full((len(batch), int(lengths.max())), Vocabulary.PAD_ID, dtype=torch.long)
        for row, caption in enumerate(captions):
            padded[row, : len(caption)] = caption
        out["caption_ids"] = padded  # (B, T)
        out["lengths"] = lengths
    return out


def caption_loader(
    dataset: Dataset,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with `collate_captions`; shuffling is seeded, so epochs are repeatable."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        worker_init_fn=die_with_parent,
        drop_last=drop_last,
        collate_fn=collate_captions,
    )


def references(split: CocoSplit) -> dict[int, list[str]]:
    """image id -> its reference captions (images without captions are left out)."""
    return {
        image_id: list(captions)
        for image_id, captions in zip(split.image_ids, split.captions, strict=True)
        if captions
    }


def _instances(split: CocoSplit) -> COCO:
    if split.instances is None:
        raise ValueError(
            f"split {split.captions_file} was loaded without an instances file "
            "(pass instances_json to load_coco_split)"
        )
    return split.instances


def category_names(split: CocoSplit) -> list[str]:
    """The object category names, in category id order."""
    cats = _instances(split).cats
    return [cats[cat_id]["name"] for cat_id in sorted(cats)]


def first_image_with(split: CocoSplit, *categories: str) -> int:
    """Index of the split's first image that contains every one of `categories` (chapter 5)."""
    wanted = set(categories)
    for index, image_id in enumerate(split.image_ids):
        if wanted <= objects_in_image(split, image_id):
            return index
    raise ValueError(f"no image of the split contains all of {sorted(wanted)}")


def objects_in_image(split: CocoSplit, image_id: int) -> set[str]:
    """The category names of the objects annotated in image `image_id`."""
    instances = _instances(split)
    split.index_of(image_id)  # raises KeyError for an image outside the split
    return {instances.cats[a["category_id"]]["name"] for a in instances.imgToAnns[image_id]}
