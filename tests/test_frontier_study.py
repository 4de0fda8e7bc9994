"""Chapter 11's frontier study on the tiny config: one code path for any worker count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captionlib import studies
from captionlib.evaluate.frontier import seed_frontiers
from captionlib.runconfig import load_run_config

SMALL = {"n_train": 24, "n_val": 6, "n_test": 6, "n_shifted": 4}
PENALTIES = (0.0, 2.0, 50.0)


def _tiny():
    return load_run_config("shapeworld_tiny", [f"data.shapeworld={json.dumps(SMALL)}"])


def test_worker_processes_give_the_numbers_of_one_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "data"))
    config = _tiny()
    # the same cross-entropy checkpoint for both fine-tuning seeds, as in the book
    configs = {"adaptive": [config, config]}
    one = studies.caution_frontier(
        configs, (0, 1), ("shifted",), PENALTIES, processes=1, progress=False
    )
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "again"))
    two = studies.caution_frontier(
        configs, (0, 1), ("shifted",), PENALTIES, processes=2, progress=False
    )
    assert one.sweeps == two.sweeps and one.contrast == two.contrast
    before = one.sweeps["adaptive"]["before"]["shifted"]
    controls = one.sweeps["adaptive"]["control"]["shifted"]
    assert len(before) == len(controls) == 2 and before[0] == before[1]
    assert [point["penalty"] for point in before[0]] == list(PENALTIES)
    # λ = 50 removes every object word: nothing named, so nothing recalled or hallucinated
    assert before[0][-1]["recall"] == 0.0 and before[0][-1]["CHAIRs"] == 0.0
    assert len(one.contrast["adaptive"]["shifted"]) == 2
    with pytest.raises(ValueError, match="processes"):
        studies.caution_frontier(configs, (0, 1), ("shifted",), PENALTIES, processes=0)
    with pytest.raises(ValueError, match="configs"):
        studies.caution_frontier({"adaptive": [config]}, (0, 1), ("shifted",), PENALTIES)


def test_seed_frontiers_join_the_checkpoints_of_each_seed() -> None:
    def sweep(*points):
        return [{"recall": r, "CHAIRs": c} for r, c in points]

    sweeps = {
        "before": [sweep((0.5, 0.4), (0.2, 0.1)), sweep((0.5, 0.5), (0.1, 0.0))],
        "control": [sweep((0.6, 0.5), (0.4, 0.35)), sweep((0.4, 0.2))],
    }
    first, second = seed_frontiers(sweeps)
    # seed 0: (0.4, 0.35) is dominated by nothing; (0.5, 0.4) and (0.6, 0.5) stay
    assert first.recall.tolist() == [0.2, 0.4, 0.5, 0.6]
    assert first.chair_at(0.45) == pytest.approx(0.375)
    # seed 1: the control's (0.4, 0.2) lies below the line of the before checkpoint
    assert second.recall.tolist() == [0.1, 0.4, 0.5]
    assert second.chair.tolist() == [0.0, 0.2, 0.5]
    with pytest.raises(ValueError, match="same number"):
        seed_frontiers({"before": sweeps["before"], "control": sweeps["control"][:1]})
