"""Reproducibility and device helpers (chapter 1).

`seed_everything` makes a notebook's numbers repeatable; `select_device` picks CUDA when it
is there and the CPU otherwise; `data_dir` says where generated data and caches live.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

_REPO_ROOT = Path(__file__).resolve().parent.parent


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a seeded torch Generator."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)


def select_device(preferred: str | None = None) -> torch.device:
    """Return `preferred` if given, else CUDA when available, else the CPU."""
    if preferred is not None:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {preferred!r} requested but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def data_dir() -> Path:
    """The folder for generated data and caches: $CAPTIONLIB_DATA or `<repo>/data`."""
    root = Path(os.environ.get("CAPTIONLIB_DATA", _REPO_ROOT / "data"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` PyTorch intra-op threads, then restore the setting.

    Step-by-step decoding works on tiny tensors (one image's beams at a time), where the
    thread pool costs more than it gains; `captionlib.generate` decodes with one thread.
    """
    if count < 1:
        raise ValueError(f"thread count must be >= 1, got {count}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
