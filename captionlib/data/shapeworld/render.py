"""Drawing ShapeWorld scenes (chapter 1): objects, their visible masks, backgrounds, images.

Objects are drawn from primitives in unit coordinates of their frame, once in colour and
once as a mask; painted far to near, each keeps the pixels nothing nearer covers. Image ``i``
of a split is drawn from its own NumPy generator seeded with ``(seed, split, i)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from captionlib.data.shapeworld.config import GROUNDS, SPLITS, ShapeWorldConfig
from captionlib.data.shapeworld.scenes import (
    COLOURS,
    RGB,
    _Object,
    _place_objects,
    _sample_categories,
    _Scene,
)

# ---------------------------------------------------------------------------------------------
# Objects: drawings in unit coordinates and masks
# ---------------------------------------------------------------------------------------------


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


_MIN_VISIBLE_FRACTION = 0.35  # objects hidden more than this are dropped from the scene


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
# Occlusion: which pixels of each object stay visible
# ---------------------------------------------------------------------------------------------


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
# Scenes as images
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
