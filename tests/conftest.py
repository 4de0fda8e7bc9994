"""Shared test setup: one torch thread (helpers run tests in parallel) and small fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

torch.set_num_threads(1)

TINY_CATEGORIES = [{"id": 1, "name": "boat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "ball"}]

# image id -> (captions, objects as (category id, bbox [x, y, w, h]))
TINY_SCENES: dict[int, tuple[list[str], list[tuple[int, list[float]]]]] = {
    7: (["A red boat on the water.", "a boat sails on blue water"], [(1, [4, 10, 12, 6])]),
    3: (
        ["A brown dog with a ball!", "the dog plays with a red ball"],
        [(2, [2, 2, 8, 8]), (3, [14, 12, 4, 4])],
    ),
    12: (["a dog on the grass", "a small dog"], [(2, [6, 4, 10, 10])]),
    5: (
        ["a boat and a dog", "the dog looks at the boat on the water"],
        [(1, [0, 12, 10, 6]), (2, [12, 2, 8, 8])],
    ),
}
TINY_SIZE = (24, 20)  # (width, height) of every tiny image


def _draw_scene(objects: list[tuple[int, list[float]]]) -> Image.Image:
    image = Image.new("RGB", TINY_SIZE, (120, 170, 230))
    draw = ImageDraw.Draw(image)
    colours = {1: (200, 30, 30), 2: (120, 80, 40), 3: (240, 220, 20)}
    for category, (x, y, w, h) in objects:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colours[category])
    return image


def write_tiny_coco(root: Path) -> dict[str, Path]:
    """Write a 4-image COCO-format split under `root`; return its paths.

    Layout (as ShapeWorld): captions_tiny.json, instances_tiny.json, images/tiny/<id>.png
    with `file_name` "tiny/<id:06d>.png" relative to images/.
    """
    images, captions, instances = [], [], []
    (root / "images" / "tiny").mkdir(parents=True)
    for image_id, (texts, objects) in TINY_SCENES.items():
        file_name = f"tiny/{image_id:06d}.png"
        _draw_scene(objects).save(root / "images" / file_name)
        images.append(
            {"id": image_id, "file_name": file_name, "width": TINY_SIZE[0], "height": TINY_SIZE[1]}
        )
        for text in texts:
            captions.append({"id": 100 + len(captions), "image_id": image_id, "caption": text})
        for category, (x, y, w, h) in objects:
            instances.append(
                {
                    "id": 500 + len(instances),
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
    info = {"description": "tiny test split"}
    paths = {
        "captions": root / "captions_tiny.json",
        "instances": root / "instances_tiny.json",
        "images": root / "images",
    }
    paths["captions"].write_text(
        json.dumps({"info": info, "images": images, "annotations": captions})
    )
    paths["instances"].write_text(
        json.dumps(
            {
                "info": info,
                "images": images,
                "annotations": instances,
                "categories": TINY_CATEGORIES,
            }
        )
    )
    return paths


@pytest.fixture
def tiny_coco(tmp_path: Path) -> dict[str, Path]:
    """A tiny COCO-format folder (4 images, 2 captions each, boxes + polygons) in tmp_path."""
    return write_tiny_coco(tmp_path)
