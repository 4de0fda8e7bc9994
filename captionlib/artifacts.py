"""A content-addressed artifact cache under data/ with atomic writes (chapter 1).

An artifact is a folder named `<kind>-<hash of its config>`. It is built in a temporary
sibling folder and renamed into place only when the builder returns, so an interrupted run
never leaves a half-written artifact behind; the next run simply builds it again.

    path = cached("encoder", config, build=lambda folder: train_and_save(folder))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from captionlib.utils import data_dir

CONFIG_FILE = "config.json"


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """A stable hash of a JSON-serialisable config (key order does not matter)."""
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    except TypeError as error:
        raise TypeError(f"artifact config is not JSON-serialisable: {error}") from error
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def artifact_path(kind: str, config: Mapping[str, Any], root: Path | None = None) -> Path:
    """Where the artifact of `kind` built from `config` lives (it may not exist yet)."""
    if not kind or "/" in kind or kind.startswith("."):
        raise ValueError(f"artifact kind must be a plain name, got {kind!r}")
    root = Path(root) if root is not None else data_dir() / "cache"
    return root / f"{kind}-{config_hash(config)}"


def cached(
    kind: str,
    config: Mapping[str, Any],
    build: Callable[[Path], None],
    root: Path | None = None,
) -> Path:
    """Return the artifact folder for (kind, config), calling `build(tmp_folder)` if absent.

    `build` writes its files into the folder it is given. The folder is renamed into place
    only after `build` returns; if it raises, the temporary folder is removed.
    """
    target = artifact_path(kind, config, root)
    if (target / CONFIG_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; artifacts are ordinary shared files
    try:
        build(tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(dict(config), sort_keys=True, indent=2))
        if (target / CONFIG_FILE).is_file():  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        if target.exists():  # a stale folder without its config file: never complete
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
