"""Caption metrics (captionlib.evaluate.captions) against pycocoevalcap's own scorers."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captionlib.data.vocab import tokenize
from captionlib.evaluate import captions as metrics_module
from captionlib.evaluate.captions import java_available, meteor_score, ptb_tokenize, score_captions

REFERENCES = {
    1: ["A red boat on the water.", "a boat floats on blue water", "the red boat sails"],
    2: ["A brown dog with a ball!", "the dog plays with a ball", "a dog and a yellow ball"],
    3: ["two birds fly above the sea", "birds in the sky over water", "two white birds flying"],
    4: ["a car on the road", "a blue car drives down a road", "the car is on a street"],
}
PREDICTIONS = {
    1: "a red boat on blue water",
    2: "a dog with a ball",
    3: "a bird flying over the water",
    4: "a boat on the road",
}

needs_java = pytest.mark.skipif(not java_available(), reason="needs a Java runtime")


def _tokenized(predictions, references):
    preds = {k: [" ".join(tokenize(v))] for k, v in predictions.items()}
    refs = {k: [" ".join(tokenize(r)) for r in v] for k, v in references.items()}
    return preds, refs


def test_pure_python_metrics_equal_pycocoevalcap() -> None:
    scores = score_captions(
        PREDICTIONS, REFERENCES, metrics=["BLEU", "ROUGE_L", "CIDEr"], tokenizer="simple"
    )
    preds, refs = _tokenized(PREDICTIONS, REFERENCES)
    bleu, _ = Bleu(4).compute_score(refs, preds, verbose=0)
    assert [scores[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    assert scores["ROUGE_L"] == pytest.approx(Rouge().compute_score(refs, preds)[0], abs=1e-12)
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(refs, preds)[0], abs=1e-12)
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE_L", "CIDEr"}
    assert 0.3 < scores["BLEU-1"] < 1.0 and scores["BLEU-4"] < scores["BLEU-1"]


def test_identical_captions_score_perfectly() -> None:
    predictions = {k: refs[0] for k, refs in REFERENCES.items()}
    scores = score_captions(
        predictions, REFERENCES, metrics=["BLEU", "ROUGE_L", "CIDEr"], tokenizer="simple"
    )
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE_L"] == pytest.approx(1.0)
    assert scores["CIDEr"] > 1.0
    worse = score_captions(
        PREDICTIONS, REFERENCES, metrics=["BLEU", "ROUGE_L", "CIDEr"], tokenizer="simple"
    )
    assert worse["CIDEr"] < scores["CIDEr"] and worse["BLEU-4"] < scores["BLEU-4"]


def test_known_values_by_hand() -> None:
    # "the cat sat on the mat" vs "the cat is on the mat": 5 of 6 unigrams match (clipped),
    # equal lengths (no brevity penalty); longest common subsequence 5 of 6 words.
    scores = score_captions(
        {0: "The cat sat on the mat."},
        {0: ["the cat is on the mat"]},
        metrics=["BLEU", "ROUGE_L"],
        tokenizer="simple",
    )
    assert scores["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
    # bigrams: "the cat", "on the", "the mat" match of 5 -> BLEU-2 = sqrt(5/6 * 3/5)
    assert scores["BLEU-2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5, abs=1e-6)
    assert scores["ROUGE_L"] == pytest.approx(5 / 6, abs=1e-9)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match=r"without references: \[9\]; without a prediction: \[4\]"):
        score_captions({**{k: PREDICTIONS[k] for k in (1, 2, 3)}, 9: "x"}, REFERENCES)
    with pytest.raises(ValueError, match="no predictions"):
        score_captions({}, REFERENCES)
    with pytest.raises(ValueError, match="no references"):
        score_captions(PREDICTIONS, {})
    with pytest.raises(ValueError, match="image 1 must be one str"):
        score_captions({**PREDICTIONS, 1: ["a", "b"]}, REFERENCES)
    with pytest.raises(ValueError, match="references for image 2"):
        score_captions(PREDICTIONS, {**REFERENCES, 2: []})
    with pytest.raises(ValueError, match="unknown metrics"):
        score_captions(PREDICTIONS, REFERENCES, metrics=["BLEU", "WER"], tokenizer="simple")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        score_captions(PREDICTIONS, REFERENCES, metrics=["BLEU"], tokenizer="spacy")


def test_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "java_available", lambda: False)
    with pytest.raises(RuntimeError, match="METEOR needs Java"):
        score_captions(PREDICTIONS, REFERENCES, metrics=["BLEU", "METEOR"], tokenizer="simple")
    with pytest.raises(RuntimeError, match="PTB tokenizer needs Java"):
        score_captions(PREDICTIONS, REFERENCES, metrics=["BLEU"], tokenizer="ptb")
    with pytest.raises(RuntimeError, match="METEOR needs Java"):
        meteor_score({1: ["a b"]}, {1: ["a b"]})
    with (
        pytest.warns(UserWarning, match="METEOR skipped"),
        pytest.warns(UserWarning, match="tokenised in Python"),
    ):
        scores = score_captions(PREDICTIONS, REFERENCES)
    assert "METEOR" not in scores
    assert scores == score_captions(
        PREDICTIONS, REFERENCES, metrics=["BLEU", "ROUGE_L", "CIDEr"], tokenizer="simple"
    )


def _fake_java(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder.mkdir()
    java = folder / "java"
    java.write_text("#!/bin/sh\n" + script)
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")


def test_broken_java_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_java(tmp_path / "garbage", "while read line; do echo garbage; done\n", monkeypatch)
    with pytest.raises(RuntimeError, match="METEOR returned malformed statistics 'garbage'"):
        meteor_score({1: ["a red boat"]}, {1: ["a boat"]})
    _fake_java(tmp_path / "crash", "echo 'no such class' >&2; exit 3\n", monkeypatch)
    with pytest.raises(RuntimeError, match="exit code 3.*no such class"):
        meteor_score({1: ["a red boat"]}, {1: ["a boat"]})
    with pytest.raises(RuntimeError, match="PTB tokenizer failed.*no such class"):
        ptb_tokenize({1: ["A boat."]})
    _fake_java(tmp_path / "short", "head -n 1\n", monkeypatch)
    with pytest.raises(RuntimeError, match="PTB tokenizer returned 1 lines for 2 captions"):
        ptb_tokenize({1: ["A boat.", "A dog."]})


@needs_java
def test_missing_meteor_jar_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_METEOR_JAR", tmp_path / "meteor-missing.jar")
    with pytest.raises(RuntimeError, match="METEOR .*meteor-missing.jar"):
        meteor_score({1: ["a red boat"]}, {1: ["a boat"]})


@needs_java
@pytest.mark.slow
def test_java_metrics_equal_pycocoevalcap() -> None:
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scores = score_captions(PREDICTIONS, REFERENCES)  # PTB tokenizer + METEOR
    tokenizer = PTBTokenizer()
    refs = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    preds = tokenizer.tokenize({k: [{"caption": v}] for k, v in PREDICTIONS.items()})
    assert refs[2][0] == "a brown dog with a ball"
    meteor = Meteor()
    expected, _ = meteor.compute_score(refs, preds)
    del meteor
    assert scores["METEOR"] == pytest.approx(expected, abs=1e-12)
    assert 0.1 < scores["METEOR"] < 1.0
    bleu, _ = Bleu(4).compute_score(refs, preds, verbose=0)
    assert [scores[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(refs, preds)[0], abs=1e-12)
    assert scores["ROUGE_L"] == pytest.approx(Rouge().compute_score(refs, preds)[0], abs=1e-12)
