"""Real data sets in the book's form: COCO 2014 (official and Karpathy splits) and Flickr30K,
through the same pycocotools loader as ShapeWorld (chapter 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captionlib.data.coco import category_names, objects_in_image
from captionlib.data.prepare import (
    MAX_TOKENS,
    download,
    download_plan,
    load_prepared,
    prepare_dataset,
    truncate_caption,
)
from captionlib.data.vocab import Vocabulary
from captionlib.evaluate.localization import image_objects

LONG = " ".join(f"word{i}" for i in range(40))  # 40 tokens: cut to 30
# "boat" appears 4 times in train captions, "kite" 3 times, "zebra" only in val.
TRAIN_CAPTIONS = {
    1: ["A boat on the water.", "a red boat", LONG],
    2: ["A boat, a kite!", "the boat and a kite"],
    3: ["a kite in the sky", "A DOG runs"],
}
VAL_CAPTIONS = {
    10: ["a zebra on grass", "a dog"],
    11: ["a boat", "two zebras"],
    12: ["a kite", "a dog and a boat"],
    13: ["the sky", "a kite flies"],
}


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (10, 120, 200)).save(path)


def _captions_file(path: Path, part: str, captions: dict[int, list[str]], first_id: int) -> None:
    images = [
        {"id": i, "file_name": f"COCO_{part}_{i:012d}.jpg", "width": 8, "height": 6}
        for i in captions
    ]
    annotations = []
    for image_id, texts in captions.items():
        for text in texts:
            annotations.append(
                {"id": first_id + len(annotations), "image_id": image_id, "caption": text}
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    for image in images:
        _image(path.parent.parent / part / image["file_name"])


def _instances_file(path: Path, image_ids: list[int]) -> None:
    annotations = [
        {
            "id": 900 + i,
            "image_id": i,
            "category_id": 1 + i % 2,
            "bbox": [0, 0, 4, 3],
            "area": 12,
            "segmentation": [[0, 0, 4, 0, 4, 3, 0, 3]],  # the box as a polygon
            "iscrowd": 0,
        }
        for i in image_ids
    ]
    categories = [{"id": 1, "name": "boat"}, {"id": 2, "name": "kite"}]
    images = [{"id": i, "width": 8, "height": 6} for i in image_ids]  # as the official files
    payload = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(payload))


def make_coco2014(root: Path, instances: bool = True) -> Path:
    _captions_file(root / "annotations" / "captions_train2014.json", "train2014", TRAIN_CAPTIONS, 1)
    _captions_file(root / "annotations" / "captions_val2014.json", "val2014", VAL_CAPTIONS, 100)
    if instances:
        _instances_file(root / "annotations" / "instances_train2014.json", list(TRAIN_CAPTIONS))
        _instances_file(root / "annotations" / "instances_val2014.json", list(VAL_CAPTIONS))
    return root


def test_coco_official_splits_load_through_pycocotools(tmp_path: Path) -> None:
    root = make_coco2014(tmp_path / "coco")
    out = prepare_dataset("coco2014", root, tmp_path / "prepared", progress=False)
    data = load_prepared(out)
    assert data.manifest["split_scheme"] == "official (val halved)"
    assert data.splits["train"].image_ids == [1, 2, 3]
    assert data.splits["val"].image_ids == [10, 11]  # val2014 cut in two by sorted id
    assert data.splits["test"].image_ids == [12, 13]
    first = data.splits["train"]
    assert first.file_paths[0] == root / "train2014" / "COCO_train2014_000000000001.jpg"
    assert first.captions[0][:2] == ["a boat on the water", "a red boat"]
    assert data.manifest["splits"]["train"] == {"images": 3, "captions": 7}
    # instances were split too: category evaluation works on the prepared splits
    assert category_names(data.splits["test"]) == ["boat", "kite"]
    assert objects_in_image(data.splits["test"], 13) == {"kite"}
    # the official image records (height, width) are kept: pycocotools can decode the masks
    kite = image_objects(data.splits["test"], 13)["kite"]
    assert kite.boxes == [[0, 0, 4, 3]]
    assert kite.mask.shape == (6, 8) and kite.mask.any() and not kite.mask[4:].any()


def test_vocabulary_threshold_four_for_coco(tmp_path: Path) -> None:
    root = make_coco2014(tmp_path / "coco", instances=False)
    data = load_prepared(prepare_dataset("coco2014", root, tmp_path / "out", progress=False))
    assert "boat" in data.vocabulary  # 4 training occurrences
    assert "kite" not in data.vocabulary  # 3
    assert "zebra" not in data.vocabulary  # validation only
    assert data.manifest["min_count"] == 4 and data.manifest["instances"] is False
    assert Vocabulary.load(tmp_path / "out" / "vocabulary.json") == data.vocabulary
    lower = load_prepared(prepare_dataset("coco2014", root, tmp_path / "o3", 3, progress=False))
    assert "kite" in lower.vocabulary


def test_captions_are_cut_to_thirty_tokens(tmp_path: Path) -> None:
    root = make_coco2014(tmp_path / "coco", instances=False)
    data = load_prepared(prepare_dataset("coco2014", root, tmp_path / "out", progress=False))
    long = data.splits["train"].captions[0][2]
    assert long.split() == [f"word{i}" for i in range(MAX_TOKENS)]
    assert truncate_caption("One, two; three!", 2) == "one two"
    raw = json.loads((tmp_path / "out" / "captions_train.json").read_text())["annotations"]
    assert raw[2]["raw"] == LONG  # the original caption is kept beside the cut one


def test_karpathy_split_puts_restval_into_train(tmp_path: Path) -> None:
    root = make_coco2014(tmp_path / "coco", instances=False)
    splits = {1: "train", 2: "restval", 3: "val", 10: "test", 11: "train", 12: "val", 13: "test"}
    images = [
        {"cocoid": i, "split": s, "filepath": "x", "filename": "y", "sentences": []}
        for i, s in splits.items()
    ]
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    data = load_prepared(prepare_dataset("coco2014", root, tmp_path / "out", progress=False))
    assert data.manifest["split_scheme"] == "karpathy"
    assert data.splits["train"].image_ids == [1, 2, 11]
    assert data.splits["val"].image_ids == [3, 12]
    assert data.splits["test"].image_ids == [10, 13]
    # images keep the folder of their official part
    assert data.splits["train"].file_paths[2].parent.name == "val2014"


def test_flickr30k_from_karpathy_json(tmp_path: Path) -> None:
    root = tmp_path / "flickr"
    records = []
    for index, (split, texts) in enumerate(
        [
            ("train", ["a man rides a bike", "a man on a bike"]),
            ("train", ["a man with a dog", "the dog sleeps"]),
            ("val", ["a bike"]),
            ("test", ["a dog"]),
        ]
    ):
        filename = f"{1000 + index}.jpg"
        _image(root / "flickr30k-images" / filename)
        sentences = [{"raw": text, "tokens": text.split()} for text in texts]
        records.append(
            {"filename": filename, "imgid": index, "split": split, "sentences": sentences}
        )
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": records}))
    data = load_prepared(prepare_dataset("flickr30k", root, tmp_path / "out", progress=False))
    assert data.splits["train"].image_ids == [1000, 1001]
    assert data.splits["test"].captions == [["a dog"]]
    assert data.manifest["min_count"] == 3
    assert "man" in data.vocabulary and "a" in data.vocabulary  # 3 and 4 occurrences
    assert "dog" not in data.vocabulary and "bike" not in data.vocabulary  # 2 in train


def test_missing_files_are_named(tmp_path: Path) -> None:
    root = make_coco2014(tmp_path / "coco", instances=False)
    (root / "annotations" / "captions_val2014.json").unlink()
    for path in (root / "val2014").iterdir():
        path.unlink()
    (root / "val2014").rmdir()
    with pytest.raises(FileNotFoundError) as error:
        prepare_dataset("coco2014", root, tmp_path / "out", progress=False)
    message = str(error.value)
    assert "captions_val2014.json" in message and str(root / "val2014") in message
    assert "captions_train2014.json" not in message
    assert "python -m captionlib download coco2014" in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="dataset_flickr30k.json"):
        prepare_dataset("flickr30k", tmp_path / "nothing", tmp_path / "out", progress=False)


def test_missing_image_file_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    root = make_coco2014(tmp_path / "coco", instances=False)
    (root / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="COCO_train2014_000000000002.jpg"):
        prepare_dataset("coco2014", root, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "coco"]  # no output, no temporary folder


def test_unknown_dataset_and_download_plan_need_no_network(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="coco2015"):
        prepare_dataset("coco2015", tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="imagenet"):
        download("imagenet", tmp_path)
    urls = [item.url for item in download_plan("coco2017")]
    assert "http://images.cocodataset.org/zips/train2017.zip" in urls
    assert any(url.endswith("caption_datasets.zip") for url in urls)
    assert not any(tmp_path.iterdir())
