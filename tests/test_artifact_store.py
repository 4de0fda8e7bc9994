"""The artifact store under concurrency and faults: a second builder waits and loads the
first one's artifact; a killed builder's temporary folder is removed by the next call."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from captionlib.artifacts import BUILD_FILE, artifact_path, cached, remove_stale_builds

BUILDER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from captionlib.artifacts import cached

    root, log, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def build(folder):
        with log.open("a") as handle:
            handle.write(f"build {os.getpid()}\\n")
        (folder / "part.txt").write_text("half")
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(2.0)
        (folder / "value.txt").write_text(str(os.getpid()))

    path = cached("thing", {"x": 1}, build, root=root)
    with log.open("a") as handle:
        handle.write(f"loaded {(path / 'value.txt').read_text()}\\n")
    """
)


def _start(root: Path, log: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(root), str(log), mode])


def test_a_second_process_waits_for_the_first_build_and_loads_it(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    first = _start(tmp_path / "store", log, "build")
    deadline = time.time() + 60
    while not (log.is_file() and "build" in log.read_text()):  # the first one is building
        assert time.time() < deadline, "the first builder never started"
        time.sleep(0.05)
    second = _start(tmp_path / "store", log, "build")
    assert first.wait(60) == 0 and second.wait(60) == 0
    lines = log.read_text().splitlines()
    builds = [line for line in lines if line.startswith("build")]
    loaded = {line.split()[1] for line in lines if line.startswith("loaded")}
    assert len(builds) == 1, lines  # the second process did not build again
    assert loaded == {builds[0].split()[1]}  # both loaded the first one's artifact


def test_a_killed_build_leaves_no_garbage_after_the_next_run(tmp_path: Path) -> None:
    store, log = tmp_path / "store", tmp_path / "log.txt"
    killed = _start(store, log, "kill")
    assert killed.wait(60) == -9
    stale = [p for p in store.iterdir() if p.is_dir()]
    assert len(stale) == 1 and stale[0].name.startswith(".thing-")  # the dead build's folder

    def build(folder: Path) -> None:
        (folder / "value.txt").write_text("rebuilt")

    path = cached("thing", {"x": 1}, build, root=store)
    assert (path / "value.txt").read_text() == "rebuilt"
    assert [p for p in store.iterdir() if p.is_dir()] == [path]
    assert path == artifact_path("thing", {"x": 1}, store)


def test_stale_sweep_keeps_builds_in_progress(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    running = _start(tmp_path, log, "build")
    deadline = time.time() + 60
    while not (log.is_file() and "build" in log.read_text()):
        assert time.time() < deadline
        time.sleep(0.05)
    assert remove_stale_builds(tmp_path) == []  # its lock is held: not stale
    assert running.wait(60) == 0


def test_each_artifact_records_its_build_time(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:  # 0.2 s of CPU work
            pass
        time.sleep(0.3)  # and 0.3 s of waiting
        (folder / "value.txt").write_text("1")

    before = time.time()
    folder = cached("timed", {"n": 1}, build, root=tmp_path)
    timing = json.loads((folder / BUILD_FILE).read_text())
    assert before <= timing["started"] <= time.time()
    assert timing["seconds"] >= 0.5 and 0.2 <= timing["cpu_seconds"] < timing["seconds"]
