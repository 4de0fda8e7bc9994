"""The API reference appendix (book/api.md) and its computed chapter back-links.

book/_ext/chapter_links.py reads the chapters' code cells and appends "Introduced in chapter
N" to every documented function and class; these tests hold the scanner to what the
notebooks really import and call, and keep every module of captionlib in the appendix.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import sys
from pathlib import Path

import pytest
import yaml

import captionlib

ROOT = Path(__file__).resolve().parent.parent
TOC = ROOT / "_toc.yml"
API_PAGE = ROOT / "book" / "api.md"
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import chapter_links  # noqa: E402
from chapter_links import Chapter, first_chapters, introductions, names_used  # noqa: E402

CH1, CH2 = Chapter("notebooks/01_x", 1), Chapter("notebooks/02_y", 2)
NAPOLEON_SECTIONS = {"Args", "Arguments", "Returns", "Raises", "Yields", "Attributes", "Note"}


@pytest.fixture(scope="module")
def book() -> dict[str, Chapter]:
    return introductions(TOC)


def chapter_code(docname: str) -> str:
    notebook = json.loads((ROOT / f"{docname}.ipynb").read_text(encoding="utf-8"))
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return "\n".join("".join(cell["source"]) for cell in cells)


def public_modules() -> list[str]:
    """Modules with public functions or classes of their own, and every plain module."""
    names = []
    for info in pkgutil.walk_packages(captionlib.__path__, "captionlib."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        defines = any(
            (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == info.name
            for name, obj in vars(module).items()
            if not name.startswith("_")
        )
        if defines or not info.ispkg:
            names.append(info.name)
    return names


def documented_modules() -> list[str]:
    return re.findall(r"^\.\. automodule:: (\S+)$", API_PAGE.read_text(), flags=re.MULTILINE)


# --- the scanner, on code written for the test ---


def test_imports_aliases_and_attribute_uses_are_all_found() -> None:
    cells = [
        "import numpy as np\nfrom captionlib import recipes, seed_everything\n",
        "from captionlib.evaluate import explanation_study as study\n"
        "import captionlib.models.encoder as enc\n",
        "captioner = recipes.trained_captioner('adaptive')\n"
        "study.run_study(x)\nenc.to_grid(f)\nnp.zeros(3)\n",
    ]
    assert names_used(cells) == {
        "captionlib.recipes",
        "captionlib.recipes.trained_captioner",
        "captionlib.seed_everything",
        "captionlib.evaluate.explanation_study",
        "captionlib.evaluate.explanation_study.run_study",
        "captionlib.models.encoder",
        "captionlib.models.encoder.to_grid",
    }


def test_magics_are_read_as_python(tmp_path: Path) -> None:
    sources = [
        ("markdown", ["from captionlib.utils import data_dir"]),
        ("code", ["if IN_COLAB:\n", "    !pip install -q captionlib\n", "%matplotlib inline"]),
        ("code", ["from captionlib.cli import main as cli\n", "cli([])"]),
    ]
    notebook = {"cells": [{"cell_type": kind, "source": source} for kind, source in sources]}
    path = tmp_path / "01_x.ipynb"
    path.write_text(json.dumps(notebook))
    assert names_used(chapter_links.notebook_code(path)) == {"captionlib.cli.main"}


def test_a_name_counts_for_the_module_that_defines_it_and_its_first_chapter() -> None:
    first = first_chapters(
        [
            (CH1, {"captionlib.explain.explain", "captionlib.viz.no_such_module.f"}),
            (CH2, {"captionlib.explain.api.explain", "captionlib.explain.api.captions_to_ids"}),
        ]
    )
    assert first == {
        "captionlib.explain.api.explain": CH1,  # re-exported by captionlib.explain
        "captionlib.explain.api.captions_to_ids": CH2,
    }


def test_backlink_lines() -> None:
    assert chapter_links.backlink(Chapter("notebooks/11_lrp", 11)) == (
        "Introduced in chapter 11, :doc:`/notebooks/11_lrp`."
    )
    assert chapter_links.backlink(None) == "Used inside the library (not called by a chapter)."


def test_a_module_docstring_loses_its_summary_and_keeps_a_literal_block() -> None:
    doc = ["Training curves", "(chapters 2-4).", "", "Details."]
    assert chapter_links.without_summary(doc) == ["Details."]
    doc = ["Explorer (chapter 7)::", "", "    explorer_html(content)", "", "Details."]
    assert chapter_links.without_summary(doc) == [
        "::",
        "",
        "    explorer_html(content)",
        "",
        "Details.",
    ]
    assert chapter_links.without_summary(["Only a summary."]) == []


# --- the scanner, on the book's chapters ---


def test_chapters_are_numbered_as_the_book_numbers_them() -> None:
    chapters = chapter_links.toc_notebooks(TOC)
    assert [chapter.number for chapter in chapters] == list(range(1, 13))
    for chapter in chapters:
        assert chapter.docname.startswith(f"notebooks/{chapter.number:02d}_")


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("captionlib.finetune.lrp_ift_weights", 11),
        ("captionlib.data.vocab.Vocabulary", 1),
        ("captionlib.models.adaptive.AdaptiveAttentionCaptioner", 3),
        ("captionlib.recipes.trained_captioners", 3),  # called as recipes.trained_captioners
        ("captionlib.recipes.trained_captioner", 4),  # chapter 3 calls the plural
        ("captionlib.explain.api.explain", 5),  # imported from captionlib.explain
        ("captionlib.cli.main", 12),  # imported as captionlib_cli
    ],
)
def test_known_names_map_to_the_chapter_that_introduces_them(
    book: dict[str, Chapter], name: str, number: int
) -> None:
    assert book[name].number == number


def test_metrics_table_maps_to_the_first_chapter_importing_it(book: dict[str, Chapter]) -> None:
    pattern = re.compile(r"from captionlib\.viz\.tables import (\([^)]*|[^\n(]*)\bmetrics_table\b")
    importing = [
        chapter
        for chapter in chapter_links.toc_notebooks(TOC)
        if pattern.search(chapter_code(chapter.docname))
    ]
    assert importing, "no chapter imports metrics_table from captionlib.viz.tables"
    assert book["captionlib.viz.tables.metrics_table"] == importing[0]


@pytest.mark.parametrize(
    "name", ["captionlib.models.decoding.reorder_state", "captionlib.checkpoints.load_checkpoint"]
)
def test_a_name_no_chapter_uses_has_no_chapter(book: dict[str, Chapter], name: str) -> None:
    short = name.rsplit(".", 1)[1]
    assert not any(short in chapter_code(c.docname) for c in chapter_links.toc_notebooks(TOC))
    assert name not in book


# --- the appendix page ---


def test_every_module_of_captionlib_is_in_the_appendix_once() -> None:
    documented = documented_modules()
    assert len(documented) == len(set(documented)), "a module documented twice"
    assert sorted(set(public_modules()) - set(documented)) == []
    assert sorted(set(documented) - set(public_modules())) == []


def test_the_appendix_is_in_the_toc_after_the_method() -> None:
    toc = yaml.safe_load(TOC.read_text())
    appendix = next(part for part in toc["parts"] if part["caption"] == "Appendix")
    files = [entry["file"] for entry in appendix["chapters"]]
    assert files.index("book/api") == files.index("book/method") + 1


def docstrings() -> list[tuple[Path, str, str]]:
    """(file, name, docstring) of every module, function and class of captionlib."""
    found = []
    for path in sorted((ROOT / "captionlib").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef):
                name = getattr(node, "name", "module docstring")
                found.append((path, name, ast.get_docstring(node) or ""))
    return found


def test_docstring_examples_are_literal_blocks() -> None:
    """An indented example follows '::', or the page shows it as a quote with curly quotes."""
    problems = []
    for path, where, docstring in docstrings():
        lines = docstring.split("\n")
        for before, blank, line in zip(lines, lines[1:], lines[2:], strict=False):
            if not (line.startswith("    ") and not blank.strip() and before.strip()):
                continue
            if before.startswith(" ") or before.rstrip().endswith("::"):
                continue
            if before.strip().rstrip(":") in NAPOLEON_SECTIONS:
                continue
            problems.append(f"{path.relative_to(ROOT)} ({where}): {line.strip()[:50]}")
    assert problems == []


def _outside_literals(text: str) -> str:
    """`text` without its ``literal`` / `literal` spans and `::` literal blocks."""
    text = re.sub(r"``.*?``|`[^`\n]*`", "", text)
    kept, in_block = [], False
    for line in text.split("\n"):
        if in_block and (line.startswith(" ") or not line.strip()):
            continue
        in_block = line.rstrip().endswith("::")
        kept.append(line)
    return "\n".join(kept)


def test_docstrings_have_no_accidental_substitutions() -> None:
    """`|R|` outside backticks is a reStructuredText substitution: -W fails on it (public
    docstrings only: autodoc leaves private names out)."""
    problems = []
    for path, where, docstring in docstrings():
        if where.startswith("_"):
            continue
        text = _outside_literals(docstring)
        for found in re.findall(r"(?<![\w|])\|[^|\s][^|\n]*?\|(?![\w|])", text):
            problems.append(f"{path.relative_to(ROOT)} ({where}): {found}")
    assert problems == []
