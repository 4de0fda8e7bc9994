"""ShapeWorld: a synthetic captioning data set written in COCO format (chapter 1).

Every image is a sky above one ground type (grass, water, sand, road or snow) with one to
three objects from ten drawable categories, each with a colour and a size. Five captions per
image come from a small grammar with synonyms. The training split has co-occurrence biases
that a captioner can learn as shortcuts (boats on water, cars on roads, dogs with balls); the
``shifted`` split breaks them, which makes object hallucination measurable (chapter 10).

::

    folder = ensure_shapeworld()               # data/shapeworld-<hash>/, generated once
    coco = COCO(folder / "instances_train.json")
    stats = bias_statistics(folder / "instances_shifted.json")

Layout of a generated folder (``file_name`` is relative to ``images/``)::

    captions_<split>.json    COCO captions: images, annotations {id, image_id, caption}
    instances_<split>.json   COCO instances: boxes, RLE masks of the visible pixels, categories;
                             images carry ``ground`` and ``horizon``, annotations ``attributes``
    images/<split>/<image id:06d>.png

Everything is a function of the config: image ``i`` of a split is drawn from its own NumPy
generator seeded with ``(seed, split, i)``, so the files are byte-identical across runs and
independent of how many worker processes drew them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from captionlib.progress import progress_bar

from captionlib.artifacts import cached
from captionlib.utils import data_dir

# Bump when the generator's output changes: it is part of every config (and so of every cache
# key derived from one), so folders and artifacts made by an older generator are not reused.
GENERATOR_VERSION = 2

CATEGORIES = ["boat", "fish", "bird", "plane", "tree", "house", "car", "dog", "ball", "person"]
CATEGORY_IDS = {name: index + 1 for index, name in enumerate(CATEGORIES)}
SUPERCATEGORIES = {
    "boat": "vehicle",
    "fish": "animal",
    "bird": "animal",
    "plane": "vehicle",
    "tree": "outdoor",
    "house": "outdoor",
    "car": "vehicle",
    "dog": "animal",
    "ball": "sports",
    "person": "person",
}
GROUNDS = ("grass", "water", "sand", "road", "snow")
SPLITS = ("train", "val", "test", "shifted")
SKY_CATEGORIES = ("bird", "plane")

# Where the bias rules apply. Boats and cars appear only through these rules, never as fillers.
BOAT_LAND_GROUNDS = ("grass", "sand")
CAR_OFFROAD_GROUNDS = ("grass", "sand", "snow")
# bias field -> (category that may be added, grounds where the rule applies)
_GROUND_RULES = {
    "p_boat_given_water": ("boat", ("water",)),
    "p_boat_given_land": ("boat", BOAT_LAND_GROUNDS),
    "p_car_given_road": ("car", ("road",)),
    "p_car_given_offroad": ("car", CAR_OFFROAD_GROUNDS),
}

# Random filler objects per ground, with relative weights (boats and cars come from the rules).
_FILLERS: dict[str, dict[str, float]] = {
    "grass": {"tree": 2, "house": 1.5, "dog": 2, "person": 2, "ball": 0.5, "bird": 1, "plane": 1},
    "water": {"fish": 3, "bird": 2, "plane": 1.5},
    "sand": {"person": 2, "dog": 2, "ball": 0.5, "tree": 1, "bird": 1, "plane": 1},
    "road": {"person": 1.5, "dog": 1.5, "house": 1.5, "tree": 1.5, "bird": 1, "plane": 1},
    "snow": {"tree": 2, "house": 1.5, "person": 2, "dog": 2, "bird": 1, "plane": 1},
}

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _check_probability(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{owner}.{name} must be a probability in [0, 1], got {value!r}")


def _check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> None:
    valid = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not valid or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{owner}.{name} must be an int {bound}, got {value!r}")


@dataclass(frozen=True)
class SceneBiases:
    """Co-occurrence probabilities of one distribution (chapter 1).

    Each field is the probability that a scene satisfying the condition in its name contains
    the object: ``p_boat_given_land`` applies to grass and sand scenes, ``p_car_given_offroad``
    to grass, sand and snow scenes. Boats and cars appear only through these rules.
    """

    p_boat_given_water: float = 0.9
    p_boat_given_land: float = 0.0
    p_car_given_road: float = 0.9
    p_car_given_offroad: float = 0.0
    p_ball_given_dog: float = 0.8

    def __post_init__(self) -> None:
        for item in fields(self):
            _check_probability(type(self).__name__, item.name, getattr(self, item.name))


BIAS_FIELDS = tuple(item.name for item in fields(SceneBiases))
SHIFTED_BIASES = SceneBiases(
    p_boat_given_water=0.1,
    p_boat_given_land=0.5,
    p_car_given_road=0.2,
    p_car_given_offroad=0.4,
    p_ball_given_dog=0.1,
)


@dataclass(frozen=True)
class ShapeWorldConfig:
    """Everything that determines a ShapeWorld folder (chapter 1); `asdict` gives its JSON.

    `biases` drive the train, val and test splits; `shifted_biases` the shifted split.
    Nested dicts (as read back from JSON) are accepted for the two bias fields.
    `generator_version` records which version of this generator the config describes; only
    the current GENERATOR_VERSION can be generated.
    """

    seed: int = 0
    image_size: int = 112
    n_train: int = 3000
    n_val: int = 300
    n_test: int = 500
    n_shifted: int = 500
    min_objects: int = 1
    max_objects: int = 3
    biases: SceneBiases = field(default_factory=SceneBiases)
    shifted_biases: SceneBiases = field(default_factory=lambda: SHIFTED_BIASES)
    generator_version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if self.generator_version != GENERATOR_VERSION:
            raise ValueError(
                f"{owner}.generator_version is {self.generator_version!r}, but this captionlib "
                f"draws version {GENERATOR_VERSION} scenes"
            )
        _check_int(owner, "seed", self.seed, 0)
        _check_int(owner, "image_size", self.image_size, 64, 1024)
        for split in SPLITS:
            _check_int(owner, f"n_{split}", getattr(self, f"n_{split}"), 0, 999_999)
        _check_int(owner, "min_objects", self.min_objects, 1, 3)
        _check_int(owner, "max_objects", self.max_objects, 1, 3)
        if self.max_objects < self.min_objects:
            raise ValueError(
                f"{owner}.max_objects ({self.max_objects}) must be >= "
                f"min_objects ({self.min_objects})"
            )
        for name in ("biases", "shifted_biases"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                unknown = set(value) - set(BIAS_FIELDS)
                if unknown:
                    raise ValueError(f"{owner}.{name} has unknown fields {sorted(unknown)}")
                object.__setattr__(self, name, SceneBiases(**value))
            elif not isinstance(value, SceneBiases):
                raise ValueError(f"{owner}.{name} must be a SceneBiases, got {value!r}")

    def split_size(self, split: str) -> int:
        """Number of images in `split`."""
        _check_split(split)
        return getattr(self, f"n_{split}")

    def split_biases(self, split: str) -> SceneBiases:
        """The biases `split` is drawn with (train, val, test share them)."""
        _check_split(split)
        return self.shifted_biases if split == "shifted" else self.biases


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# ---------------------------------------------------------------------------------------------
# Objects: attributes, sizes and drawings in unit coordinates
# ---------------------------------------------------------------------------------------------

RGB = tuple[int, int, int]
COLOURS: dict[str, RGB] = {
    "red": (205, 35, 35),
    "blue": (40, 70, 210),
    "green": (40, 150, 55),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (30, 30, 30),
    "orange": (245, 130, 25),
    "brown": (130, 80, 40),
    "gray": (135, 135, 140),
    "purple": (130, 50, 170),
    "pink": (240, 130, 180),
}
_PALETTES = {
    "boat": ("red", "blue", "yellow", "white", "black", "orange", "green"),
    "fish": ("orange", "yellow", "red", "pink", "purple", "green"),
    "bird": ("black", "blue", "red", "yellow", "white", "brown"),
    "plane": ("white", "red", "blue", "yellow", "gray", "orange"),
    "tree": ("green", "orange", "yellow"),
    "house": ("red", "blue", "yellow", "white", "orange", "pink", "purple"),
    "car": ("red", "blue", "green", "yellow", "white", "black", "orange", "purple"),
    "dog": ("brown", "black", "white", "gray", "orange"),
    "ball": ("red", "blue", "yellow", "green", "orange", "pink", "purple"),
    "person": ("red", "blue", "green", "yellow", "white", "black", "orange", "purple"),
}
# Extent (the larger side of the drawing frame, px at 112 x 112) of small and big objects.
_EXTENTS = {
    "boat": ((20, 27), (33, 45)),
    "fish": ((14, 20), (25, 34)),
    "bird": ((14, 19), (23, 30)),
    "plane": ((22, 29), (35, 45)),
    "tree": ((20, 27), (34, 45)),
    "house": ((20, 26), (32, 42)),
    "car": ((20, 26), (32, 42)),
    "dog": ((22, 28), (32, 42)),
    "ball": ((14, 15), (17, 20)),
    "person": ((18, 24), (30, 40)),
}
_ASPECT = {  # width / height of the drawing frame
    "boat": 1.1,
    "fish": 2.0,
    "bird": 1.5,
    "plane": 2.0,
    "tree": 0.6,
    "house": 1.0,
    "car": 1.9,
    "dog": 1.4,
    "ball": 1.0,
    "person": 0.5,
}

# Primitives in unit coordinates of the object's frame (u right, v down, both in [0, 1]):
#   ("poly", points, role)  ("ellipse", (u0, v0, u1, v1), role)  ("rect", (u0, v0, u1, v1), role)
#   ("circle", (u, v, radius as a fraction of the frame height), role)
#   ("line", points, width as a fraction of the height, role)
#   ("ring", (u0, v0, u1, v1), width as a fraction of the height, role)  ellipse outline only
# Roles name a colour: "main" is the object's colour attribute.
_DRAWINGS: dict[str, tuple[tuple[Any, ...], ...]] = {
    "boat": (
        ("line", ((0.48, 0.04), (0.48, 0.72)), 0.05, "wood"),
        ("poly", ((0.53, 0.04), (0.53, 0.62), (0.92, 0.62)), "sail"),
        ("poly", ((0.43, 0.14), (0.43, 0.62), (0.14, 0.62)), "sail"),
        ("poly", ((0.0, 0.66), (1.0, 0.66), (0.82, 1.0), (0.18, 1.0)), "main"),
    ),
    "fish": (
        ("poly", ((0.78, 0.5), (1.0, 0.1), (1.0, 0.9)), "main_dark"),
        ("poly", ((0.36, 0.22), (0.5, 0.0), (0.62, 0.24)), "main_dark"),
        ("ellipse", (0.05, 0.15, 0.82, 0.85), "main"),
        ("circle", (0.24, 0.42, 0.08), "eye"),
    ),
    "bird": (
        ("poly", ((0.34, 0.5), (0.0, 0.36), (0.06, 0.72)), "main_dark"),
        ("ellipse", (0.24, 0.4, 0.76, 0.8), "main"),
        ("circle", (0.78, 0.42, 0.17), "main"),
        ("poly", ((0.9, 0.34), (1.0, 0.46), (0.9, 0.52)), "beak"),
        ("poly", ((0.36, 0.56), (0.62, 0.56), (0.2, 0.0)), "main_dark"),
        ("circle", (0.8, 0.37, 0.045), "eye"),
    ),
    "plane": (
        ("poly", ((0.02, 0.5), (0.17, 0.5), (0.06, 0.02)), "main_dark"),
        ("ellipse", (0.0, 0.36, 1.0, 0.64), "main"),
        ("poly", ((0.38, 0.52), (0.62, 0.52), (0.42, 0.98), (0.31, 0.98)), "main_dark"),
        ("ellipse", (0.8, 0.4, 0.92, 0.5), "window"),
    ),
    "tree": (
        ("rect", (0.38, 0.58, 0.62, 1.0), "wood"),
        ("ellipse", (0.0, 0.0, 1.0, 0.7), "main"),
        ("ellipse", (0.2, 0.1, 0.55, 0.35), "main_light"),
    ),
    "house": (
        ("rect", (0.1, 0.45, 0.9, 1.0), "main"),
        ("poly", ((0.0, 0.48), (0.5, 0.02), (1.0, 0.48)), "roof"),
        ("rect", (0.42, 0.68, 0.58, 1.0), "door"),
        ("rect", (0.18, 0.58, 0.34, 0.74), "window"),
        ("rect", (0.66, 0.58, 0.82, 0.74), "window"),
    ),
    "car": (
        ("poly", ((0.2, 0.42), (0.3, 0.04), (0.7, 0.04), (0.84, 0.42)), "main"),
        ("poly", ((0.3, 0.4), (0.36, 0.14), (0.64, 0.14), (0.72, 0.4)), "window"),
        ("rect", (0.0, 0.4, 1.0, 0.8), "main"),
        ("circle", (0.22, 0.8, 0.2), "tyre"),
        ("circle", (0.78, 0.8, 0.2), "tyre"),
        ("circle", (0.22, 0.8, 0.08), "hub"),
        ("circle", (0.78, 0.8, 0.08), "hub"),
    ),
    "dog": (
        ("line", ((0.2, 0.45), (0.03, 0.18)), 0.08, "main"),
        ("rect", (0.24, 0.58, 0.32, 1.0), "main_dark"),
        ("rect", (0.66, 0.58, 0.74, 1.0), "main_dark"),
        ("ellipse", (0.16, 0.32, 0.8, 0.72), "main"),
        ("rect", (0.34, 0.6, 0.42, 1.0), "main"),
        ("rect", (0.56, 0.6, 0.64, 1.0), "main"),
        ("ellipse", (0.68, 0.08, 1.0, 0.46), "main"),
        ("poly", ((0.7, 0.1), (0.8, 0.08), (0.7, 0.4)), "main_dark"),
        ("circle", (0.87, 0.2, 0.04), "eye"),
        ("circle", (0.99, 0.3, 0.05), "eye"),
    ),
    "ball": (
        ("ellipse", (0.0, 0.0, 1.0, 1.0), "main"),
        ("ring", (0.3, 0.0, 0.7, 1.0), 0.08, "stripe"),
    ),
    "person": (
        ("line", ((0.38, 0.58), (0.3, 1.0)), 0.1, "trousers"),
        ("line", ((0.62, 0.58), (0.7, 1.0)), 0.1, "trousers"),
        ("line", ((0.28, 0.27), (0.04, 0.56)), 0.07, "main"),
        ("line", ((0.72, 0.27), (0.96, 0.56)), 0.07, "main"),
        ("rect", (0.24, 0.24, 0.76, 0.62), "main"),
        ("circle", (0.5, 0.12, 0.11), "skin"),
    ),
}
_FIXED_ROLES = {
    "wood": (110, 70, 35),
    "window": (175, 215, 240),
    "door": (85, 50, 25),
    "tyre": (25, 25, 25),
    "hub": (165, 165, 170),
    "eye": (15, 15, 15),
    "beak": (240, 160, 30),
    "trousers": (45, 55, 95),
}
_SKIN_TONES = ((235, 190, 150), (200, 150, 110), (140, 95, 60))
_MIN_VISIBLE_FRACTION = 0.35  # objects hidden more than this are dropped from the scene


@dataclass
class _Object:
    category: str
    colour: str
    size: str  # "small" | "big"
    flip: bool  # mirrored drawing (faces left)
    box: tuple[int, int, int, int]  # drawing frame x0, y0, x1, y1 (exclusive)
    skin: RGB
    mask: np.ndarray | None = None  # [S, S] bool, visible pixels

    @property
    def base(self) -> int:
        return self.box[3]

    @property
    def in_sky(self) -> bool:
        return self.category in SKY_CATEGORIES


def _shade(rgb: RGB, factor: float) -> RGB:
    """Darker (factor < 1, towards black) or lighter (factor > 1, towards white)."""
    red, green, blue = (
        int(c * factor) if factor <= 1 else int(c + (255 - c) * (factor - 1)) for c in rgb
    )
    return red, green, blue


def _roles(obj: _Object) -> dict[str, RGB]:
    main = COLOURS[obj.colour]
    roles = dict(_FIXED_ROLES)
    roles["main"] = main
    roles["main_dark"] = _shade(main, 0.7) if obj.colour != "black" else (70, 70, 75)
    roles["main_light"] = _shade(main, 1.25)
    roles["sail"] = (245, 240, 225) if obj.colour != "white" else (225, 60, 50)
    roles["roof"] = (150, 45, 30) if obj.colour not in ("red", "orange", "pink") else (75, 75, 85)
    roles["stripe"] = (250, 250, 250) if obj.colour != "white" else (30, 30, 30)
    roles["skin"] = obj.skin
    return roles


def _render_object(
    draw: ImageDraw.ImageDraw, obj: _Object, colours: Mapping[str, RGB] | None
) -> None:
    """Draw `obj`; with `colours` None every part is drawn as 255 (its mask)."""
    x0, y0, x1, y1 = obj.box
    width, height = x1 - x0, y1 - y0

    def point(u: float, v: float) -> tuple[float, float]:
        u = 1.0 - u if obj.flip else u
        return x0 + u * (width - 1), y0 + v * (height - 1)

    def box(u0: float, v0: float, u1: float, v1: float) -> list[float]:
        (a, b), (c, d) = point(u0, v0), point(u1, v1)
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    for kind, geometry, *rest in _DRAWINGS[obj.category]:
        role = rest[-1]
        fill = 255 if colours is None else colours[role]
        edge = 255 if colours is None else _shade(colours[role], 0.55)
        if kind == "poly":
            draw.polygon([point(u, v) for u, v in geometry], fill=fill, outline=edge)
        elif kind == "ellipse":
            draw.ellipse(box(*geometry), fill=fill, outline=edge)
        elif kind == "rect":
            draw.rectangle(box(*geometry), fill=fill, outline=edge)
        elif kind == "circle":
            cx, cy = point(geometry[0], geometry[1])
            radius = max(geometry[2] * (height - 1), 0.6)
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        elif kind == "line":
            line_width = max(1, round(rest[0] * height))
            draw.line([point(u, v) for u, v in geometry], fill=fill, width=line_width)
        else:  # ring
            draw.ellipse(box(*geometry), outline=fill, width=max(1, round(rest[0] * height)))


def _object_mask(obj: _Object, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    _render_object(ImageDraw.Draw(canvas), obj, None)
    return np.asarray(canvas) > 0  # [S, S] bool


# ---------------------------------------------------------------------------------------------
# Scene sampling: which objects, where
# ---------------------------------------------------------------------------------------------


def _choose(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[name] for name in names], dtype=np.float64)
    return names[rng.choice(len(names), p=p / p.sum())]


def _sample_categories(
    rng: np.random.Generator, ground: str, config: ShapeWorldConfig, biases: SceneBiases
) -> list[str]:
    """The categories of one scene: bias rules first, then random fillers, then dog + ball."""
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    anchors = [
        category
        for name, (category, grounds) in _GROUND_RULES.items()
        if ground in grounds and rng.random() < getattr(biases, name)
    ][: config.max_objects]
    categories = anchors + [
        _choose(rng, _FILLERS[ground]) for _ in range(max(count - len(anchors), 0))
    ]
    if "dog" not in categories:
        return categories
    fillers = range(len(anchors), len(categories))
    if rng.random() < biases.p_ball_given_dog:
        if "ball" in categories:
            return categories
        if len(categories) < config.max_objects:
            return categories + ["ball"]
        spare = [i for i in fillers if categories[i] != "dog" or categories.count("dog") > 1]
        if spare:  # replace the last spare filler, keeping at least one dog
            categories[spare[-1]] = "ball"
        return categories
    others = {k: w for k, w in _FILLERS[ground].items() if k not in ("ball", "dog")}
    return [
        _choose(rng, others) if i in fillers and category == "ball" else category
        for i, category in enumerate(categories)
    ]


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over the smaller box (0 = disjoint, 1 = one inside the other)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller


def _frame_size(
    rng: np.random.Generator, category: str, size: str, scale: float
) -> tuple[int, int]:
    """Width and height of the drawing frame of one object."""
    low, high = _EXTENTS[category][size == "big"]
    extent = int(rng.integers(low, high + 1)) * scale
    aspect = _ASPECT[category]
    if aspect >= 1:
        return max(round(extent), 4), max(round(extent / aspect), 4)
    return max(round(extent * aspect), 4), max(round(extent), 4)


def _position(
    rng: np.random.Generator,
    category: str,
    width: int,
    height: int,
    horizon: int,
    size: int,
    partner: _Object | None,
) -> tuple[int, int]:
    """A random top-left corner that puts the object where it belongs in the scene."""
    if partner is not None:  # a ball beside its dog, on the side the dog faces
        left = partner.flip
        x0 = partner.box[0] - width - 2 if left else partner.box[2] + 2
        if x0 < 1 or x0 + width > size - 1:
            x0 = partner.box[2] + 2 if left else partner.box[0] - width - 2
        base = partner.base + int(rng.integers(-3, 2))
        return int(np.clip(x0, 1, size - width - 1)), min(base, size - 1) - height
    x0 = int(rng.integers(1, max(size - width - 1, 2)))
    if category in SKY_CATEGORIES:
        return x0, int(rng.integers(2, max(horizon - height - 1, 3)))
    if category == "fish":
        return x0, int(rng.integers(horizon + 3, max(size - height - 1, horizon + 4)))
    # Trees and houses may stand on the horizon; other objects stand clearly on the ground.
    lowest_base = horizon + (3 if category in ("tree", "house") else round(0.4 * height) + 1)
    base = int(rng.integers(min(lowest_base, size - 2), size - 1))
    return x0, base - height


def _place_objects(
    rng: np.random.Generator, categories: list[str], horizon: int, size: int
) -> list[_Object]:
    scale = size / 112
    placed: list[_Object] = []
    for category in categories:
        flip = bool(rng.random() < 0.5)
        partner = None
        if category == "ball":
            partner = next((o for o in placed if o.category == "dog"), None)
        obj_size = "big" if rng.random() < 0.5 else "small"
        width, height = _frame_size(rng, category, obj_size, scale)
        palette = _PALETTES[category]
        colour = palette[int(rng.integers(len(palette)))]
        skin = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))]
        best, best_overlap = None, math.inf
        for _ in range(30):
            x0, y0 = _position(rng, category, width, height, horizon, size, partner)
            box = (x0, y0, x0 + width, y0 + height)
            overlap = max((_overlap(box, other.box) for other in placed), default=0.0)
            if overlap < best_overlap:
                best, best_overlap = box, overlap
            if overlap < 0.15 or partner is not None:
                break
        placed.append(_Object(category, colour, obj_size, flip, best, skin))
    return placed


def _painter_order(objects: list[_Object]) -> list[_Object]:
    """Far to near: sky objects first, then ground objects by the height of their base."""
    return sorted(objects, key=lambda o: (not o.in_sky, o.base, o.box[0]))


def _visible(objects: list[_Object], size: int) -> list[_Object]:
    """Drop (almost) hidden objects; set each remaining object's visible mask."""
    own = {id(obj): _object_mask(obj, size) for obj in objects}
    objects = _painter_order(objects)
    while True:
        covered = np.zeros((size, size), dtype=bool)
        fractions = []
        for obj in reversed(objects):
            mask = own[id(obj)]
            obj.mask = mask & ~covered
            covered |= mask
            fractions.append(obj.mask.sum() / max(mask.sum(), 1))
        fractions.reverse()
        worst = int(np.argmin(fractions))
        if fractions[worst] >= _MIN_VISIBLE_FRACTION:
            return objects
        objects = objects[:worst] + objects[worst + 1 :]


# ---------------------------------------------------------------------------------------------
# Backgrounds
# ---------------------------------------------------------------------------------------------


def _jitter(rng: np.random.Generator, rgb: Sequence[int], amount: float) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def _sky(rng: np.random.Generator, height: int, size: int) -> np.ndarray:
    top, bottom = _jitter(rng, (70, 130, 210), 15), _jitter(rng, (175, 210, 240), 12)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky = np.broadcast_to(top * (1 - t) + bottom * t, (height, size, 3)).copy()
    ys, xs = np.mgrid[0:height, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):  # soft clouds
        cx, cy = rng.uniform(0, size), rng.uniform(0, height * 0.7)
        sx, sy = rng.uniform(8, 18), rng.uniform(3, 6)
        weight = 0.7 * np.exp(-(((xs - cx) / sx) ** 2) - ((ys - cy) / sy) ** 2)
        sky += weight[..., None] * (250.0 - sky)
    return sky


def _ground(rng: np.random.Generator, ground: str, height: int, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:size].astype(np.float32)
    depth = (ys / max(height - 1, 1))[..., None]  # 0 at the horizon, 1 at the bottom
    grain = rng.standard_normal((height, size, 1), dtype=np.float32)
    if ground == "grass":
        base = _jitter(rng, (75, 150, 60), 15)
        img = base * (1.05 - 0.15 * depth) + 10 * grain
        count = height * size // 10
        bx, by = rng.integers(0, size, count), rng.integers(2, height, count)
        shade = rng.choice(np.array([-35.0, 30.0], dtype=np.float32), count)[:, None]
        for step in range(3):
            img[by - step, bx] += shade
    elif ground == "water":
        base = _jitter(rng, (40, 100, 185), 15)
        img = base * (1.1 - 0.3 * depth) + 4 * grain
        phase = rng.uniform(0, 2 * np.pi, (height, 1)).astype(np.float32)
        frequency = rng.uniform(0.25, 0.45)
        crest = (np.sin(frequency * xs + phase) > 0.8) & (rng.random((height, 1)) < 0.45)
        img += 45 * crest[..., None]
    elif ground == "sand":
        base = _jitter(rng, (220, 195, 140), 10)
        ripple = np.sin(0.7 * ys + 0.2 * xs + rng.uniform(0, 2 * np.pi))[..., None]
        img = base * (1.0 - 0.08 * depth) + 8 * ripple + 7 * grain
        img -= 40 * (rng.random((height, size, 1)) < 0.03)
    elif ground == "road":
        base = _jitter(rng, (95, 95, 100), 10)
        img = base + 9 * grain
        img[:2] = (160, 160, 155)  # kerb at the far side
        centre = height // 2
        offset = rng.integers(0, 16)
        dashes = ((xs[centre : centre + 2] + offset) % 16) < 9
        img[centre : centre + 2][dashes] = (235, 235, 220)
        edge = int(height * 0.88)
        img[edge : edge + 2] = (230, 200, 50)
    else:  # snow
        base = _jitter(rng, (236, 240, 250), 5)
        drift = np.sin(0.15 * xs + 0.4 * ys + rng.uniform(0, 2 * np.pi))[..., None]
        img = base + 6 * drift * np.array([1.0, 0.6, -0.2], dtype=np.float32) + 4 * grain
        img -= 25 * (rng.random((height, size, 1)) < 0.01) * np.array([1, 0.5, 0], np.float32)
    return img


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {  # (singular, plural), main word first
    "boat": (("boat", "boats"), ("ship", "ships"), ("sailboat", "sailboats")),
    "fish": (("fish", "fish"), ("fish", "fishes")),
    "bird": (("bird", "birds"),),
    "plane": (("plane", "planes"), ("airplane", "airplanes"), ("jet", "jets")),
    "tree": (("tree", "trees"),),
    "house": (("house", "houses"), ("home", "homes"), ("cabin", "cabins")),
    "car": (("car", "cars"), ("automobile", "automobiles")),
    "dog": (("dog", "dogs"), ("puppy", "puppies")),
    "ball": (("ball", "balls"),),
    "person": (("person", "people"), ("man", "men"), ("woman", "women"), ("child", "children")),
}
SYNONYMS: dict[str, tuple[str, ...]] = {
    category: tuple(dict.fromkeys(word for pair in pairs for word in pair))
    for category, pairs in _NOUNS.items()
}
_WORD_TO_CATEGORY = {word: category for category, words in SYNONYMS.items() for word in words}
_TOKEN = re.compile(r"[a-z]+")

_SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
_NUMBERS = {2: "two", 3: "three"}
_GROUND_ON = {  # where a ground object is
    "grass": ("on the grass", "in a field", "in a grassy field", "on a lawn", "in a meadow"),
    "water": ("on the water", "on a lake", "on the sea", "on a river"),
    "sand": ("on the sand", "on the beach", "on a sandy beach", "in the desert"),
    "road": ("on the road", "on a street", "on the street"),
    "snow": ("in the snow", "on the snow", "in a snowy field"),
}
_GROUND_NP = {  # the ground as a noun phrase
    "grass": ("the grass", "a field", "a grassy field", "a meadow"),
    "water": ("the water", "a lake", "the sea", "a river"),
    "sand": ("the sand", "a beach", "a sandy beach", "the desert"),
    "road": ("the road", "a street"),
    "snow": ("the snow", "a snowy field", "a snowy landscape"),
}
_IN_WATER = ("in the water", "in a lake", "in the sea", "in a river")
_SKY = ("in the sky", "in the blue sky", "through the sky", "across the sky")
_VERBS = {  # participles; "" = no verb
    "boat": ("floating", "sailing", "drifting", ""),
    "fish": ("swimming",),
    "bird": ("flying", "soaring", "gliding"),
    "plane": ("flying", "soaring", "gliding"),
    "tree": ("standing", "growing", ""),
    "house": ("standing", "", ""),
    "car": ("driving", "parked", "moving", ""),
    "dog": ("running", "playing", "standing", "sitting", ""),
    "ball": ("lying", ""),
    "person": ("walking", "standing", "running", ""),
}
_STRANDED = ("lying", "resting", "stranded", "sitting", "")  # boats out of the water
_OFFROAD = ("parked", "standing", "driving", "")  # cars away from roads
_FRAMES = ("a picture of", "an image of", "a photo of", "a view of")


@dataclass
class _Group:
    """All objects of one category in a scene (captions name them together)."""

    category: str
    objects: list[_Object]

    @property
    def area(self) -> int:
        return sum(int(obj.mask.sum()) for obj in self.objects)

    @property
    def in_sky(self) -> bool:
        return self.category in SKY_CATEGORIES


@dataclass
class _Scene:
    ground: str
    horizon: int
    size: int
    objects: list[_Object]

    def groups(self) -> list[_Group]:
        by_category: dict[str, list[_Object]] = {}
        for obj in self.objects:
            by_category.setdefault(obj.category, []).append(obj)
        return [_Group(category, objects) for category, objects in by_category.items()]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(rng: np.random.Generator, group: _Group) -> str:
    """'a small red boat', 'a man in a blue shirt', 'two dogs', ..."""
    pairs = _NOUNS[group.category]
    singular, plural = pairs[0] if rng.random() < 0.6 else _pick(rng, pairs)
    colours = {obj.colour for obj in group.objects}
    colour = next(iter(colours)) if len(colours) == 1 and rng.random() < 0.55 else None
    person = group.category == "person"
    words = []
    if len(group.objects) == 1:
        if rng.random() < 0.3:
            words.append(_pick(rng, _SIZE_WORDS[group.objects[0].size]))
        if colour and not person:
            words.append(colour)
        phrase = _with_article(" ".join([*words, singular]))
    else:
        if colour and not person:
            words.append(colour)
        phrase = " ".join([_NUMBERS[len(group.objects)], *words, plural])
    if colour and person:
        phrase += _pick(rng, (f" in {colour}", f" in a {colour} shirt", f" wearing {colour}"))
    return phrase


def _location(rng: np.random.Generator, group: _Group, ground: str, with_ground: bool) -> str:
    """What the group does and where: 'floating on the water', 'flying in the sky', ..."""
    category = group.category
    if category in SKY_CATEGORIES:
        phrase = f"{_pick(rng, _VERBS[category])} {_pick(rng, _SKY)}"
        if with_ground:
            phrase += f" {_pick(rng, ('above', 'over'))} {_pick(rng, _GROUND_NP[ground])}"
        return phrase
    if category == "fish":
        return f"swimming {_pick(rng, _IN_WATER)}" if with_ground else "swimming"
    verbs = _VERBS[category]
    if category == "boat" and ground != "water":
        verbs = _STRANDED
    elif category == "car" and ground != "road":
        verbs = _OFFROAD
    verb = _pick(rng, verbs)
    where = _pick(rng, _GROUND_ON[ground]) if with_ground else ""
    return " ".join(part for part in (verb, where) if part)


def _relation(a: _Object, b: _Object) -> tuple[str, ...]:
    """Spatial phrases true of `a` relative to `b` (a is a sky object or both are not)."""
    if a.in_sky and not b.in_sky:
        return ("above", "over")
    ax0, _, ax1, ay1 = a.box
    bx0, _, bx1, by1 = b.box
    apart = ax1 < bx0 or bx1 < ax0
    if {a.category, b.category} == {"fish", "boat"} and not apart:
        fish, boat = (a, b) if a.category == "fish" else (b, a)
        if fish.box[3] > boat.box[3]:  # the fish swims lower in the image than the hull
            return ("under", "below") if a is fish else ("above", "over")
    options = ["next to", "near", "beside"] if apart else ["near"]
    if ax1 < bx0:
        options.append("to the left of")
    elif ax0 > bx1:
        options.append("to the right of")
    elif ay1 > by1 + 6:
        options.append("in front of")
    elif by1 > ay1 + 6:
        options.append("behind")
    return tuple(options)


def _is_close(a: _Object, b: _Object, size: int) -> bool:
    gap = max(a.box[0] - b.box[2], b.box[0] - a.box[2], 0)
    return gap < 0.15 * size and abs(a.base - b.base) < 0.12 * size


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _pair_caption(rng: np.random.Generator, first: _Group, second: _Group, scene: _Scene) -> str:
    """A caption naming two groups: an interaction, a spatial relation or 'and'."""
    where = _pick(rng, _GROUND_ON[scene.ground]) if rng.random() < 0.6 else ""
    if first.category == "ball" or (second.in_sky and not first.in_sky):
        first, second = second, first
    a, b = first.objects[0], second.objects[0]
    single = len(first.objects) == len(second.objects) == 1
    kinds = {first.category, second.category}
    np_a, np_b = _noun_phrase(rng, first), _noun_phrase(rng, second)
    if single and "ball" in kinds and kinds & {"dog", "person"} and _is_close(a, b, scene.size):
        verbs = ("playing with", "chasing", "with") if a.category == "dog" else ("playing with",)
        return _join(np_a, _pick(rng, verbs), np_b, where)
    if single and kinds == {"person", "dog"} and rng.random() < 0.5:
        person, dog = (np_a, np_b) if a.category == "person" else (np_b, np_a)
        return _join(person, _pick(rng, ("with", "walking")), dog, where)
    both_sky = first.in_sky and second.in_sky
    if single and rng.random() < 0.6:
        doing = _location(rng, first, scene.ground, with_ground=False)
        return _join(np_a, doing, _pick(rng, _relation(a, b)), np_b, "" if both_sky else where)
    if both_sky:
        return f"{np_a} and {np_b} {_pick(rng, ('flying', 'soaring'))} {_pick(rng, _SKY)}"
    if first.in_sky:
        return _join(np_a, "flying above", np_b, where)
    lead = _pick(rng, ("", "there is", "a picture of")) if where else ""
    if lead == "there is" and len(first.objects) > 1:
        lead = "there are"
    return _join(lead, np_a, "and", np_b, where)


def _single_caption(rng: np.random.Generator, group: _Group, scene: _Scene) -> str:
    """A caption naming one group, with or without the ground."""
    with_ground = rng.random() < 0.8
    template = int(rng.integers(4))
    if template == 0 and not group.in_sky and with_ground:
        return f"{_pick(rng, _GROUND_NP[scene.ground])} with {_noun_phrase(rng, group)}"
    phrase = f"{_noun_phrase(rng, group)} {_location(rng, group, scene.ground, with_ground)}"
    if template == 1:
        return f"there {'is' if len(group.objects) == 1 else 'are'} {phrase}"
    if template == 2:
        return f"{_pick(rng, _FRAMES)} {phrase}"
    return phrase


def _triple_caption(rng: np.random.Generator, groups: list[_Group], scene: _Scene) -> str:
    first, second, third = (_noun_phrase(rng, group) for group in groups)
    return f"{first}, {second} and {third} {_pick(rng, _GROUND_ON[scene.ground])}"


def _captions(rng: np.random.Generator, scene: _Scene, count: int = 5) -> list[str]:
    """`count` distinct captions; bigger objects are named more often, as in COCO."""
    groups = scene.groups()
    weights = np.sqrt([group.area for group in groups]).astype(np.float64)
    captions: list[str] = []
    for _ in range(20 * count):
        keys = rng.random(len(groups)) ** (1 / weights)  # weighted order without replacement
        order = [groups[i] for i in np.argsort(-keys)]
        named = 1 + (rng.random() < 0.5) + (rng.random() < 0.15)
        grounded = all(not group.in_sky for group in order[:3])
        if named >= 3 and len(order) >= 3 and grounded:
            caption = _triple_caption(rng, order[:3], scene)
        elif named >= 2 and len(order) >= 2:
            caption = _pair_caption(rng, order[0], order[1], scene)
        else:
            caption = _single_caption(rng, order[0], scene)
        caption = " ".join(caption.split())
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            return captions
    while len(captions) < count:  # a scene with little to say: repeat captions
        captions.append(captions[len(captions) % len(captions)])
    return captions


def object_words(caption: str) -> set[str]:
    """The categories a caption names through any of their SYNONYMS (chapter 10's CHAIR)."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    tokens = _TOKEN.findall(caption.lower())
    return {_WORD_TO_CATEGORY[token] for token in tokens if token in _WORD_TO_CATEGORY}


# ---------------------------------------------------------------------------------------------
# Rendering and writing
# ---------------------------------------------------------------------------------------------


def _draw_scene(config: ShapeWorldConfig, split: str, index: int) -> tuple[np.ndarray, _Scene]:
    """Image `index` of `split`: pixels [S, S, 3] uint8 and its scene (objects far to near)."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    size = config.image_size
    ground = GROUNDS[int(rng.integers(len(GROUNDS)))]
    horizon = round(size * rng.uniform(0.36, 0.52))
    categories = _sample_categories(rng, ground, config, config.split_biases(split))
    objects = _visible(_place_objects(rng, categories, horizon, size), size)
    background = np.concatenate(
        [_sky(rng, horizon, size), _ground(rng, ground, size - horizon, size)]
    )  # [S, S, 3] float
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        _render_object(draw, obj, _roles(obj))
    pixels = np.asarray(canvas, dtype=np.float32) * rng.uniform(0.92, 1.08)
    pixels += 3 * rng.standard_normal((size, size, 1), dtype=np.float32)
    image = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return image, _Scene(ground, horizon, size, objects)


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
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
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


# ---------------------------------------------------------------------------------------------
# Bias statistics
# ---------------------------------------------------------------------------------------------


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


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m captionlib.data.shapeworld [--seed N]`: generate and print the folder."""
    parser = argparse.ArgumentParser(description="Generate the ShapeWorld data set.")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    print(ensure_shapeworld(ShapeWorldConfig(seed=args.seed)))


if __name__ == "__main__":
    main()
