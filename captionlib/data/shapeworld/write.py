"""Writing ShapeWorld in COCO format (chapter 1), generated once into a cached folder.

::

    folder = ensure_shapeworld()               # data/shapeworld-<hash>/, generated once
    coco = COCO(folder / "instances_train.json")

Layout of a generated folder (``file_name`` is relative to ``images/``)::

    captions_<split>.json    COCO captions: images, annotations {id, image_id, caption}
    instances_<split>.json   COCO instances: boxes, RLE masks of the visible pixels, categories;
                             images carry ``ground`` and ``horizon``, annotations ``attributes``
    images/<split>/<image id:06d>.png

Everything is a function of the config, so the files are byte-identical across runs and
independent of how many worker processes drew them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from captionlib.artifacts import cached
from captionlib.data.shapeworld.config import (
    CATEGORIES,
    CATEGORY_IDS,
    SPLITS,
    SUPERCATEGORIES,
    ShapeWorldConfig,
    _check_int,
)
from captionlib.data.shapeworld.grammar import _captions
from captionlib.data.shapeworld.render import _draw_scene
from captionlib.progress import progress_bar
from captionlib.utils import data_dir, die_with_parent


def _tight_bbox(mask: np.ndarray) -> list[int]:
    """COCO [x, y, w, h] of the True pixels of `mask` [H, W]."""
    rows, cols = mask.any(axis=1), mask.any(axis=0)
    y0, x0 = int(rows.argmax()), int(cols.argmax())
    y1, x1 = len(rows) - int(rows[::-1].argmax()), len(cols) - int(cols[::-1].argmax())
    return [x0, y0, x1 - x0, y1 - y0]


def _render_one(
    task: tuple[ShapeWorldConfig, str, int, int, Path],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Draw and save one image; return its COCO image entry, instances and captions."""
    config, split, index, image_id, image_root = task
    image, scene = _draw_scene(config, split, index)
    # captions draw from their own stream, so grammar changes never move pixels
    captions = _captions(np.random.default_rng([config.seed, SPLITS.index(split), index, 1]), scene)
    file_name = f"{split}/{image_id:06d}.png"
    Image.fromarray(image).save(image_root / file_name, format="PNG", compress_level=1)
    entry = {
        "id": image_id,
        "file_name": file_name,
        "width": scene.size,
        "height": scene.size,
        "ground": scene.ground,
        "horizon": scene.horizon,
    }
    instances = []
    for k, obj in enumerate(scene.objects):
        rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
        instances.append(
            {
                "id": image_id * 10 + k + 1,
                "image_id": image_id,
                "category_id": CATEGORY_IDS[obj.category],
                "bbox": _tight_bbox(obj.mask),
                "area": int(obj.mask.sum()),
                "segmentation": {
                    "size": [scene.size, scene.size],
                    "counts": rle["counts"].decode(),
                },
                "iscrowd": 0,
                "attributes": {"colour": obj.colour, "size": obj.size},
            }
        )
    texts = [
        {"id": image_id * 10 + k + 1, "image_id": image_id, "caption": caption}
        for k, caption in enumerate(captions)
    ]
    return entry, instances, texts


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(payload, separators=(",", ":")))


def _default_workers(total: int) -> int:
    return 1 if total < 1000 else max(1, min(2, os.cpu_count() or 1))


def generate(
    config: ShapeWorldConfig, folder: str | Path, workers: int | None = None, progress: bool = False
) -> Path:
    """Write every split of `config` into `folder` (chapter 1); return the folder.

    `workers` processes draw the images (default: 2 for the full data set, else 1); the
    output does not depend on it. Image ids run over the splits in the order of SPLITS.
    """
    if not isinstance(config, ShapeWorldConfig):
        raise TypeError(f"config must be a ShapeWorldConfig, got {type(config).__name__}")
    folder = Path(folder)
    total = sum(config.split_size(split) for split in SPLITS)
    workers = _default_workers(total) if workers is None else workers
    _check_int("generate", "workers", workers, 1)
    info = {"description": "ShapeWorld synthetic captions (captionlib)", "config": asdict(config)}
    categories = [
        {"id": CATEGORY_IDS[name], "name": name, "supercategory": SUPERCATEGORIES[name]}
        for name in CATEGORIES
    ]
    pool = ProcessPoolExecutor(workers, initializer=die_with_parent) if workers > 1 else None
    bar = progress_bar(total=total, desc="ShapeWorld", unit="img", progress=progress)
    try:
        first_id = 1
        for split in SPLITS:
            count = config.split_size(split)
            (folder / "images" / split).mkdir(parents=True, exist_ok=True)
            tasks = [(config, split, i, first_id + i, folder / "images") for i in range(count)]
            first_id += count
            results = (
                pool.map(_render_one, tasks, chunksize=64) if pool else map(_render_one, tasks)
            )
            images, instances, captions = [], [], []
            for entry, objects, texts in results:
                images.append(entry)
                instances.extend(objects)
                captions.extend(texts)
                bar.update()
            split_info = {**info, "split": split}
            _write_json(
                folder / f"captions_{split}.json",
                {"info": split_info, "images": images, "annotations": captions},
            )
            _write_json(
                folder / f"instances_{split}.json",
                {
                    "info": split_info,
                    "images": images,
                    "annotations": instances,
                    "categories": categories,
                },
            )
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return folder


def ensure_shapeworld(config: ShapeWorldConfig | None = None, progress: bool = True) -> Path:
    """The ShapeWorld folder of `config` under data_dir(), generated on first use (chapter 1).

    Generation goes through `artifacts.cached`: it happens in a temporary folder that is
    renamed into place only when complete, and again only when the config changes.
    """
    config = ShapeWorldConfig() if config is None else config
    if not isinstance(config, ShapeWorldConfig):
        raise TypeError(f"config must be a ShapeWorldConfig, got {type(config).__name__}")
    return cached(
        "shapeworld",
        asdict(config),
        lambda folder: generate(config, folder, progress=progress),
        root=data_dir(),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m captionlib.data.shapeworld [--seed N]`: generate and print the folder."""
    parser = argparse.ArgumentParser(description="Generate the ShapeWorld data set.")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    print(ensure_shapeworld(ShapeWorldConfig(seed=args.seed)))
