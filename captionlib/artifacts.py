"""A content-addressed artifact cache under data/ with atomic writes (chapter 1).

An artifact is a folder named `<kind>-<hash of its config>`. It is built in a temporary
sibling folder and renamed into place only when the builder returns, so an interrupted run
never leaves a half-written artifact behind; the next run simply builds it again.

Builders of the same artifact take turns: a second process asking for an artifact that
another one is building waits on its lock file (`<kind>-<hash>.lock`, an OS file lock that
dies with its holder) and then loads what the first one built. Temporary folders left by a
killed builder (whose lock nobody holds any more) are removed by the next call.

::

    path = cached("encoder", config, build=lambda folder: train_and_save(folder))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: builds are not serialised
    fcntl = None  # type: ignore[assignment]

from captionlib.utils import data_dir

CONFIG_FILE = "config.json"
BUILD_FILE = "build.json"  # when the build started, its wall-clock and CPU seconds


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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


@contextlib.contextmanager
def _locked(lock_path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive OS lock on `lock_path` for the block; yields False when
    `blocking=False` and another process holds it."""
    with open(lock_path, "a+") as handle:
        if fcntl is None:
            yield True
            return
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove temporary build folders under `root` whose builder is gone (nobody holds the
    artifact's lock); return what was removed."""
    removed = []
    for folder in sorted(Path(root).glob(".*-*.*")):
        name = folder.name[1:].rsplit(".", 1)[0]  # ".<kind>-<hash>.<random>"
        lock = folder.parent / f"{name}.lock"
        if not folder.is_dir() or not lock.is_file():
            continue
        with _locked(lock, blocking=False) as free:
            if free:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def is_complete(path: Path) -> bool:
    """Whether the artifact folder `path` has been published (its config file is there)."""
    return (Path(path) / CONFIG_FILE).is_file()


def cached(
    kind: str,
    config: Mapping[str, Any],
    build: Callable[[Path], None],
    root: Path | None = None,
) -> Path:
    """Return the artifact folder for (kind, config), calling `build(tmp_folder)` if absent.

    `build` writes its files into the folder it is given. The folder is renamed into place
    only after `build` returns, with `config.json` (the key) and `build.json` (when the
    build started, its wall-clock and CPU seconds, nested builds included); if it raises,
    the temporary folder is removed. While one process builds, others asking for the same
    artifact wait and then load it.
    """
    target = artifact_path(kind, config, root)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target.parent)
    with _locked(target.parent / f"{target.name}.lock"):
        if is_complete(target):  # built by the process we waited for
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; artifacts are ordinary shared files
        try:
            started, cpu = time.time(), _cpu_seconds()
            build(tmp)
            timing = {
                "started": started,
                "seconds": time.time() - started,
                "cpu_seconds": _cpu_seconds() - cpu,
            }
            (tmp / BUILD_FILE).write_text(json.dumps(timing))
            (tmp / CONFIG_FILE).write_text(json.dumps(dict(config), sort_keys=True, indent=2))
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
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
