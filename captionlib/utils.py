"""Reproducibility and device helpers (chapter 1).

`seed_everything` makes a notebook's numbers repeatable; `select_device` picks CUDA when it
is there and the CPU otherwise; `data_dir` says where generated data and caches live.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

_REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


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


def default_data_dir() -> Path:
    """Where data goes without $CAPTIONLIB_DATA: `<repo>/data` in a checkout of the book's
    repository (an editable install), else a user cache folder
    ($XDG_CACHE_HOME/captionlib, by default ~/.cache/captionlib) — never inside
    site-packages, where a pip-installed captionlib (as in Colab) lives."""
    if (_REPO_ROOT / "pyproject.toml").is_file() and (_REPO_ROOT / "_toc.yml").is_file():
        return _REPO_ROOT / "data"
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache) if cache else Path.home() / ".cache") / "captionlib"


def data_dir() -> Path:
    """The folder for generated data and caches: $CAPTIONLIB_DATA, else `default_data_dir()`
    (chapter 1). An empty $CAPTIONLIB_DATA is an error, not the current directory."""
    value = os.environ.get("CAPTIONLIB_DATA")
    if value is None:
        root = default_data_dir()
    elif not value.strip():
        raise ValueError(
            "CAPTIONLIB_DATA is set but empty: unset it to use the default "
            f"({default_data_dir()}) or set it to a folder"
        )
    else:
        root = Path(value).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"CAPTIONLIB_DATA={root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def die_with_parent(worker_id: int | None = None) -> None:
    """Make the calling process get SIGKILL when its parent dies (Linux; elsewhere nothing).

    The `worker_init_fn` of the library's DataLoaders and the initializer of ShapeWorld's
    process pool: a killed run leaves no worker processes behind (chapter 12).
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


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
