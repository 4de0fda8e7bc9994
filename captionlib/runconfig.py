"""Run configurations: one YAML file describes data, encoder, captioner and budgets (chapter 12).

::

    config = load_run_config("configs/coco_adaptive.yaml", overrides=["training.epochs=1"])

The file has the sections below; every key is optional except `name`, and a key that is
not known, or a value of the wrong type, raises ValueError naming it (e.g.
"configs/x.yaml: training.lr must be a number, got 'fast'").

::

    name, output (a folder; relative paths are under captionlib.data_dir()), device
    (auto | cpu | cuda | cuda:N); seeds are per step (training.seed, finetune.seed, ...)
    data:       dataset (shapeworld | coco2014 | coco2017 | flickr30k), root (source folder
                of a real data set), shapeworld (ShapeWorldConfig fields), min_word_count,
                max_caption_length, num_workers
    encoder:    kind (small_vgg | vgg16), image_size, pretrained, channels, convs_per_block,
                pretraining (EncoderTrainConfig fields), feature_dtype, autocast, batch_size
    captioner:  kind (adaptive | multihead), sizes (the captioner's constructor arguments)
    training:   CaptionTrainConfig fields (epochs, batch_size, lr, betas, grad_clip, …)
    evaluation: split, beam_size, max_length, metrics, tokenizer
    explain:    split, images, method, beam_size, max_length
    finetune:   FinetuneConfig fields (method, epochs, lr, encoder_lr, …)
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from captionlib.data.prepare import DATASETS, MIN_WORD_COUNTS
from captionlib.finetune import FinetuneConfig
from captionlib.train import CaptionTrainConfig, EncoderTrainConfig
from captionlib.utils import data_dir

PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"  # package data
ENCODERS = ("small_vgg", "vgg16")
CAPTIONER_KINDS = ("adaptive", "multihead")
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class DataSection:
    """Which data set and how its captions become token ids."""

    dataset: str = "shapeworld"
    root: str | None = None
    shapeworld: dict[str, Any] = field(default_factory=dict)
    min_word_count: int | None = None
    max_caption_length: int = 30
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.max_caption_length < 1:
            raise ValueError(f"max_caption_length must be >= 1, got {self.max_caption_length}")

    def word_threshold(self) -> int:
        """min_word_count, or the data set's default (4 COCO, 3 Flickr30K and ShapeWorld)."""
        if self.min_word_count is not None:
            return self.min_word_count
        return MIN_WORD_COUNTS.get(self.dataset, 3)


@dataclass(frozen=True)
class EncoderSection:
    """The frozen CNN: the book's SmallVGG or torchvision's VGG16 (features[:-1])."""

    kind: str = "small_vgg"
    image_size: int = 112
    pretrained: bool = True
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    convs_per_block: int = 1
    pretraining: dict[str, Any] = field(default_factory=dict)
    feature_dtype: str = "float16"
    autocast: bool = False
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("image_size", "batch_size", "convs_per_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class CaptionerSection:
    """Captioner A ("adaptive") or B ("multihead") and its sizes."""

    kind: str = "adaptive"
    sizes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSection:
    """Test decoding (beam 3 in the paper) and caption metrics."""

    split: str = "test"
    beam_size: int = 3
    max_length: int = 16
    metrics: str | list[str] = "default"
    tokenizer: str = "auto"


@dataclass(frozen=True)
class ExplainSection:
    """Which images get every word of their own caption explained, and how."""

    split: str = "test"
    images: int = 4
    method: str = "lrp"
    beam_size: int = 3
    max_length: int = 16


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class RunConfig:
    """A whole run; see the module docstring for the sections."""

    name: str
    output: str = ""
    device: str = "auto"
    data: DataSection = field(default_factory=DataSection)
    encoder: EncoderSection = field(default_factory=EncoderSection)
    captioner: CaptionerSection = field(default_factory=CaptionerSection)
    training: CaptionTrainConfig = field(default_factory=CaptionTrainConfig)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    explain: ExplainSection = field(default_factory=ExplainSection)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @property
    def run_dir(self) -> Path:
        """Where the run writes: `output` (default runs/<name>) under data_dir() if relative."""
        folder = Path(self.output or f"runs/{self.name}")
        return folder if folder.is_absolute() else data_dir() / folder

    @property
    def encoder_pretraining(self) -> EncoderTrainConfig:
        return EncoderTrainConfig(**self.encoder.pretraining)

    def device_name(self) -> str | None:
        """None for "auto" (CUDA when available), else the device string."""
        return None if self.device == "auto" else self.device


_SECTIONS: dict[str, type] = {
    "data": DataSection,
    "encoder": EncoderSection,
    "captioner": CaptionerSection,
    "training": CaptionTrainConfig,
    "evaluation": EvaluationSection,
    "explain": ExplainSection,
    "finetune": FinetuneConfig,
}


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return str(hint)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """value checked against the type hint (lists become tuples where a tuple is expected)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _convert(value, arg, where)
            except ValueError:
                continue
    elif hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value):
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        if isinstance(value, list | tuple):
            args = typing.get_args(hint)
            item = args[0] if args else Any
            items = [
                value_ if item is Any else _convert(value_, item, f"{where}[{i}]")
                for i, value_ in enumerate(value)
            ]
            if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:
                if len(items) != len(args):
                    raise ValueError(f"{where} must have {len(args)} entries, got {len(items)}")
                return tuple(items)
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif hint is Any:
        return value
    raise ValueError(f"{where} must be {_describe(hint)}, got {value!r}")


def _build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]} is not a known setting (known: {sorted(known)})")
    converted = {
        key: _convert(value, hints[key], f"{where}.{key}") for key, value in values.items()
    }
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from error


def _check_choice(value: str, choices: Sequence[str], where: str) -> None:
    if value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")


def parse_run_config(payload: Any, source: str = "config") -> RunConfig:
    """A RunConfig from a parsed YAML mapping; `source` prefixes error messages."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"{source}: the top level must be a mapping of sections")
    top = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(payload) - top)
    if unknown:
        raise ValueError(f"{source}: {unknown[0]} is not a known section (known: {sorted(top)})")
    if not isinstance(payload.get("name"), str) or not payload["name"]:
        raise ValueError(f"{source}: name must be a non-empty string")
    if not RUN_NAME.fullmatch(payload["name"]):
        raise ValueError(
            f"{source}: name {payload['name']!r} must be letters, digits, '.', '_' or '-' "
            "(no '/', no '..'): it names a folder under the data folder"
        )
    output = payload.get("output")
    relative = isinstance(output, str) and not Path(output).is_absolute()
    if relative and ".." in Path(output).parts:
        raise ValueError(
            f"{source}: output {output!r} leaves the data folder: give a path without "
            "'..' (relative to the data folder) or an absolute path"
        )
    values: dict[str, Any] = {}
    for key in ("name", "output", "device"):
        if key in payload:
            hint = typing.get_type_hints(RunConfig)[key]
            values[key] = _convert(payload[key], hint, f"{source}: {key}")
    for key, cls in _SECTIONS.items():
        values[key] = _build(cls, payload.get(key), f"{source}: {key}")
    config = RunConfig(**values)
    _check_choice(config.data.dataset, ("shapeworld", *DATASETS), f"{source}: data.dataset")
    _check_choice(config.encoder.kind, ENCODERS, f"{source}: encoder.kind")
    _check_choice(config.captioner.kind, CAPTIONER_KINDS, f"{source}: captioner.kind")
    _check_choice(
        config.encoder.feature_dtype, ("float16", "float32"), f"{source}: encoder.feature_dtype"
    )
    if config.data.dataset != "shapeworld" and not config.data.root:
        raise ValueError(f"{source}: data.root must name the {config.data.dataset} folder")
    if config.device != "auto" and config.device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(
            f"{source}: device must be auto, cpu, cuda or cuda:N, got {config.device!r}"
        )
    return config


def _set(payload: dict[str, Any], assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"override {assignment!r} must look like section.key=value")
    *parents, leaf = key.split(".")
    node = payload
    for part in parents:
        if node.get(part) is None:  # absent, or left empty in the YAML ("training:")
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"override {assignment!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(text)


def resolve_config_path(path: str | Path) -> Path:
    """`path`, or the packaged configs/<path>.yaml for a bare name like "coco_adaptive"
    (the configs ship inside captionlib, so a pip-installed copy finds them too)."""
    path = Path(path)
    if path.is_file():
        return path
    named = PACKAGED_CONFIGS / f"{path.stem}.yaml"
    if path.parent == Path(".") and named.is_file():
        return named
    raise FileNotFoundError(f"config file not found: {path}")


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config; `overrides` like "training.epochs=1" replace single keys."""
    path = resolve_config_path(path)
    try:
        payload = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    payload = dict(payload or {})
    for assignment in overrides:
        _set(payload, assignment)
    return parse_run_config(payload, str(path))
