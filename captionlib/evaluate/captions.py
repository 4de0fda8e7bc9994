"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (and optionally SPICE) (chapter 3).

::

    scores = score_captions({42: "a red boat on the water"}, {42: ["a boat on water", ...]})
    # {"BLEU-1": ..., "BLEU-4": ..., "METEOR": ..., "ROUGE_L": ..., "CIDEr": ...}

The scorers are pycocoevalcap's, so numbers are comparable with published COCO results.
BLEU, ROUGE-L and CIDEr-D are pure Python. METEOR and the Stanford PTB tokenizer are Java
programs shipped inside pycocoevalcap; this module runs them itself (same jars, same
arguments as pycocoevalcap) so that a failing Java process raises a clear error instead
of hanging or returning a partial result. Without Java:

- `metrics="default"` skips METEOR with a warning (never a silent 0);
- asking for METEOR, SPICE or `tokenizer="ptb"` explicitly raises RuntimeError;
- `tokenizer="auto"` falls back to a pure-Python tokenizer (lowercase, punctuation
  stripped) and warns, because scores then differ slightly from the official ones.

SPICE downloads Stanford CoreNLP on first use: optional, and never run in the tests.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor_module
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb_module

from captionlib.data.vocab import tokenize as simple_tokenize

ALL_METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
DEFAULT_METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")
TOKENIZERS = ("auto", "ptb", "simple")

_METEOR_JAR = Path(_meteor_module.__file__).parent / _meteor_module.METEOR_JAR
_PTB_JAR = Path(_ptb_module.__file__).parent / _ptb_module.STANFORD_CORENLP_3_4_1_JAR

Captions = dict[int, list[str]]


def java_available() -> bool:
    """Whether a `java` executable is on the PATH (METEOR, PTB tokenizer and SPICE need it)."""
    return shutil.which("java") is not None


def _java_error(what: str) -> RuntimeError:
    return RuntimeError(
        f"{what} needs Java, and no `java` executable was found on the PATH. "
        "Install a Java runtime (e.g. `apt-get install default-jre`) or leave it out."
    )


def _run_checked(command: list[str], cwd: Path, text: str, what: str) -> str:
    try:
        result = subprocess.run(command, cwd=cwd, input=text.encode("utf-8"), capture_output=True)
    except OSError as error:
        raise RuntimeError(f"{what} could not start Java: {error}") from error
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise RuntimeError(f"{what} failed (exit code {result.returncode}): {stderr}")
    return result.stdout.decode("utf-8")


def ptb_tokenize(captions: Mapping[object, Sequence[str]]) -> dict[object, list[str]]:
    """Stanford PTB tokenisation, lowercased, punctuation tokens removed (as pycocoevalcap).

    One Java call for all captions; the output must have one line per input caption.
    """
    keys = [(key, len(texts)) for key, texts in captions.items()]
    lines = [" ".join(t.split()) for texts in captions.values() for t in texts]
    command = ["java", "-cp", str(_PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer"]
    command += ["-preserveLines", "-lowerCase"]
    output = _run_checked(command, _PTB_JAR.parent, "\n".join(lines) + "\n", "PTB tokenizer")
    tokenized = output.split("\n")[:-1]  # one "\n"-terminated line per caption
    if len(tokenized) != len(lines):
        raise RuntimeError(
            f"PTB tokenizer returned {len(tokenized)} lines for {len(lines)} captions"
        )
    punctuation = set(_ptb_module.PUNCTUATIONS)
    result: dict[object, list[str]] = {}
    position = 0
    for key, count in keys:
        chunk = tokenized[position : position + count]
        result[key] = [" ".join(w for w in line.split() if w not in punctuation) for line in chunk]
        position += count
    return result


def _simple_tokenize(captions: Mapping[object, Sequence[str]]) -> dict[object, list[str]]:
    return {key: [" ".join(simple_tokenize(t)) for t in texts] for key, texts in captions.items()}


class _MeteorProcess:
    """The METEOR 1.5 jar in `-stdio` mode (pycocoevalcap's protocol and arguments)."""

    def __init__(self, stderr: BinaryIO) -> None:
        command = ["java", "-jar", "-Xmx2G", str(_METEOR_JAR), "-", "-", "-stdio"]
        command += ["-l", "en", "-norm"]
        self._stderr = stderr
        try:
            self._process = subprocess.Popen(
                command,
                cwd=_METEOR_JAR.parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except OSError as error:
            raise RuntimeError(f"METEOR could not start Java: {error}") from error

    def _ask(self, line: str) -> None:
        try:
            self._process.stdin.write((line + "\n").encode("utf-8"))
            self._process.stdin.flush()
        except BrokenPipeError as error:
            raise self._failure("stopped accepting input") from error

    def _answer(self) -> str:
        line = self._process.stdout.readline().decode("utf-8").strip()
        if not line:
            raise self._failure("returned no output")
        return line

    def _failure(self, what: str) -> RuntimeError:
        self._process.kill()
        self._process.wait()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode("utf-8", "replace").strip()[-2000:]
        return RuntimeError(
            f"METEOR {what} (exit code {self._process.returncode}); stderr: {stderr or '<empty>'}"
        )

    def score(self, references: Captions, predictions: Captions) -> float:
        keys = list(predictions)
        statistics = []
        for key in keys:
            hypothesis = predictions[key][0].replace("|||", "").replace("  ", " ")
            refs = [r.replace("|||", "") for r in references[key]]
            self._ask(" ||| ".join(("SCORE", *refs, hypothesis)))
            stats = self._answer()
            if not all(_is_number(value) for value in stats.split()):
                raise self._failure(f"returned malformed statistics {stats[:200]!r}")
            statistics.append(stats)
        self._ask(" ||| ".join(("EVAL", *statistics)))
        values = [self._answer() for _ in range(len(keys) + 1)]  # per image, then overall
        if not all(_is_number(value) for value in values):
            raise self._failure(f"returned malformed scores {values[:5]!r}")
        score = float(values[-1])
        if not 0.0 <= score <= 1.0:
            raise self._failure(f"returned an impossible score {score}")
        return score

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                stream.close()


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def meteor_score(references: Captions, predictions: Captions) -> float:
    """Corpus METEOR 1.5 (as pycocoevalcap computes it) of tokenised captions."""
    if not java_available():
        raise _java_error("METEOR")
    with tempfile.TemporaryFile() as stderr:
        process = _MeteorProcess(stderr)
        try:
            return process.score(references, predictions)
        finally:
            process.close()


def _spice_score(references: Captions, predictions: Captions) -> float:
    from pycocoevalcap.spice.spice import Spice  # imported late: it may download CoreNLP

    score, _ = Spice().compute_score(references, predictions)
    return float(score)


def _validate(
    predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]
) -> tuple[Captions, Captions]:
    if not predictions:
        raise ValueError("no predictions to score")
    if not references:
        raise ValueError("no references to score against")
    missing_refs = sorted(set(predictions) - set(references), key=str)
    missing_preds = sorted(set(references) - set(predictions), key=str)
    if missing_refs or missing_preds:
        raise ValueError(
            "predictions and references must cover the same image ids; "
            f"without references: {missing_refs[:20]}; without a prediction: {missing_preds[:20]}"
        )
    preds: Captions = {}
    refs: Captions = {}
    for image_id, caption in predictions.items():
        if not isinstance(caption, str):
            raise ValueError(
                f"prediction for image {image_id} must be one str, got {type(caption).__name__}"
            )
        captions = references[image_id]
        if isinstance(captions, str) or not captions:
            raise ValueError(f"references for image {image_id} must be a non-empty list of str")
        if not all(isinstance(c, str) for c in captions):
            raise ValueError(f"references for image {image_id} contain a non-str caption")
        preds[image_id] = [caption]
        refs[image_id] = list(captions)
    return preds, refs


def _resolve_metrics(metrics: str | Sequence[str], java: bool) -> list[str]:
    if metrics == "default":
        if java:
            return list(DEFAULT_METRICS)
        warnings.warn(
            "METEOR skipped: it needs Java and no `java` executable was found on the PATH",
            stacklevel=3,
        )
        return [m for m in DEFAULT_METRICS if m != "METEOR"]
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown}; choose from {ALL_METRICS} or 'default'")
    for metric in ("METEOR", "SPICE"):
        if metric in metrics and not java:
            raise _java_error(metric)
    return list(dict.fromkeys(metrics))


def _resolve_tokenizer(tokenizer: str, java: bool) -> str:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose from {TOKENIZERS}")
    if tokenizer == "ptb" and not java:
        raise _java_error("The PTB tokenizer")
    if tokenizer == "auto":
        if java:
            return "ptb"
        warnings.warn(
            "no `java` found: captions are tokenised in Python (lowercase, punctuation "
            "stripped) instead of with the PTB tokenizer; scores may differ slightly from "
            "the official COCO evaluation",
            stacklevel=3,
        )
        return "simple"
    return tokenizer


def score_captions(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    metrics: str | Sequence[str] = "default",
    tokenizer: str = "auto",
) -> dict[str, float]:
    """Corpus-level caption metrics of one predicted caption per image.

    `metrics`: "default" (BLEU, METEOR, ROUGE_L, CIDEr; METEOR skipped with a warning when
    Java is missing) or a list from ALL_METRICS. `tokenizer`: "auto" (PTB when Java is
    present, else Python with a warning), "ptb" or "simple". Returns BLEU-1..BLEU-4,
    METEOR, ROUGE_L, CIDEr (CIDEr-D as pycocoevalcap computes it) and SPICE as requested.
    """
    java = java_available()
    preds, refs = _validate(predictions, references)
    chosen = _resolve_metrics(metrics, java)
    method = _resolve_tokenizer(tokenizer, java)
    if method == "ptb":
        both = ptb_tokenize(
            {**{("p", k): v for k, v in preds.items()}, **{("r", k): v for k, v in refs.items()}}
        )
        preds = {k: both[("p", k)] for k in preds}
        refs = {k: both[("r", k)] for k in refs}
    else:
        preds, refs = _simple_tokenize(preds), _simple_tokenize(refs)

    scores: dict[str, float] = {}
    for metric in chosen:
        if metric == "BLEU":
            bleu, _ = Bleu(4).compute_score(refs, preds, verbose=0)
            scores.update({f"BLEU-{n + 1}": float(value) for n, value in enumerate(bleu)})
        elif metric == "METEOR":
            scores["METEOR"] = meteor_score(refs, preds)
        elif metric == "ROUGE_L":
            scores["ROUGE_L"] = float(Rouge().compute_score(refs, preds)[0])
        elif metric == "CIDEr":
            scores["CIDEr"] = float(Cider().compute_score(refs, preds)[0])
        else:
            scores["SPICE"] = _spice_score(refs, preds)
    return scores
