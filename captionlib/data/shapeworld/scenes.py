"""ShapeWorld scenes (chapter 1): which objects, with which attributes, where.

A scene is a sky above one ground type (grass, water, sand, road or snow) with one to three
objects from ten drawable categories, each with a colour and a size. The bias rules of
`config` add boats and cars; random fillers, weighted per ground, add the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from captionlib.data.shapeworld.config import (
    _GROUND_RULES,
    SKY_CATEGORIES,
    SceneBiases,
    ShapeWorldConfig,
)

# Random filler objects per ground, with relative weights (boats and cars come from the rules).
_FILLERS: dict[str, dict[str, float]] = {
    "grass": {"tree": 2, "house": 1.5, "dog": 2, "person": 2, "ball": 0.5, "bird": 1, "plane": 1},
    "water": {"fish": 3, "bird": 2, "plane": 1.5},
    "sand": {"person": 2, "dog": 2, "ball": 0.5, "tree": 1, "bird": 1, "plane": 1},
    "road": {"person": 1.5, "dog": 1.5, "house": 1.5, "tree": 1.5, "bird": 1, "plane": 1},
    "snow": {"tree": 2, "house": 1.5, "person": 2, "dog": 2, "bird": 1, "plane": 1},
}


# ---------------------------------------------------------------------------------------------
# Objects: attributes and sizes
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


_SKIN_TONES = ((235, 190, 150), (200, 150, 110), (140, 95, 60))


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
