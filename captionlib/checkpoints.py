"""Checkpoints: state_dicts plus the config and vocabulary that made them (chapter 3).

A checkpoint is one file written atomically with `torch.save` and read back with
`torch.load(weights_only=True)`: only tensors and plain Python containers, never pickled code.
Loading refuses a checkpoint whose vocabulary or model config does not match what the caller
expects, with an error that names the field.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from captionlib.artifacts import atomic_write_bytes

FORMAT_VERSION = 1


def save_checkpoint(
    path: Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    vocabulary: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write weights, their model config, the vocabulary (id order) and extra metadata."""
    payload = {
        "format_version": FORMAT_VERSION,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in state_dict.items()},
        "config": dict(config),
        "vocabulary": list(vocabulary) if vocabulary is not None else None,
        "extra": dict(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(
    path: Path,
    expected_config: Mapping[str, Any] | None = None,
    expected_vocabulary: list[str] | None = None,
) -> dict[str, Any]:
    """Read a checkpoint safely; refuse a mismatched config or vocabulary.

    Returns the dict with keys state_dict, config, vocabulary, extra.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"checkpoint {path} cannot be read: {error}") from error
    for field in ("format_version", "state_dict", "config", "vocabulary", "extra"):
        if not isinstance(payload, dict) or field not in payload:
            raise ValueError(f"checkpoint {path} has no field {field!r}")
    if payload["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path}: format_version {payload['format_version']} "
            f"(this captionlib reads {FORMAT_VERSION})"
        )
    if expected_config is not None:
        stored = payload["config"]
        for key in sorted(set(stored) | set(expected_config)):
            if stored.get(key) != expected_config.get(key):
                raise ValueError(
                    f"checkpoint {path}: config field {key!r} is {stored.get(key)!r}, "
                    f"expected {expected_config.get(key)!r}"
                )
    if expected_vocabulary is not None:
        stored_vocabulary = payload["vocabulary"]
        if stored_vocabulary is None:
            raise ValueError(f"checkpoint {path} has no vocabulary to compare")
        if list(stored_vocabulary) != list(expected_vocabulary):
            size = (len(stored_vocabulary), len(expected_vocabulary))
            first = next(
                (
                    i
                    for i, (a, b) in enumerate(
                        zip(stored_vocabulary, expected_vocabulary, strict=False)
                    )
                    if a != b
                ),
                min(size),
            )
            raise ValueError(
                f"checkpoint {path}: vocabulary does not match (sizes {size[0]} vs {size[1]}, "
                f"first difference at id {first})"
            )
    return payload
