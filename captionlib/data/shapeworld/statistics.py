"""The co-occurrence rates a generated ShapeWorld split realises (chapters 1 and 10).

::

    stats = bias_statistics(folder / "instances_shifted.json")
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from captionlib.data.shapeworld.config import _GROUND_RULES, BIAS_FIELDS, CATEGORIES, GROUNDS


def bias_statistics(instances_json: str | Path) -> dict[str, Any]:
    """The co-occurrence rates a ShapeWorld instances file realises (chapters 1 and 10).

    Returns a dict with
      ``rates``: {bias field of SceneBiases: measured rate (nan without support)},
      ``support``: {bias field: number of images the rate is conditioned on},
      ``category_given_ground``: {ground: {category: fraction of its images containing it}},
      ``ground_counts``, ``category_counts`` (images containing the category), ``n_images``.
    """
    path = Path(instances_json)
    if not path.is_file():
        raise FileNotFoundError(f"instances file not found: {path}")
    try:
        payload = json.loads(path.read_text())
        names = {item["id"]: item["name"] for item in payload["categories"]}
        grounds = {image["id"]: image["ground"] for image in payload["images"]}
        present: dict[int, set[str]] = {image_id: set() for image_id in grounds}
        for annotation in payload["annotations"]:
            present[annotation["image_id"]].add(names[annotation["category_id"]])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a ShapeWorld instances file ({error!r})") from error

    def rate(category: str, condition: Iterable[int]) -> tuple[float, int]:
        condition = list(condition)
        hits = sum(category in present[image_id] for image_id in condition)
        return (hits / len(condition) if condition else math.nan), len(condition)

    conditions = {
        name: (category, [i for i, ground in grounds.items() if ground in where])
        for name, (category, where) in _GROUND_RULES.items()
    }
    conditions["p_ball_given_dog"] = ("ball", [i for i, cats in present.items() if "dog" in cats])
    measured = {name: rate(category, ids) for name, (category, ids) in conditions.items()}
    ground_counts = {g: sum(v == g for v in grounds.values()) for g in GROUNDS}
    table = {
        g: {c: rate(c, (i for i, v in grounds.items() if v == g))[0] for c in CATEGORIES}
        for g in GROUNDS
    }
    return {
        "n_images": len(grounds),
        "rates": {name: measured[name][0] for name in BIAS_FIELDS},
        "support": {name: measured[name][1] for name in BIAS_FIELDS},
        "category_given_ground": table,
        "ground_counts": ground_counts,
        "category_counts": {c: sum(c in cats for cats in present.values()) for c in CATEGORIES},
    }
