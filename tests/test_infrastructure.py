"""Artifact cache, checkpoints, seeding and object-mention counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from captionlib import seed_everything, select_device
from captionlib.artifacts import artifact_path, atomic_write_bytes, cached, config_hash
from captionlib.checkpoints import load_checkpoint, save_checkpoint
from captionlib.data.coco import load_coco_split
from captionlib.evaluate.objects import absent_object_mentions


def test_config_hash_ignores_key_order_and_sees_values() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    with pytest.raises(TypeError, match="JSON"):
        config_hash({"a": object()})


def test_cached_builds_once_and_reuses(tmp_path: Path) -> None:
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "value.txt").write_text("42")

    first = cached("thing", {"x": 1}, build, root=tmp_path)
    second = cached("thing", {"x": 1}, build, root=tmp_path)
    assert first == second == artifact_path("thing", {"x": 1}, tmp_path)
    assert (first / "value.txt").read_text() == "42"
    assert len(calls) == 1
    cached("thing", {"x": 2}, build, root=tmp_path)
    assert len(calls) == 2


def test_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("thing", {"x": 1}, build, root=tmp_path)
    # only the (empty) lock file stays: nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == [f"{artifact_path('thing', {'x': 1}).name}.lock"]
    with pytest.raises(ValueError, match="plain name"):
        artifact_path("../escape", {}, tmp_path)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    layer = nn.Linear(3, 2)
    path = tmp_path / "model.pt"
    save_checkpoint(path, layer.state_dict(), {"in": 3, "out": 2}, ["<pad>", "a"], {"epoch": 1})
    payload = load_checkpoint(path, {"in": 3, "out": 2}, ["<pad>", "a"])
    restored = nn.Linear(3, 2)
    restored.load_state_dict(payload["state_dict"])
    x = torch.randn(4, 3)
    assert torch.equal(restored(x), layer(x))
    assert payload["extra"] == {"epoch": 1}
    with pytest.raises(ValueError, match="config field 'out'"):
        load_checkpoint(path, {"in": 3, "out": 5})
    with pytest.raises(ValueError, match="vocabulary does not match"):
        load_checkpoint(path, expected_vocabulary=["<pad>", "b"])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_seed_everything_repeats_and_validates() -> None:
    seed_everything(3)
    a = torch.rand(5)
    seed_everything(3)
    assert torch.equal(a, torch.rand(5))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    assert select_device("cpu").type == "cpu"


def test_absent_object_mentions_on_known_captions(tiny_coco: dict[str, Path]) -> None:
    split = load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])

    def words(caption: str) -> set[str]:
        return {w for w in ("boat", "dog", "ball") if w in caption}

    # image 7: boat only; image 3: dog + ball; image 12: dog; image 5: boat + dog
    predictions = {7: "a boat with a dog", 3: "a dog with a ball", 12: "a dog with a ball", 5: "a"}
    report = absent_object_mentions(predictions, split, words)
    assert report.captions == 4
    assert report.with_absent == 2
    assert report.mentions == 6
    assert report.absent_mentions == 2
    assert report.absent_words == {7: {"dog"}, 12: {"ball"}}
    assert report.absent_caption_share == pytest.approx(0.5)
    assert report.absent_mention_share == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="no predictions"):
        absent_object_mentions({}, split, words)


def test_torch_threads_restores_setting() -> None:
    from captionlib.utils import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="thread count"), torch_threads(0):
        pass
