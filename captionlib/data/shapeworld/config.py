"""What determines a ShapeWorld folder (chapter 1): categories, grounds, splits and biases.

ShapeWorldConfig holds every setting of the generator; SceneBiases the co-occurrence
probabilities of one distribution. The training split's biases are shortcuts a captioner can
learn (boats on water, cars on roads, dogs with balls); the ``shifted`` split's
SHIFTED_BIASES break them (chapter 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

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
