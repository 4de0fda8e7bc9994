"""Real data sets in the book's form: COCO 2014 / 2017 and Flickr30K (chapter 12).

`prepare_dataset` reads a data set from a local folder and writes, for each split, a
COCO-format captions file (and, for COCO, the matching instances file), plus the training
vocabulary, into an output folder that `load_prepared` reads through the same pycocotools
path as ShapeWorld (`captionlib.data.coco.load_coco_split`).

Expected source folders (what the official archives unpack to)::

    COCO 2014                                  COCO 2017
      annotations/captions_train2014.json        annotations/captions_train2017.json
      annotations/captions_val2014.json          annotations/captions_val2017.json
      annotations/instances_*2014.json (opt.)    annotations/instances_*2017.json (opt.)
      train2014/  val2014/                       train2017/  val2017/
      dataset_coco.json (optional, Karpathy split)

    Flickr30K
      dataset_flickr30k.json (Karpathy split, with the captions)
      flickr30k-images/

Splits: with Karpathy's `dataset_coco.json` COCO uses his 113,287 / 5,000 / 5,000 split
("restval" joins train), as the paper does; without it, train is the official train split
and the official val split is cut in two by sorted image id (first half val, second half
test). Captions are tokenised (`captionlib.data.vocab.tokenize`) and cut to 30 tokens; the
vocabulary keeps training words seen at least 4 times (COCO) or 3 times (Flickr30K)
(book/method.md §4). A missing file or folder raises FileNotFoundError naming every missing
path. Nothing is downloaded here: `download` is a separate, explicit call that needs the
network.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captionlib.progress import progress_bar

from captionlib.data.coco import CocoSplit, load_coco_split
from captionlib.data.vocab import Vocabulary, tokenize

DATASETS = ("coco2014", "coco2017", "flickr30k")
MIN_WORD_COUNTS = {"coco2014": 4, "coco2017": 4, "flickr30k": 3}
MAX_TOKENS = 30
SPLITS = ("train", "val", "test")
MANIFEST = "prepared.json"
VOCABULARY = "vocabulary.json"


@dataclass
class _Image:
    image_id: int
    file_name: str  # relative to the source folder
    captions: list[str]
    part: str  # the official part ("train2014", …) or "flickr30k"


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def _year(dataset: str) -> str:
    return dataset.removeprefix("coco")


def required_paths(dataset: str, root: str | Path) -> list[Path]:
    """The files and folders `prepare_dataset` needs under `root`."""
    _check_dataset(dataset)
    root = Path(root)
    if dataset == "flickr30k":
        return [root / "dataset_flickr30k.json", root / "flickr30k-images"]
    year = _year(dataset)
    return [
        root / "annotations" / f"captions_train{year}.json",
        root / "annotations" / f"captions_val{year}.json",
        root / f"train{year}",
        root / f"val{year}",
    ]


def check_source(dataset: str, root: str | Path) -> None:
    """Raise FileNotFoundError naming every missing file or folder of the source."""
    missing = [path for path in required_paths(dataset, root) if not path.exists()]
    if missing:
        names = ", ".join(str(path) for path in missing)
        raise FileNotFoundError(
            f"{dataset} in {root} is incomplete; missing: {names}. Download it with "
            f"`python -m captionlib download {dataset} --folder {root}` (needs the network) "
            "or point data.root at the folder that holds these files."
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{path} must hold a JSON object at the top")
    return payload


def _field(record: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in record:
        raise ValueError(f"{path}: a record has no {key!r} field: {dict(record)!r:.200}")
    return record[key]


def _official_images(root: Path, year: str, part: str) -> list[_Image]:
    """The images and captions of one official COCO part ("train" or "val")."""
    path = root / "annotations" / f"captions_{part}{year}.json"
    payload = _read_json(path)
    captions: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for annotation in _field(payload, "annotations", path):
        image_id = int(_field(annotation, "image_id", path))
        captions[image_id].append(
            (int(_field(annotation, "id", path)), str(_field(annotation, "caption", path)))
        )
    return [
        _Image(
            image_id=int(_field(image, "id", path)),
            file_name=f"{part}{year}/{_field(image, 'file_name', path)}",
            captions=[text for _, text in sorted(captions.get(int(image["id"]), []))],
            part=f"{part}{year}",
        )
        for image in _field(payload, "images", path)
    ]


def _karpathy_splits(path: Path) -> dict[int, str]:
    """COCO image id -> "train" | "val" | "test" from Karpathy's dataset_coco.json."""
    payload = _read_json(path)
    splits = {}
    for image in _field(payload, "images", path):
        split = str(_field(image, "split", path))
        splits[int(_field(image, "cocoid", path))] = "train" if split == "restval" else split
    unknown = sorted(set(splits.values()) - set(SPLITS))
    if unknown:
        raise ValueError(f"{path}: unknown split names {unknown}")
    return splits


def _coco_splits(root: Path, dataset: str) -> tuple[dict[str, list[_Image]], str]:
    year = _year(dataset)
    train, val = _official_images(root, year, "train"), _official_images(root, year, "val")
    karpathy = root / "dataset_coco.json"
    if karpathy.is_file():
        assignment = _karpathy_splits(karpathy)
        splits: dict[str, list[_Image]] = {name: [] for name in SPLITS}
        for image in [*train, *val]:
            if image.image_id in assignment:
                splits[assignment[image.image_id]].append(image)
        return splits, "karpathy"
    val.sort(key=lambda image: image.image_id)
    half = len(val) // 2
    return {"train": train, "val": val[:half], "test": val[half:]}, "official (val halved)"


def _flickr_splits(root: Path) -> dict[str, list[_Image]]:
    path = root / "dataset_flickr30k.json"
    payload = _read_json(path)
    splits: dict[str, list[_Image]] = {name: [] for name in SPLITS}
    for record in _field(payload, "images", path):
        filename = str(_field(record, "filename", path))
        stem = Path(filename).stem
        split = str(_field(record, "split", path))
        if split not in splits:
            raise ValueError(f"{path}: image {filename} has unknown split {split!r}")
        sentences = _field(record, "sentences", path)
        splits[split].append(
            _Image(
                image_id=int(stem) if stem.isdigit() else int(_field(record, "imgid", path)),
                file_name=f"flickr30k-images/{filename}",
                captions=[str(_field(s, "raw", path)) for s in sentences],
                part="flickr30k",
            )
        )
    return splits


def truncate_caption(text: str, max_tokens: int = MAX_TOKENS) -> str:
    """The caption's first `max_tokens` tokens, tokenised as the vocabulary does, joined."""
    return " ".join(tokenize(text)[:max_tokens])


def _check_images(root: Path, images: Iterable[_Image], progress: bool) -> None:
    missing = [
        image.file_name
        for image in progress_bar(list(images), desc="checking images", progress=progress)
        if not (root / image.file_name).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image files listed in the annotations are missing under {root}, "
            f"e.g. {', '.join(missing[:5])}"
        )


def _captions_payload(images: Sequence[_Image], max_tokens: int, info: dict) -> dict:
    records, annotations = [], []
    for image in sorted(images, key=lambda item: item.image_id):
        records.append({"id": image.image_id, "file_name": image.file_name})
        for raw in image.captions:
            caption = truncate_caption(raw, max_tokens)
            if caption:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image.image_id,
                        "caption": caption,
                        "raw": raw,
                    }
                )
    return {"info": info, "images": records, "annotations": annotations}


def _write_instances(root: Path, year: str, splits: Mapping[str, list[_Image]], out: Path) -> bool:
    """Per-split COCO instances files from the official ones; False when they are absent."""
    sources = [root / "annotations" / f"instances_{part}{year}.json" for part in ("train", "val")]
    if not all(path.is_file() for path in sources):
        return False
    payloads = [_read_json(path) for path in sources]
    categories = _field(payloads[0], "categories", sources[0])
    annotations: dict[int, list[dict]] = defaultdict(list)
    records: dict[int, dict] = {}  # the official image records: annToMask needs height, width
    for payload, path in zip(payloads, sources, strict=True):
        for annotation in _field(payload, "annotations", path):
            annotations[int(_field(annotation, "image_id", path))].append(annotation)
        for image in _field(payload, "images", path):
            records[int(_field(image, "id", path))] = image
    for name, images in splits.items():
        ids = sorted(image.image_id for image in images)
        payload = {
            "info": {"description": f"COCO {year} instances, split {name}"},
            "images": [records.get(i, {"id": i}) for i in ids],
            "annotations": [a for i in ids for a in annotations.get(i, [])],
            "categories": categories,
        }
        (out / f"instances_{name}.json").write_text(json.dumps(payload))
    return True


def prepare_dataset(
    dataset: str,
    root: str | Path,
    output: str | Path,
    min_count: int | None = None,
    max_tokens: int = MAX_TOKENS,
    check_images: bool = True,
    progress: bool = True,
) -> Path:
    """Write the splits, vocabulary and a manifest of `dataset` from `root` into `output`.

    min_count: vocabulary threshold (default 4 for COCO, 3 for Flickr30K); max_tokens:
    captions are cut to this many tokens. check_images: check that every listed image file
    exists (about a second per 100,000 images). The output folder appears complete or not at
    all. Returns `output`.
    """
    _check_dataset(dataset)
    root, output = Path(root), Path(output)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    min_count = MIN_WORD_COUNTS[dataset] if min_count is None else min_count
    check_source(dataset, root)
    if dataset == "flickr30k":
        splits, scheme = _flickr_splits(root), "karpathy"
    else:
        splits, scheme = _coco_splits(root, dataset)
    empty = [name for name in SPLITS if not splits[name]]
    if empty:
        raise ValueError(f"{dataset} in {root}: no images in split(s) {empty}")
    if check_images:
        _check_images(root, (image for images in splits.values() for image in images), progress)

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        counts = {}
        for name in SPLITS:
            info = {"description": f"{dataset} {name} split ({scheme}), prepared by captionlib"}
            payload = _captions_payload(splits[name], max_tokens, info)
            (tmp / f"captions_{name}.json").write_text(json.dumps(payload))
            counts[name] = {
                "images": len(payload["images"]),
                "captions": len(payload["annotations"]),
            }
            if name == "train":
                vocab = Vocabulary.build((a["caption"] for a in payload["annotations"]), min_count)
                vocab.save(tmp / VOCABULARY)
        instances = dataset != "flickr30k" and _write_instances(root, _year(dataset), splits, tmp)
        manifest = {
            "dataset": dataset,
            "source": str(root.resolve()),
            "split_scheme": scheme,
            "splits": counts,
            "min_count": min_count,
            "max_tokens": max_tokens,
            "vocabulary_size": len(vocab),
            "instances": bool(instances),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        tmp.chmod(0o755)
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


@dataclass
class PreparedData:
    """A prepared data set: its splits (loaded with pycocotools), vocabulary and manifest."""

    splits: dict[str, CocoSplit]
    vocabulary: Vocabulary
    manifest: dict[str, Any]


def load_prepared(folder: str | Path) -> PreparedData:
    """Read a folder written by `prepare_dataset`."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"prepared data not found: {manifest_path} (run `python -m captionlib prepare`)"
        )
    manifest = _read_json(manifest_path)
    image_dir = Path(_field(manifest, "source", manifest_path))
    splits = {}
    for name in SPLITS:
        instances = folder / f"instances_{name}.json"
        splits[name] = load_coco_split(
            folder / f"captions_{name}.json",
            image_dir,
            instances if instances.is_file() else None,
        )
    return PreparedData(splits, Vocabulary.load(folder / VOCABULARY), manifest)


# --- downloading (explicit, needs the network) ---------------------------------------------------

_COCO_IMAGES = "http://images.cocodataset.org/zips"
_COCO_ANNOTATIONS = "http://images.cocodataset.org/annotations"
KARPATHY_SPLITS = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
FLICKR30K_REQUEST = "https://shannon.cs.illinois.edu/DenotationGraph/"


@dataclass(frozen=True)
class Download:
    """One archive to fetch: its URL, approximate size, and what it unpacks to."""

    url: str
    gigabytes: float
    provides: str  # a path relative to the target folder that exists once it is unpacked
    members: tuple[str, ...] = ()  # unpack only these archive members (by file name)


def download_plan(dataset: str) -> list[Download]:
    """What `download(dataset, …)` would fetch (nothing is fetched here)."""
    _check_dataset(dataset)
    if dataset == "flickr30k":
        return [
            Download(KARPATHY_SPLITS, 0.04, "dataset_flickr30k.json", ("dataset_flickr30k.json",))
        ]
    year = _year(dataset)
    return [
        Download(f"{_COCO_ANNOTATIONS}/annotations_trainval{year}.zip", 0.25, "annotations"),
        Download(f"{_COCO_IMAGES}/val{year}.zip", 6.2 if year == "2014" else 0.8, f"val{year}"),
        Download(
            f"{_COCO_IMAGES}/train{year}.zip", 13.5 if year == "2014" else 18.0, f"train{year}"
        ),
        Download(KARPATHY_SPLITS, 0.04, "dataset_coco.json", ("dataset_coco.json",)),
    ]


def _fetch(url: str, target: Path, progress: bool) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(
                total=total, unit="B", unit_scale=True, desc=target.name, progress=progress
            ) as bar:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise ConnectionError(
            f"downloading {url} failed ({error}). `download` needs the network; on a machine "
            f"without it, fetch the file elsewhere and unpack it into {target.parent}."
        ) from error
    finally:
        tmp.unlink(missing_ok=True)


def _unpack(archive: Path, folder: Path, members: Sequence[str]) -> None:
    with zipfile.ZipFile(archive) as handle:
        if not members:
            handle.extractall(folder)
            return
        for info in handle.infolist():
            if Path(info.filename).name in members:
                (folder / Path(info.filename).name).write_bytes(handle.read(info))


def download(dataset: str, folder: str | Path, progress: bool = True) -> Path:
    """Download `dataset` into `folder` from the official servers (NEEDS THE NETWORK).

    COCO 2014 is about 20 GB, COCO 2017 about 19 GB; archives already unpacked are skipped.
    Flickr30K's images are given out on request only (FLICKR30K_REQUEST): this fetches
    Karpathy's caption file and then raises FileNotFoundError saying where to put the images.
    Raises ConnectionError when a server cannot be reached. Never called by the tests.
    """
    _check_dataset(dataset)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for item in download_plan(dataset):
        if (folder / item.provides).exists():
            continue
        archive = folder / Path(item.url).name
        _fetch(item.url, archive, progress)
        _unpack(archive, folder, item.members)
        archive.unlink()
    if dataset == "flickr30k" and not (folder / "flickr30k-images").is_dir():
        raise FileNotFoundError(
            f"Flickr30K images are not downloadable without registration: request them at "
            f"{FLICKR30K_REQUEST} and unpack them to {folder / 'flickr30k-images'}"
        )
    return folder
