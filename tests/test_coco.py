"""COCO-format loading, images, transforms and caption batches (captionlib.data.coco)."""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path

import pytest
import torch
from conftest import TINY_SCENES, TINY_SIZE
from PIL import Image

from captionlib.data.coco import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CaptionDataset,
    ImageDataset,
    caption_loader,
    category_names,
    collate_captions,
    denormalize,
    first_image_with,
    image_transform,
    load_coco_split,
    load_image,
    objects_in_image,
    references,
)
from captionlib.data.vocab import Vocabulary


@pytest.fixture
def split(tiny_coco: dict[str, Path]):
    return load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])


@pytest.fixture
def vocab(split) -> Vocabulary:
    return Vocabulary.build(chain.from_iterable(split.captions), min_count=1)


def _rewrite(path: Path, edit) -> None:
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_split_loads_through_pycocotools(split, tiny_coco) -> None:
    assert split.image_ids == [3, 5, 7, 12]
    assert len(split) == 4 and split.num_captions == 8
    assert split.file_paths[0] == tiny_coco["images"] / "tiny" / "000003.png"
    assert split.captions[2] == ["A red boat on the water.", "a boat sails on blue water"]
    assert split.index_of(12) == 3
    with pytest.raises(KeyError, match="99"):
        split.index_of(99)
    # the pycocotools indexes answer the usual COCO queries
    assert len(split.captions_coco.getAnnIds(imgIds=[5])) == 2
    assert sorted(split.instances.getCatIds()) == [1, 2, 3]
    boxes = [a["bbox"] for a in split.instances.loadAnns(split.instances.getAnnIds(imgIds=[3]))]
    assert boxes == [[2, 2, 8, 8], [14, 12, 4, 4]]
    mask = split.instances.annToMask(split.instances.loadAnns(split.instances.getAnnIds(7))[0])
    assert mask.shape == (TINY_SIZE[1], TINY_SIZE[0]) and 50 <= mask.sum() <= 100


def test_references_and_objects(split) -> None:
    refs = references(split)
    assert set(refs) == {3, 5, 7, 12}
    assert refs[12] == ["a dog on the grass", "a small dog"]
    assert category_names(split) == ["boat", "dog", "ball"]
    assert objects_in_image(split, 3) == {"dog", "ball"}
    assert objects_in_image(split, 12) == {"dog"}
    with pytest.raises(KeyError):
        objects_in_image(split, 99)
    order = split.image_ids  # first_image_with answers with an index into this order
    assert order[first_image_with(split, "dog", "ball")] == 3
    assert objects_in_image(split, order[first_image_with(split, "dog")]) >= {"dog"}
    with pytest.raises(ValueError, match=r"\['ball', 'boat'\]"):
        first_image_with(split, "boat", "ball")


def test_split_without_instances(tiny_coco) -> None:
    split = load_coco_split(tiny_coco["captions"], tiny_coco["images"])
    assert split.instances is None
    with pytest.raises(ValueError, match="instances"):
        category_names(split)


def test_missing_annotation_file(tiny_coco) -> None:
    with pytest.raises(FileNotFoundError, match="captions_nope.json"):
        load_coco_split(tiny_coco["captions"].with_name("captions_nope.json"), tiny_coco["images"])
    with pytest.raises(FileNotFoundError, match="instances_nope.json"):
        load_coco_split(
            tiny_coco["captions"],
            tiny_coco["images"],
            tiny_coco["instances"].with_name("instances_nope.json"),
        )
    with pytest.raises(FileNotFoundError, match="no_images"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"].with_name("no_images"))


def test_malformed_json_names_the_file(tiny_coco) -> None:
    tiny_coco["captions"].write_text('{"images": [')
    with pytest.raises(ValueError, match="captions_tiny.json.*not valid JSON"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"])


def test_missing_fields_are_named(tiny_coco) -> None:
    _rewrite(tiny_coco["captions"], lambda d: d["annotations"][1].pop("caption"))
    with pytest.raises(ValueError, match=r"captions_tiny.json: annotations\[1\] has no 'caption'"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"])
    _rewrite(tiny_coco["captions"], lambda d: d.pop("images"))
    with pytest.raises(ValueError, match="captions_tiny.json has no 'images' field"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"])


def test_missing_instance_fields_are_named(tiny_coco) -> None:
    _rewrite(tiny_coco["instances"], lambda d: d["annotations"][0].pop("bbox"))
    with pytest.raises(ValueError, match=r"instances_tiny.json: annotations\[0\] has no 'bbox'"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])


def test_instances_with_unknown_category(tiny_coco) -> None:
    _rewrite(tiny_coco["instances"], lambda d: d["annotations"][0].update(category_id=42))
    with pytest.raises(ValueError, match="unknown categories.*42"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])


def test_empty_split(tiny_coco) -> None:
    _rewrite(tiny_coco["captions"], lambda d: d.update(images=[], annotations=[]))
    with pytest.raises(ValueError, match="captions_tiny.json is empty"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"])


def test_caption_for_unknown_image(tiny_coco) -> None:
    _rewrite(tiny_coco["captions"], lambda d: d["annotations"][0].update(image_id=404))
    with pytest.raises(ValueError, match=r"captions_tiny.json.*unknown image ids \[404\]"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"])


def test_duplicate_image_ids(tiny_coco) -> None:
    _rewrite(tiny_coco["captions"], lambda d: d["images"].append(dict(d["images"][0])))
    with pytest.raises(ValueError, match=r"duplicate ids \[7\]"):
        load_coco_split(tiny_coco["captions"], tiny_coco["images"])


def test_load_image_modes_and_sizes(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("L", (10, 8), 200).save(grey)
    image = load_image(grey)
    assert image.mode == "RGB" and image.size == (10, 8)
    assert image.getpixel((0, 0)) == (200, 200, 200)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 8), (10, 20, 30, 40)).save(rgba)
    assert load_image(rgba, size=6).getpixel((3, 3)) == (10, 20, 30)
    assert load_image(rgba, size=6).size == (6, 6)
    with pytest.raises(ValueError, match=r"rgba.png has size \(10, 8\).*\(12, 12\)"):
        load_image(rgba, expected_size=(12, 12))
    deep = tmp_path / "deep.png"
    Image.new("I;16", (4, 4)).save(deep)
    with pytest.raises(ValueError, match="deep.png has mode"):
        load_image(deep)


def test_missing_and_corrupt_images(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.png"):
        load_image(tmp_path / "absent.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="corrupt.png"):
        load_image(corrupt)
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        load_image(truncated)


def test_image_transform_normalises(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 6), (255, 0, 128))
    tensor = image_transform(4)(image)
    assert tensor.shape == (3, 4, 4) and tensor.dtype == torch.float32
    expected = [
        (v - m) / s
        for v, m, s in zip((1.0, 0.0, 128 / 255), IMAGENET_MEAN, IMAGENET_STD, strict=True)
    ]
    torch.testing.assert_close(tensor[:, 0, 0], torch.tensor(expected))
    torch.testing.assert_close(denormalize(tensor)[:, 2, 1], torch.tensor([1.0, 0.0, 128 / 255]))
    assert image_transform()(image).shape == (3, 6, 8)


def test_caption_batches_are_padded(split, vocab) -> None:
    data = CaptionDataset(split, vocab, image_transform(16), max_length=5)
    assert len(data) == 8
    item = data[5]  # image 7 (index 2), second caption "a boat sails on blue water"
    assert item["image_index"] == 2 and item["image_id"] == 7
    assert vocab.decode(item["caption_ids"]) == "a boat sails on blue"  # truncated to 5 words
    batch = next(iter(caption_loader(data, batch_size=3)))
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["image_index"].tolist() == [0, 0, 1]
    assert batch["image_id"].tolist() == [3, 3, 5]
    # 5 words each: "a brown dog with a", "the dog plays with a", "a boat and a dog"
    assert batch["caption_ids"].shape == (3, 7) and batch["lengths"].tolist() == [7, 7, 7]
    short = collate_captions([data[7], data[0]])  # "a small dog" (3 words) and 5 words
    assert short["lengths"].tolist() == [5, 7]
    assert short["caption_ids"][0, 5:].tolist() == [Vocabulary.PAD_ID] * 2
    assert short["caption_ids"][0, 4].item() == Vocabulary.END_ID
    assert short["caption_ids"][:, 0].tolist() == [Vocabulary.START_ID] * 2


def test_caption_dataset_with_features(split, vocab) -> None:
    features = torch.arange(4 * 6 * 2, dtype=torch.float32).view(4, 6, 2)  # (images, N, C)
    data = CaptionDataset(split, vocab, features=features)
    batch = next(iter(caption_loader(data, batch_size=4, shuffle=True, seed=1)))
    assert "image" not in batch and batch["features"].shape == (4, 6, 2)
    torch.testing.assert_close(batch["features"], features[batch["image_index"]])
    again = next(iter(caption_loader(data, batch_size=4, shuffle=True, seed=1)))
    assert torch.equal(again["image_index"], batch["image_index"])
    with pytest.raises(ValueError, match="one row per image"):
        CaptionDataset(split, vocab, features=features[:3])
    with pytest.raises(ValueError, match="transform"):
        CaptionDataset(split, vocab)


def test_caption_dataset_rejects_unknown_captions(split) -> None:
    vocab = Vocabulary(["boat", "water"])
    with pytest.raises(ValueError, match="no known words: 'A brown dog with a ball!'"):
        CaptionDataset(split, vocab, features=torch.zeros(4, 1, 1))
    data = CaptionDataset(split, vocab, features=torch.zeros(4, 1, 1), strict=False)
    assert len(data) == 8


def test_image_dataset_and_missing_image(split) -> None:
    data = ImageDataset(split, image_transform(8))
    item = data[1]
    assert item["image"].shape == (3, 8, 8) and item["image_id"] == 5
    assert len(data) == len(TINY_SCENES)
    split.file_paths[1].unlink()
    with pytest.raises(FileNotFoundError, match="000005.png"):
        data[1]


def test_read_coco_is_quiet_and_names_bad_files(tmp_path, capsys) -> None:
    from captionlib.data.coco import read_coco

    path = tmp_path / "captions.json"
    path.write_text(
        '{"images": [{"id": 1}], "annotations": [{"id": 5, "image_id": 1, "caption": "a dog"}]}'
    )
    coco = read_coco(path)
    assert coco.getImgIds() == [1] and coco.loadAnns(5)[0]["caption"] == "a dog"
    assert capsys.readouterr().out == ""
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_coco(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_coco(tmp_path / "bad.json")
