"""Where the book's build time goes: per step (artifact kind) and per chapter.

Every artifact of the store records when its build started and its wall-clock and CPU
seconds (`build.json`, written by `captionlib.artifacts.cached`); the book's notebook cache
(.jupyter_cache) records each chapter's execution time. For a clean build::

    rm -rf data/cache .jupyter_cache _build
    /usr/bin/time -v make book
    .venv/bin/python benchmarks/build_time.py

"own s" is a step's wall-clock time without the artifacts it built inside itself (a
captioner's build includes its features' unless they existed), so the "own s" column adds
up to the time spent in builds.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from captionlib.artifacts import BUILD_FILE, CONFIG_FILE
from captionlib.utils import data_dir
from captionlib.viz.tables import Table

REPO = Path(__file__).resolve().parent.parent


def builds(cache: Path) -> list[dict]:
    """One record per published artifact that has a build.json: kind, start, seconds, cpu."""
    records = []
    for folder in sorted(cache.iterdir()):
        timing = folder / BUILD_FILE
        if folder.name.startswith(".") or not (folder / CONFIG_FILE).is_file():
            continue
        if timing.is_file():
            payload = json.loads(timing.read_text())
            kind = folder.name.rsplit("-", 1)[0]
            records.append({"kind": kind, "name": folder.name, **payload})
    return records


def own_seconds(records: list[dict]) -> dict[str, float]:
    """Each build's seconds minus those of the builds that ran inside it (nested
    intervals; the book runs its notebooks one after the other)."""
    own = {}
    for record in records:
        start, end = record["started"], record["started"] + record["seconds"]
        inner = sorted(
            (other["started"], other["started"] + other["seconds"])
            for other in records
            if other is not record
            and start <= other["started"]
            and other["started"] + other["seconds"] <= end
        )
        covered, reach = 0.0, start
        for begin, finish in inner:  # union of the nested intervals
            if finish > reach:
                covered += finish - max(begin, reach)
                reach = finish
        own[record["name"]] = record["seconds"] - covered
    return own


def chapter_seconds(cache: Path) -> dict[str, float]:
    """Execution seconds of each notebook from the jupyter-cache database."""
    from jupyter_cache import get_cache

    times = {}
    for record in get_cache(cache).list_cache_records():
        seconds = record.data.get("execution_seconds")
        if seconds is not None:
            times[Path(record.uri).stem] = float(seconds)
    return dict(sorted(times.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: data_dir())")
    parser.add_argument("--notebook-cache", type=Path, default=REPO / ".jupyter_cache")
    args = parser.parse_args()
    cache = (args.data or data_dir()) / "cache"
    records = builds(cache)
    own = own_seconds(records)
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for record in records:
        row = by_kind[record["kind"]]
        row[0] += 1
        row[1] += record["seconds"]
        row[2] += own[record["name"]]
        row[3] += record["cpu_seconds"]
    rows = [[kind, *values] for kind, values in sorted(by_kind.items(), key=lambda kv: -kv[1][2])]
    total = [sum(row[i] for row in rows) for i in (1, 2, 3, 4)]
    rows.append(["all", *total[:1], "", *total[2:]])
    print(Table(["step", "artifacts", "wall s", "own s", "CPU s"], rows, digits=1))
    if args.notebook_cache.is_dir():
        chapters = chapter_seconds(args.notebook_cache)
        table = [[name, seconds] for name, seconds in chapters.items()]
        table.append(["all", sum(chapters.values())])
        print()
        print(Table(["chapter", "execution s"], table, digits=1))


if __name__ == "__main__":
    main()
