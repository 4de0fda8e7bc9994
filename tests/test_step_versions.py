"""A change to a step's code cannot silently serve a stale artifact.

Each step of `captionlib.steps` has a version in its artifact key (`STEP_VERSIONS`). This
test fingerprints the code each step runs (the syntax tree without docstrings, so comments,
formatting and documentation do not count) and compares it with the record in
step_fingerprints.json. Changed code with an unchanged version fails: bump the step's
version in `STEP_VERSIONS` (its artifacts are then rebuilt) and record the new fingerprint
with `python tests/test_step_versions.py --update`, which refuses to record changed code
under an old version.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import sys
import textwrap
from pathlib import Path

from captionlib.steps import STEP_VERSIONS

RECORD = Path(__file__).with_name("step_fingerprints.json")
SHARED = ["captionlib.steps:load_data", "captionlib.steps:prepared_folder"]
ENCODER = [
    "captionlib.steps:encoder",
    "captionlib.steps:new_encoder",
    "captionlib.steps:_pretrain_small_vgg",
    "captionlib.steps:classify",
    "captionlib.steps:normalize",
    "captionlib.steps:load_images",
    "captionlib.steps:multilabel_targets",
    "captionlib.steps:mean_average_precision",
    "captionlib.train:pretrain_encoder",
    "captionlib.models.encoder",
]
CAPTIONER = [
    "captionlib.steps:captioner",
    "captionlib.steps:_train",
    "captionlib.steps:new_captioner",
    "captionlib.steps:in_memory",
    "captionlib.train",
    "captionlib.generate",
    "captionlib.models.base",
    "captionlib.models.lstm",
    "captionlib.models.adaptive",
    "captionlib.models.multihead",
    "captionlib.models.decoding",
    "captionlib.utils:torch_threads",
    "captionlib.data.coco:CaptionDataset",
    "captionlib.data.coco:collate_captions",
    "captionlib.distributed:distributed_loader",
    "captionlib.evaluate.captions",
]
# what each step's artifact is computed by (modules, or module:object)
STEP_SOURCES: dict[str, list[str]] = {
    "prepared": [*SHARED, "captionlib.data.prepare", "captionlib.data.vocab"],
    "encoder": [*SHARED, *ENCODER],
    "features": [
        "captionlib.steps:split_features",
        "captionlib.steps:image_loader",
        "captionlib.features",
        "captionlib.data.coco:ImageDataset",
        "captionlib.data.coco:image_transform",
        "captionlib.data.coco:load_image",
    ],
    "captioner": [*SHARED, *CAPTIONER],
    "finetuned": [
        "captionlib.steps:finetuned",
        "captionlib.steps:SplitImages",
        "captionlib.steps:_train_images",
        "captionlib.finetune",
        "captionlib.explain.lrp",
        "captionlib.explain.cnn",
        "captionlib.ops",
        "captionlib.studies:finetuning_results",
        "captionlib.studies:caption_with",
        "captionlib.studies:grid_features",
        "captionlib.studies:finetune_scores",
        "captionlib.evaluate.hallucination",
    ],
    "frontier": [
        "captionlib.studies:caution_frontier",
        "captionlib.studies:_checkpoint",
        "captionlib.studies:_frontier_task",
        "captionlib.studies:contrast_features",
        "captionlib.studies:ContrastSettings",
        "captionlib.studies:grid_features",
        "captionlib.studies:finetune_scores",
        "captionlib.studies:split_images",
        "captionlib.evaluate.frontier",
        "captionlib.evaluate.hallucination",
        "captionlib.models.decoding",
        "captionlib.generate",
    ],
    "diagnosis": [
        *SHARED,
        "captionlib.studies:diagnosis",
        "captionlib.studies:split_images",
        "captionlib.studies:synonym_table",
        "captionlib.evaluate.diagnosis",
        "captionlib.evaluate.hallucination",
        "captionlib.explain.api",
        "captionlib.explain.selected",
        "captionlib.explain.lrp",
        "captionlib.explain.cnn",
        "captionlib.explain.gradients",
        "captionlib.explain.attention",
        "captionlib.ops",
    ],
    "explanations": [
        *SHARED,
        "captionlib.studies:explanation_study",
        "captionlib.studies:split_images",
        "captionlib.evaluate.explanation_study",
        "captionlib.evaluate.localization",
        "captionlib.evaluate.ablation",
        "captionlib.explain.api",
        "captionlib.explain.selected",
        "captionlib.explain.lrp",
        "captionlib.explain.cnn",
        "captionlib.explain.gradients",
        "captionlib.explain.attention",
        "captionlib.ops",
    ],
}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return tree


def _source(name: str) -> str:
    module_name, _, attribute = name.partition(":")
    module = importlib.import_module(module_name)
    target = getattr(module, attribute) if attribute else module
    return textwrap.dedent(inspect.getsource(target))


def fingerprint(step: str) -> str:
    """Hash of the syntax trees (no docstrings) of everything `step` runs."""
    digest = hashlib.sha256()
    for name in STEP_SOURCES[step]:
        tree = _without_docstrings(ast.parse(_source(name)))
        digest.update(name.encode() + ast.dump(tree).encode())
    return digest.hexdigest()[:16]


def current() -> dict[str, dict[str, object]]:
    return {
        step: {"version": STEP_VERSIONS[step], "fingerprint": fingerprint(step)}
        for step in STEP_VERSIONS
    }


def test_every_step_has_a_recorded_fingerprint() -> None:
    assert set(STEP_SOURCES) == set(STEP_VERSIONS)
    assert set(json.loads(RECORD.read_text())) == set(STEP_VERSIONS)


def test_changed_step_code_comes_with_a_version_bump() -> None:
    recorded = json.loads(RECORD.read_text())
    stale = [
        f"{step}: the code changed but STEP_VERSIONS[{step!r}] is still {now['version']}"
        if recorded[step]["version"] == now["version"]
        else f"{step}: version bumped to {now['version']}; record its new fingerprint"
        for step, now in current().items()
        if recorded[step] != now
    ]
    assert stale == [], "run `python tests/test_step_versions.py --update` after bumping"


def test_the_fingerprint_ignores_docstrings_and_formatting() -> None:
    plain = ast.dump(_without_docstrings(ast.parse("def f(x):\n    return x + 1\n")))
    documented = 'def f(x):\n    """Add one."""\n    # a comment\n    return (x +\n        1)\n'
    assert ast.dump(_without_docstrings(ast.parse(documented))) == plain
    changed = ast.dump(_without_docstrings(ast.parse("def f(x):\n    return x + 2\n")))
    assert changed != plain


if __name__ == "__main__" and "--update" in sys.argv:
    old = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    new = current()
    refused = [
        step
        for step, now in new.items()
        if step in old and old[step]["version"] == now["version"] and old[step] != now
    ]
    if refused:
        sys.exit(f"bump STEP_VERSIONS for {refused} first: their code changed")
    RECORD.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORD}")
