"""Memory-mapped feature stores: round trip, atomic writes, lazy training data (chapter 12)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from captionlib.data.coco import CaptionDataset, caption_loader, load_coco_split
from captionlib.data.vocab import Vocabulary
from captionlib.features import (
    FeatureWriter,
    MemmapFeatures,
    extract_features,
    store_exists,
    store_paths,
    write_features,
)


def test_round_trip_float16_and_float32(tmp_path: Path) -> None:
    features = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(0))
    ids = [7, 3, 12, 5, 9]
    half = write_features(tmp_path / "half", features, ids, meta={"encoder": "toy"})
    assert half.shape == (5, 4, 3) and half.dim() == 3 and len(half) == 5
    assert half.image_ids == ids and half.meta == {"encoder": "toy"}
    assert torch.equal(half.to_tensor(), features.half().float())
    assert half.array.dtype == np.float16 and isinstance(half.array, np.memmap)
    full = write_features(tmp_path / "full.npy", features, ids, dtype="float32")
    assert torch.equal(full[1], features[1])
    assert torch.equal(full[[4, 0]], features[[4, 0]])
    assert torch.equal(full[torch.tensor([2, 3])], features[2:4])
    assert torch.equal(MemmapFeatures(tmp_path / "full.json")[1:3], features[1:3])
    # a reopened store survives pickling (DataLoader workers) without the open map
    clone = pickle.loads(pickle.dumps(full))
    assert clone._array is None and torch.equal(clone[0], features[0])


class _Broken(nn.Module):
    """An encoder that fails on its second batch, like an interrupted extraction."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("interrupted")
        return images[:, :2]  # (B, 2, H, W)


def test_interrupted_extraction_leaves_nothing(tmp_path: Path) -> None:
    batches = [{"image": torch.rand(2, 3, 2, 2)} for _ in range(3)]
    with pytest.raises(RuntimeError, match="interrupted"):
        extract_features(_Broken(), batches, tmp_path / "x", list(range(6)), progress=False)
    assert list(tmp_path.iterdir()) == []
    assert not store_exists(tmp_path / "x")
    with pytest.raises(FileNotFoundError, match=r"x\.json"):
        MemmapFeatures(tmp_path / "x")


def test_extraction_writes_grid_rows_in_order(tmp_path: Path) -> None:
    images = torch.rand(5, 3, 2, 2)
    batches = [{"image": chunk} for chunk in images.split(2)]
    store = extract_features(
        nn.Identity(), batches, tmp_path / "f", [1, 2, 3, 4, 5], progress=False
    )
    expected = images.flatten(2).transpose(1, 2)  # to_grid: (5, N=4, C=3)
    assert torch.allclose(store.to_tensor(), expected, atol=1e-3)


def test_incomplete_or_mismatched_stores_are_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="3 rows written for 4 image ids"),
        FeatureWriter(tmp_path / "short", [1, 2, 3, 4]) as write,
    ):
        write(torch.zeros(3, 2, 2))
    assert list(tmp_path.iterdir()) == []
    with (
        pytest.raises(ValueError, match="per image"),
        FeatureWriter(tmp_path / "s", [1, 2]) as write,
    ):
        write(torch.zeros(1, 2, 2))
        write(torch.zeros(1, 3, 2))
    store = write_features(tmp_path / "ok", torch.zeros(2, 2, 2), [1, 2])
    with pytest.raises(ValueError, match="other images"):
        store.check_image_ids([2, 1])
    array, header = store_paths(tmp_path / "ok")
    payload = json.loads(header.read_text())
    header.write_text(json.dumps(payload | {"shape": [3, 2, 2], "image_ids": [1, 2, 3]}))
    with pytest.raises(ValueError, match="header says"):
        MemmapFeatures(tmp_path / "ok")


def test_lazy_dataset_equals_in_memory(tiny_coco: dict[str, Path], tmp_path: Path) -> None:
    split = load_coco_split(tiny_coco["captions"], tiny_coco["images"])
    vocab = Vocabulary.build((c for captions in split.captions for c in captions), 1)
    features = torch.randn(len(split), 6, 4, generator=torch.Generator().manual_seed(1))
    store = write_features(tmp_path / "tiny", features, split.image_ids, dtype="float32")
    lazy = CaptionDataset(split, vocab, features=store)  # type: ignore[arg-type]
    eager = CaptionDataset(split, vocab, features=features)
    assert len(lazy) == len(eager) == split.num_captions
    for a, b in zip(
        caption_loader(lazy, 3, shuffle=True), caption_loader(eager, 3, shuffle=True), strict=True
    ):
        assert torch.equal(a["features"], b["features"])
        assert torch.equal(a["caption_ids"], b["caption_ids"])
        assert torch.equal(a["image_id"], b["image_id"])
    workers = caption_loader(lazy, 4, num_workers=2)
    assert torch.equal(torch.cat([b["features"] for b in workers]), eager_features(eager))


def eager_features(dataset: CaptionDataset) -> torch.Tensor:
    return torch.stack([dataset[i]["features"] for i in range(len(dataset))])
