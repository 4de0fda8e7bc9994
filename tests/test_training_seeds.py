"""Training seeds (chapters 3, 4 and 11): captioners trained side by side in worker processes
equal the ones trained one at a time, training runs with the configured thread count whatever
the caller's, and chapter 11's results pair training seed s with fine-tuning seed s."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from captionlib import steps, studies
from captionlib.runconfig import RunConfig, load_run_config

SMALL = {"n_train": 24, "n_val": 6, "n_test": 6, "n_shifted": 4}


def _seeded(seed: int, *overrides: str) -> RunConfig:
    config = load_run_config(
        "shapeworld_tiny", [f"data.shapeworld={json.dumps(SMALL)}", *overrides]
    )
    return replace(config, training=replace(config.training, seed=seed))


def _weights(trained: steps.TrainedCaptioner) -> dict[str, torch.Tensor]:
    return trained.model.state_dict()


def _equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_workers_train_the_captioners_one_process_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = [_seeded(0), _seeded(1)]
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "one"))
    alone = [steps.captioner(config, progress=False) for config in configs]
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "two"))
    # the encoder and its features are not pinned: build them with the caller's one thread,
    # as for `alone`, before the caller switches to two
    for split in ("train", "val"):
        steps.split_features(configs[0], split, progress=False)
    parent, train, load = os.getpid(), steps._train, steps.load_captioner
    trainers = tmp_path / "trainers"
    trainers.mkdir()

    def recording_train(*args: Any, **kwargs: Any) -> None:
        (trainers / f"{os.getpid()}-{args[0].training.seed}").touch()
        train(*args, **kwargs)

    def one_thread_in_workers(*args: Any, **kwargs: Any) -> Any:
        # a forked worker that starts its parent's thread pool hangs (on the book's model
        # sizes, in load_state_dict): the workers must run with one thread throughout
        if os.getpid() != parent and torch.get_num_threads() != 1:
            raise AssertionError(f"a worker loads with {torch.get_num_threads()} threads")
        return load(*args, **kwargs)

    # forked workers inherit the patched functions
    monkeypatch.setattr(steps, "_train", recording_train)
    monkeypatch.setattr(steps, "load_captioner", one_thread_in_workers)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # seed 0 listed twice: one artifact, trained once
        side_by_side = steps.captioners([*configs, configs[0]], processes=2, progress=False)
    finally:
        torch.set_num_threads(previous)
    records = sorted(path.name.split("-") for path in trainers.iterdir())
    assert [seed for _, seed in records] == ["0", "1"]  # each seed trained once
    pids = {int(pid) for pid, _ in records}
    assert len(pids) == 2 and parent not in pids  # in two workers, not in this process
    assert side_by_side[0].folder == side_by_side[2].folder
    for solo, paired in zip(alone, side_by_side, strict=False):
        assert _equal(_weights(solo), _weights(paired))
        assert solo.history.val_score == paired.history.val_score
    # two seeds, two different captioners
    assert not _equal(_weights(alone[0]), _weights(alone[1]))
    with pytest.raises(ValueError, match="processes"):
        steps.captioners(configs, processes=0)


def test_training_runs_with_the_configured_threads_not_the_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = torch.get_num_threads()
    runs, training_threads = [], []
    train = steps._train

    def recording_train(*args: Any, **kwargs: Any) -> None:
        training_threads.append(torch.get_num_threads())
        train(*args, **kwargs)

    monkeypatch.setattr(steps, "_train", recording_train)
    try:
        for caller_threads in (1, 2):
            monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / f"caller{caller_threads}"))
            torch.set_num_threads(caller_threads)
            runs.append(steps.captioner(_seeded(0), progress=False))
            assert torch.get_num_threads() == caller_threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(previous)
    assert training_threads == [1, 1]  # training.threads, whatever the caller had set
    # the thread count is a training setting, so it is part of the key
    assert steps.captioner_key(_seeded(0, "training.threads=2")) != runs[0].key
    with pytest.raises(ValueError, match="threads"):
        _seeded(0, "training.threads=0")


def test_results_pair_each_training_seed_with_its_fine_tuning_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "data"))
    configs = {"adaptive": [_seeded(0), _seeded(1)]}
    pairs: list[tuple[str, int, int]] = []  # (method, training seed, fine-tuning seed)
    finetuned = steps.finetuned

    def recording_finetuned(config: RunConfig, method: str, seed: int, *args: Any) -> Any:
        pairs.append((method, config.training.seed, seed))
        return finetuned(config, method, seed, *args)

    monkeypatch.setattr(steps, "finetuned", recording_finetuned)
    results = studies.finetuning_results(configs, (0, 1), ("shifted",), progress=False)
    assert sorted(pairs) == [("control", 0, 0), ("control", 1, 1), ("lrp", 0, 0), ("lrp", 1, 1)]
    for index, config in enumerate(configs["adaptive"]):
        trained = steps.captioner(config, progress=False)
        encoder = steps.encoder(config, progress=False).encoder
        before = studies.caption_with(config, trained.model, encoder, "shifted")
        # "before" is each seed's own cross-entropy checkpoint, scored like the others
        assert results.captions["adaptive"]["before"]["shifted"][index] == before
        assert results.scores["adaptive"]["before"]["shifted"][index] == pytest.approx(
            studies.finetune_scores(config, before, "shifted")
        )
    with pytest.raises(ValueError, match="2 seeds"):
        studies.finetuning_results({"adaptive": [_seeded(0)]}, (0, 1), ("shifted",))
