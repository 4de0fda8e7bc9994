"""The one pipeline (captionlib.steps): the book and the command line share artifacts; keys
hold every result-affecting setting and no speed-only one; failed, concurrent, resumed and
killed runs (chapter 12). Data go to tmp_path via CAPTIONLIB_DATA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_prepare import make_coco2014

from captionlib import recipes, steps
from captionlib.cli import main
from captionlib.runconfig import load_run_config

REPO = Path(__file__).resolve().parent.parent
TINY = "shapeworld_tiny"
SMALL = {"n_train": 24, "n_val": 6, "n_test": 6, "n_shifted": 2}
FAST = [
    *("--set", "data.shapeworld={n_train: 24, n_val: 6, n_test: 6, n_shifted: 2}"),
    *("--set", "training.batch_size=40", "--no-progress"),
]


def _tiny(*overrides: str):
    return load_run_config(TINY, [f"data.shapeworld={json.dumps(SMALL)}", *overrides])


def _store(root: Path) -> list[str]:
    """Every entry of the store folder (artifacts, locks, temporary folders)."""
    cache = root / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def _cli(root: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = os.environ | {"CAPTIONLIB_DATA": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "captionlib", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_the_book_and_the_command_line_name_the_same_captioner() -> None:
    for kind in ("adaptive", "multihead"):
        cli = load_run_config(REPO / "configs" / f"shapeworld_{kind}.yaml")
        assert steps.captioner_key(cli) == recipes.captioner_key(kind)
    # the book's constants are the packaged config's values (one source)
    book = load_run_config("shapeworld_adaptive")
    assert book.training == recipes.CAPTION_TRAINING
    assert book.finetune == recipes.FINETUNING and recipes.FINETUNING.encoder_lr == 2e-5
    assert book.encoder_pretraining == recipes.ENCODER_TRAINING
    assert recipes.ENCODER["channels"] == book.encoder.channels == [16, 32, 64]


def test_speed_only_settings_are_not_in_any_key_and_results_settings_are() -> None:
    base = _tiny()
    speed = _tiny("data.num_workers=3", "encoder.batch_size=7", "device=auto")
    for key in (steps.data_key, steps.encoder_key, steps.captioner_key):
        assert key(base) == key(speed), key.__name__
    assert steps.features_key(base, {}, "train") == steps.features_key(speed, {}, "train")
    for changed in (
        "training.lr=0.1",
        "training.threads=2",
        "encoder.channels=[8, 16, 16]",
        "data.min_word_count=3",
    ):
        assert steps.captioner_key(_tiny(changed)) != steps.captioner_key(base), changed
    assert steps.encoder_key(_tiny("encoder.pretraining.epochs=2")) != steps.encoder_key(base)
    assert steps.captioner_key(base, processes=2) != steps.captioner_key(base)
    tuned = steps.finetune_key(base, steps.finetune_settings(base, "control", 1))
    assert tuned != steps.finetune_key(base, steps.finetune_settings(base, "control", 2))


def test_a_changed_data_root_is_never_served_stale(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "data"))
    first = make_coco2014(tmp_path / "a")
    second = make_coco2014(tmp_path / "b")
    captions = second / "annotations" / "captions_train2014.json"
    payload = json.loads(captions.read_text())
    payload["annotations"][0]["caption"] = "a zebra next to a zebra"
    captions.write_text(json.dumps(payload))
    configs = [
        load_run_config("coco_adaptive", [f"data.root={root}", "data.min_word_count=1"])
        for root in (first, second)
    ]
    folders = [steps.prepared_folder(config, progress=False) for config in configs]
    assert folders[0] != folders[1]
    vocabularies = [steps.load_data(config, progress=False).vocabulary for config in configs]
    assert "zebra" not in vocabularies[0] and "zebra" in vocabularies[1]


def test_a_failed_run_leaves_nothing_that_blocks_the_fixed_rerun(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path))
    assert main(["train", "--config", TINY, *FAST, "--set", "encoder.batch_size=0"]) == 2
    assert "encoder: batch_size must be >= 1" in capsys.readouterr().err
    assert main(["train", "--config", TINY, *FAST, "--set", "data.num_workers=-1"]) == 2
    assert not (tmp_path / "runs").exists() and _store(tmp_path) == []  # nothing written

    calls = []
    real = steps.train_captioner

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("simulated failure in the middle of training")
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "train_captioner", fails_once)
    assert main(["train", "--config", TINY, *FAST]) == 2
    assert "simulated failure" in capsys.readouterr().err
    assert not [name for name in _store(tmp_path) if name.startswith(".")]  # no temp folder
    assert main(["train", "--config", TINY, *FAST]) == 0
    assert len(calls) == 2
    # a speed-only change finds the finished run instead of refusing or retraining
    faster = [*FAST, "--set", "data.num_workers=1", "--set", "encoder.batch_size=5"]
    assert main(["train", "--config", TINY, *faster]) == 0
    assert len(calls) == 2


def test_a_resumed_run_reproduces_the_uninterrupted_one(tmp_path: Path, monkeypatch) -> None:
    epochs = [*FAST, "--set", "training.epochs=3"]
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "solo"))
    assert main(["train", "--config", TINY, *epochs]) == 0
    solo = steps.captioner(_tiny("training.epochs=3", "training.batch_size=40"), progress=False)

    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "resumed"))
    scores = []
    real = steps.score_captions

    def interrupted(*args, **kwargs):
        scores.append(1)
        if len(scores) == 2:  # after epoch 1 was saved, during epoch 2's validation
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "score_captions", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--config", TINY, *epochs])
    assert list((tmp_path / "resumed" / "cache").glob("captioner-*.resume/train_state.pt"))
    assert main(["train", "--config", TINY, *epochs]) == 0
    assert len(scores) == 4  # epochs 2 and 3 validated again: it resumed, not restarted
    resumed = steps.captioner(_tiny("training.epochs=3", "training.batch_size=40"), progress=False)
    assert resumed.history.train_loss[0] == solo.history.train_loss[0]
    assert resumed.history.train_loss[1:] == solo.history.train_loss[1:]
    assert resumed.history.val_score == solo.history.val_score
    for name, value in solo.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert not list((tmp_path / "resumed" / "cache").glob("*.resume"))  # removed once published


def test_staggered_concurrent_runs_build_once_and_agree_with_a_solo_run(tmp_path: Path) -> None:
    args = ("train", "--config", TINY, *FAST)
    first = _cli(tmp_path / "shared", *args)
    time.sleep(1.0)
    second = _cli(tmp_path / "shared", *args)
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [e for _, e in outputs]
    solo = _cli(tmp_path / "solo", *args)
    solo_out, solo_err = solo.communicate(timeout=600)
    assert solo.returncode == 0, solo_err
    reports = [json.loads(out) for out, _ in outputs] + [json.loads(solo_out)]
    for report in reports:
        assert report["best_epoch"] == reports[2]["best_epoch"]
        assert report["val_CIDEr"] == reports[2]["val_CIDEr"]
        assert report["train_loss"] == reports[2]["train_loss"]
    assert len([n for n in _store(tmp_path / "shared") if n.startswith("captioner-")]) == 2
    # (the artifact and its lock file)


def test_a_killed_build_leaves_no_garbage_after_the_next_run(tmp_path: Path) -> None:
    args = ("train", "--config", TINY, *FAST, "--set", "training.epochs=50")
    victim = _cli(tmp_path, *args, start_new_session=True)
    cache = tmp_path / "cache"
    deadline = time.monotonic() + 300
    while not list(cache.glob(".captioner-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(cache.glob(".captioner-*")), "the build never started"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert list(cache.glob(".captioner-*"))  # the killed builder's temporary folder
    survivor = _cli(tmp_path, "train", "--config", TINY, *FAST, "--set", "training.epochs=1")
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    assert not [name for name in _store(tmp_path) if name.startswith(".")]


def test_decoding_a_store_equals_decoding_the_same_rows_in_memory(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path))
    config = replace(_tiny(), training=replace(_tiny().training, epochs=1, batch_size=40))
    trained = steps.captioner(config, progress=False)
    store = steps.split_features(config, "test", progress=False)
    ids = store.image_ids
    from_store = steps.caption_features(trained.model, store, ids, trained.vocabulary, 2, 12)
    from_tensor = steps.caption_features(
        trained.model, store.to_tensor(), ids, trained.vocabulary, 2, 12
    )
    assert from_store == from_tensor and len(from_store) == 6


GENERATOR = """
import sys
from captionlib.data.shapeworld import ShapeWorldConfig, generate
config = ShapeWorldConfig(n_train=4000, n_val=10, n_test=10, n_shifted=10)
generate(config, sys.argv[1], workers=2)
"""


def _children(pid: int) -> set[int]:
    """The live child processes of `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_generation_workers_die_with_their_killed_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", GENERATOR, str(tmp_path / "out")], start_new_session=True
    )
    deadline = time.monotonic() + 60
    while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) >= 2, "the generator started no process pool"
    os.kill(parent.pid, signal.SIGKILL)  # the parent only: its workers get no signal
    parent.wait()
    deadline = time.monotonic() + 3.0
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)]


def test_the_facade_has_every_name_the_chapters_and_benchmarks_use() -> None:
    import re

    sources = [*(REPO / "notebooks").glob("*.ipynb"), *(REPO / "benchmarks").glob("*.py")]
    used = {name for path in sources for name in re.findall(r"recipes\.(\w+)", path.read_text())}
    assert len(used) > 20
    assert sorted(name for name in used if not hasattr(recipes, name)) == []
