"""The command line end to end on a tiny ShapeWorld: train → evaluate → explain → finetune,
config validation, prepare and download (chapter 12). Data go to tmp_path via CAPTIONLIB_DATA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_prepare import make_coco2014

from captionlib.cli import main
from captionlib.runconfig import load_run_config, parse_run_config

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "shapeworld_tiny.yaml")
FAST = [
    "--set",
    "data.shapeworld={n_train: 24, n_val: 6, n_test: 6, n_shifted: 2}",
    "--set",
    "training.epochs=1",
    "--set",
    "training.batch_size=40",
    "--no-progress",
]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args]) == 0
    return json.loads(capsys.readouterr().out)


def _artifacts(root: Path, kind: str) -> list[Path]:
    return sorted(p for p in (root / "cache").glob(f"{kind}-*") if p.is_dir())


def _features_header(root: Path, split: str) -> dict:
    """The header of the one stored feature artifact of `split`."""
    [folder] = [
        p
        for p in _artifacts(root, "features")
        if json.loads((p / "config.json").read_text())["split"] == split
    ]
    return json.loads((folder / "features.json").read_text())


def test_train_evaluate_explain_finetune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path))
    run = tmp_path / "runs" / "shapeworld_tiny"

    trained = _run(capsys, "train", "--config", TINY, *FAST)
    assert trained["run"] == str(run) and trained["processes"] == 1
    assert len(trained["val_CIDEr"]) == 1 and trained["train_loss"][0] > 0
    # the run folder is a view: links into the store, recorded in run.json
    record = json.loads((run / "run.json").read_text())
    for name in ("captioner", "encoder"):
        assert (run / name).is_symlink() and (run / name).resolve() == Path(
            record["artifacts"][name]
        )
    assert (run / "captioner" / "captioner.pt").is_file()
    header = _features_header(tmp_path, "train")
    assert header["shape"] == [24, 196, 32] and header["dtype"] == "float16"

    evaluated = _run(capsys, "evaluate", "--config", TINY, *FAST)
    assert set(evaluated["scores"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr"}
    stored = json.loads((run / "evaluation-trained-test" / "evaluation.json").read_text())
    assert len(stored["captions"]) == 6 and stored["scores"] == evaluated["scores"]

    explained = _run(capsys, "explain", "--config", TINY, *FAST, "--images", "2")
    payload = torch.load(run / "explanations-trained-test" / "explanations.pt", weights_only=True)
    words = payload["mask"].sum().item()
    assert explained["words"] == words > 0
    assert payload["heatmap"].shape[:2] == payload["mask"].shape
    assert payload["heatmap"].shape[2:] == (112, 112)
    assert payload["heatmap"][payload["mask"]].abs().sum() > 0
    assert Path(explained["figure"]).is_file()

    control = [*FAST, "--set", "finetune.method=control"]
    assert main(["evaluate", "--config", TINY, *control, "--stage", "finetuned"]) == 2
    assert "run `python -m captionlib finetune` first" in capsys.readouterr().err
    tuned = _run(capsys, "finetune", "--config", TINY, *control)
    assert tuned["method"] == "control" and len(tuned["seconds"]) == 1
    before = torch.load(run / "captioner" / "captioner.pt", weights_only=True)["state_dict"]
    after = torch.load(run / "finetuned-control" / "captioner.pt", weights_only=True)
    assert not torch.equal(before["output.weight"], after["state_dict"]["output.weight"])
    again = _run(capsys, "evaluate", "--config", TINY, *control, "--stage", "finetuned")
    assert again["split"] == "test" and (run / "evaluation-finetuned-control-test").is_symlink()

    # a second fine-tuning with other settings: new artifact, the old evaluation link is gone
    other = [*control, "--set", "finetune.lr=3e-4"]
    _run(capsys, "finetune", "--config", TINY, *other)
    assert len(_artifacts(tmp_path, "finetuned")) == 2
    assert not (run / "evaluation-finetuned-control-test").exists()
    assert (
        "evaluation-finetuned-control-test"
        not in json.loads((run / "run.json").read_text())["artifacts"]
    )


def test_config_errors_name_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"training\.lrate is not a known setting"):
        load_run_config(TINY, ["training.lrate=0.1"])
    with pytest.raises(ValueError, match=r"training\.lr must be a number, got 'fast'"):
        load_run_config(TINY, ["training.lr=fast"])
    with pytest.raises(ValueError, match=r"captioner\.kind must be one of"):
        load_run_config(TINY, ["captioner.kind=transformer"])
    with pytest.raises(ValueError, match=r"training: CaptionTrainConfig\.epochs must be >= 1"):
        load_run_config(TINY, ["training.epochs=0"])
    with pytest.raises(ValueError, match="data.root must name the coco2014 folder"):
        parse_run_config({"name": "x", "data": {"dataset": "coco2014"}})
    with pytest.raises(ValueError, match="colour is not a known section"):
        parse_run_config({"name": "x", "colour": 1})
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_run_config(tmp_path / "nope.yaml")
    assert main(["train", "--config", TINY, "--set", "encoder.kind=resnet"]) == 2
    assert "encoder.kind must be one of" in capsys.readouterr().err


def test_overrides_fill_sections_left_empty_in_the_yaml(tmp_path: Path) -> None:
    path = tmp_path / "empty_sections.yaml"
    path.write_text("name: bare\ntraining:\nfinetune:\n  method: control\n")
    overrides = ["training.epochs=3", "finetune.seed=2", "data.min_word_count=5"]
    config = load_run_config(path, overrides)
    assert config.training.epochs == 3 and config.data.min_word_count == 5
    assert config.finetune.method == "control" and config.finetune.seed == 2
    with pytest.raises(ValueError, match=r"override 'name\.x=1': name is not a section"):
        load_run_config(path, ["name.x=1"])


def test_numbers_in_exponent_notation_are_numbers() -> None:
    # YAML 1.1 (PyYAML) reads 1e-4 and 5E3 without a dot as strings
    config = load_run_config(TINY, ["training.lr=1e-4", "finetune.encoder_lr=5E-6"])
    assert config.training.lr == 1e-4 and config.finetune.encoder_lr == 5e-6
    assert parse_run_config({"name": "x", "training": {"lr": "+2.5e-3"}}).training.lr == 2.5e-3
    with pytest.raises(ValueError, match=r"training\.lr must be a number, got '1e'"):
        load_run_config(TINY, ["training.lr=1e"])
    with pytest.raises(ValueError, match=r"training\.epochs must be an integer, got '1e3'"):
        load_run_config(TINY, ["training.epochs=1e3"])


def test_book_and_paper_configs_parse() -> None:
    coco = load_run_config("coco_adaptive")
    assert coco.encoder.kind == "vgg16" and coco.encoder.image_size == 224
    assert coco.captioner.sizes["hidden_dim"] == 512 and coco.training.batch_size == 32
    assert coco.training.lr == 5e-4 and coco.training.betas == (0.8, 0.999)
    assert coco.evaluation.beam_size == 3 and coco.data.word_threshold() == 4
    multihead = load_run_config("coco_multihead")
    assert multihead.captioner.sizes["heads"] == 8 and multihead.captioner.sizes["head_dim"] == 64
    book = load_run_config("shapeworld_adaptive")
    assert book.captioner.sizes == {
        "embed_dim": 128,
        "hidden_dim": 128,
        "attention_dim": 96,
        "dropout": 0.5,
    }
    assert load_run_config("shapeworld_multihead").captioner.kind == "multihead"
    demo = load_run_config("shapeworld_demo")  # chapter 12's command-line demo
    assert demo.data.shapeworld == {"n_train": 1000, "n_val": 100, "n_test": 100, "n_shifted": 4}
    assert demo.encoder.channels == [12, 24, 48] and demo.encoder_pretraining.epochs == 8
    assert demo.captioner.sizes["hidden_dim"] == 64 and demo.training.epochs == 4
    assert demo.evaluation.metrics == ["BLEU", "ROUGE_L", "CIDEr"] and demo.explain.images == 16


def test_prepare_command_on_a_coco_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "data"))
    root = make_coco2014(tmp_path / "coco")
    config = str(REPO / "configs" / "coco_adaptive.yaml")
    out = _run(capsys, "prepare", "--config", config, "--set", f"data.root={root}", "--no-progress")
    prepared = Path(out["prepared"])
    assert prepared.parent in _artifacts(tmp_path / "data", "prepared")
    assert (tmp_path / "data" / "runs" / "coco_adaptive" / "data").resolve() == prepared
    assert json.loads((prepared / "prepared.json").read_text())["splits"]["train"]["images"] == 3
    missing = str(tmp_path / "empty")
    elsewhere = ["--set", f"data.root={missing}", "--set", "output=other"]
    assert main(["prepare", "--config", config, *elsewhere]) == 2
    assert "captions_train2014.json" in capsys.readouterr().err


def test_download_prints_the_plan_and_fetches_nothing_without_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "coco2014", "--folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "needs the network" in out and "train2014.zip" in out and "--yes" in out
    assert not any(tmp_path.iterdir())


def test_train_and_evaluate_on_a_prepared_coco_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "data"))
    root = make_coco2014(tmp_path / "coco")
    small = [
        *("--set", f"data.root={root}", "--set", "data.num_workers=0", "--set", "device=cpu"),
        *("--set", "encoder={kind: small_vgg, pretrained: false, image_size: 32}"),
        *("--set", "captioner.sizes={embed_dim: 8, hidden_dim: 8, attention_dim: 8}"),
        *("--set", "training.epochs=1", "--set", "evaluation.tokenizer=simple"),
        *("--set", "evaluation.metrics=[CIDEr]", "--no-progress"),
    ]
    trained = _run(capsys, "train", "--config", "coco_adaptive", *small)
    run = tmp_path / "data" / "runs" / "coco_adaptive"
    assert trained["run"] == str(run) and len(trained["train_loss"]) == 1
    header = _features_header(tmp_path / "data", "train")
    assert header["image_ids"] == [1, 2, 3] and header["shape"] == [3, 16, 64]  # 4×4 grid
    evaluated = _run(capsys, "evaluate", "--config", "coco_adaptive", *small)
    assert set(evaluated["scores"]) == {"CIDEr"} and set(evaluated["examples"]) == {"12", "13"}


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "with space"])
def test_run_names_cannot_leave_the_data_folder(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        parse_run_config({"name": name}, "cfg.yaml")


def test_relative_output_cannot_leave_the_data_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "store"))
    with pytest.raises(ValueError, match="output '../elsewhere' leaves the data folder"):
        parse_run_config({"name": "ok", "output": "../elsewhere"}, "cfg.yaml")
    inside = parse_run_config({"name": "run-1.b_2", "output": "nested/place"}, "cfg.yaml")
    assert inside.run_dir == tmp_path / "store" / "nested" / "place"
    assert parse_run_config({"name": "ok"}).run_dir == tmp_path / "store" / "runs" / "ok"
    absolute = parse_run_config({"name": "ok", "output": str(tmp_path / "scratch")})
    assert absolute.run_dir == tmp_path / "scratch"
