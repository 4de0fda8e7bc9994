"""Encoder features extracted once and read back lazily from a memory-mapped file (chapter 12).

The paper trains its decoders on a frozen VGG16: its features are the same every epoch, so
they are computed once. For COCO they do not fit in memory (123,287 images × 196 × 512 in
float16 is 25 GB), so they live on disk in a NumPy `.npy` file that is memory-mapped: a
training batch reads only its rows, and the operating system caches what fits.

A feature store `<name>` is two files::

    <name>.npy    (num_images, N, C) float16 (or float32), row i = image i of the split
    <name>.json   the header: format, shape, dtype, image ids, and free-form metadata

Both are written under temporary names and renamed into place, the header last: a store
whose header exists is complete, and an interrupted extraction leaves nothing behind.
Writing a store and reading it back::

    write = FeatureWriter(folder / "train", image_ids, meta={"encoder": "vgg16"})
    with write:
        for batch in loader:
            write(to_grid(encoder(batch["image"])))          # (B, N, C)
    features = MemmapFeatures(folder / "train")             # lazy, indexable like a tensor
    dataset = CaptionDataset(split, vocab, features=features)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from captionlib.artifacts import atomic_write_bytes
from captionlib.models.encoder import to_grid
from captionlib.progress import progress_bar

FORMAT = "captionlib-features"
DTYPES = ("float16", "float32")


def store_paths(path: str | Path) -> tuple[Path, Path]:
    """The (.npy, .json) files of the store `path` (given with or without a suffix)."""
    base = Path(path)
    if base.suffix in (".npy", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")


def store_exists(path: str | Path) -> bool:
    """True when the store is complete (its header, written last, exists)."""
    array, header = store_paths(path)
    return array.is_file() and header.is_file()


class FeatureWriter:
    """Write a feature store batch by batch (a context manager; see the module docstring).

    image_ids: one id per row, in row order; dtype: "float16" (half the disk, the default)
    or "float32"; meta: JSON-able facts about the features (encoder, image size, …).
    Rows must arrive in order; the store appears only when the block ends without an error
    and every row was written.
    """

    def __init__(
        self,
        path: str | Path,
        image_ids: Sequence[int],
        dtype: str = "float16",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if not image_ids:
            raise ValueError("a feature store needs at least one image id")
        self.array_path, self.header_path = store_paths(path)
        self.image_ids = [int(i) for i in image_ids]
        self.dtype = dtype
        self.meta = dict(meta or {})
        self.rows = 0
        self._array: np.memmap | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> FeatureWriter:
        self.array_path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __call__(self, features: Tensor) -> None:
        """Append rows: features (B, N, C)."""
        if features.dim() != 3:
            raise ValueError(f"features must be (B, N, C), got {tuple(features.shape)}")
        if self._array is None:
            fd, name = tempfile.mkstemp(
                prefix=f".{self.array_path.name}.", dir=self.array_path.parent
            )
            os.close(fd)
            self._tmp = Path(name)
            shape = (len(self.image_ids), *features.shape[1:])
            self._array = np.lib.format.open_memmap(
                self._tmp, mode="w+", dtype=self.dtype, shape=shape
            )
        elif tuple(features.shape[1:]) != self._array.shape[1:]:
            raise ValueError(
                f"features have shape {tuple(features.shape[1:])} per image, the store "
                f"{tuple(self._array.shape[1:])}"
            )
        end = self.rows + features.shape[0]
        if end > len(self.image_ids):
            raise ValueError(f"more rows than image ids ({len(self.image_ids)})")
        values = features.detach().to("cpu", torch.float32).numpy()
        self._array[self.rows : end] = values.astype(self.dtype)
        self.rows = end

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                self._commit()
        finally:
            self._array = None
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)

    def _commit(self) -> None:
        if self._array is None or self.rows != len(self.image_ids):
            raise ValueError(
                f"feature store {self.array_path}: {self.rows} rows written for "
                f"{len(self.image_ids)} image ids"
            )
        self._array.flush()
        shape = list(self._array.shape)
        self._array = None  # close the memory map before the rename
        os.replace(self._tmp, self.array_path)  # type: ignore[arg-type]
        self._tmp = None
        header = {
            "format": FORMAT,
            "version": 1,
            "shape": shape,
            "dtype": self.dtype,
            "image_ids": self.image_ids,
            "meta": self.meta,
        }
        atomic_write_bytes(self.header_path, json.dumps(header).encode("utf-8"))


def write_features(
    path: str | Path,
    features: Tensor,
    image_ids: Sequence[int],
    dtype: str = "float16",
    meta: Mapping[str, Any] | None = None,
) -> MemmapFeatures:
    """Store an in-memory tensor (num_images, N, C) and return the store, opened."""
    if features.dim() != 3 or features.shape[0] != len(image_ids):
        raise ValueError(
            f"features must be (num_images={len(image_ids)}, N, C), got {tuple(features.shape)}"
        )
    with FeatureWriter(path, image_ids, dtype, meta) as write:
        for chunk in features.split(1024):
            write(chunk)
    return MemmapFeatures(path)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    path: str | Path,
    image_ids: Sequence[int],
    device: torch.device | None = None,
    dtype: str = "float16",
    meta: Mapping[str, Any] | None = None,
    autocast: bool = False,
    progress: bool = True,
) -> MemmapFeatures:
    """Run the frozen encoder over every image once and store its grid features.

    batches yields dicts with `image` (B, 3, H, W) in image order (an `ImageDataset` loader);
    the encoder maps images to F (B, C, h, w) and rows hold to_grid(F) (B, h·w, C).
    autocast: bfloat16 autocast on CUDA (about 1.4× faster for VGG16 on an H200).
    """
    device = device or torch.device("cpu")
    encoder.eval().to(device)
    use_autocast = autocast and device.type == "cuda"
    with FeatureWriter(path, image_ids, dtype, meta) as write:
        for batch in progress_bar(batches, desc="features", progress=progress):
            images = batch["image"].to(device, non_blocking=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=use_autocast):
                grid = to_grid(encoder(images))  # (B, N, C)
            write(grid.float())
    return MemmapFeatures(path)


class MemmapFeatures:
    """A feature store opened lazily: indexable like a (num_images, N, C) float32 tensor.

    `features[i]` (or a slice, or a list of rows) reads only those rows from disk. The memory
    map is opened on first access in each process, so the object can go to DataLoader
    workers. `CaptionDataset(split, vocab, features=MemmapFeatures(path))` trains from it.
    """

    def __init__(self, path: str | Path) -> None:
        self.array_path, self.header_path = store_paths(path)
        for file in (self.header_path, self.array_path):
            if not file.is_file():
                raise FileNotFoundError(f"feature store file not found: {file}")
        try:
            header = json.loads(self.header_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"feature header {self.header_path} is not valid JSON") from error
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"{self.header_path} is not a captionlib feature header")
        for key in ("shape", "dtype", "image_ids", "meta"):
            if key not in header:
                raise ValueError(f"feature header {self.header_path} has no {key!r} field")
        self.shape = torch.Size(header["shape"])
        self.dtype = str(header["dtype"])
        self.image_ids: list[int] = [int(i) for i in header["image_ids"]]
        self.meta: dict[str, Any] = dict(header["meta"])
        if len(self.image_ids) != self.shape[0]:
            raise ValueError(
                f"feature header {self.header_path}: {len(self.image_ids)} image ids for "
                f"{self.shape[0]} rows"
            )
        self._array: np.ndarray | None = None
        stored = self.array
        if tuple(stored.shape) != tuple(self.shape) or str(stored.dtype) != self.dtype:
            raise ValueError(
                f"feature file {self.array_path} holds {stored.dtype} {tuple(stored.shape)}, "
                f"its header says {self.dtype} {tuple(self.shape)}"
            )

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped NumPy array (read-only)."""
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}  # workers reopen the map themselves

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Tensor:
        if isinstance(index, Tensor):
            index = index.tolist()
        rows = np.array(self.array[index], dtype=np.float32)  # a copy: the map is read-only
        return torch.from_numpy(rows)

    def to_tensor(self) -> Tensor:
        """Every row in memory, float32 (num_images, N, C)."""
        return self[slice(None)]

    def check_image_ids(self, image_ids: Sequence[int]) -> None:
        """Raise ValueError unless the rows belong to exactly these images, in this order."""
        if [int(i) for i in image_ids] != self.image_ids:
            raise ValueError(
                f"feature store {self.array_path} was extracted for other images than the "
                f"split's ({len(self.image_ids)} vs {len(image_ids)} ids); extract it again"
            )
