"""Sphinx extension: every function and class in the API reference links to its chapter.

The links are computed, never written by hand (d2l's back-links, kept true as chapters
change): the extension reads the code cells of the book's notebooks in table-of-contents
order, collects the captionlib names each one uses (`from captionlib.x import name`,
`import captionlib.x as m` then `m.name`, `recipes.trained_captioner`), resolves each name
to the object it means (a name re-exported by a package counts for the module that defines
it) and keeps the first chapter per object. While autodoc documents a module-level function
or class, the extension appends

    Introduced in chapter N, <chapter title as a link>.

or, for an object no chapter calls, "Used inside the library (not called by a chapter)."
A module's docstring loses its first paragraph on that page: book/api.md introduces each
module in one line of its own, and the chapters come from the objects' lines.

A name a notebook imports but captionlib no longer has is skipped here: executing that
notebook fails on it, which is where the error belongs.
"""

from __future__ import annotations

import ast
import importlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from IPython.core.inputtransformer2 import TransformerManager
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.environment import BuildEnvironment

PACKAGE = "captionlib"
DOCUMENTED = ("function", "class", "exception")
NOT_IN_A_CHAPTER = "Used inside the library (not called by a chapter)."


@dataclass(frozen=True)
class Chapter:
    """A notebook page of the book: its docname and, in a numbered part, its number."""

    docname: str
    number: int | None


def toc_notebooks(toc_path: Path) -> list[Chapter]:
    """The notebook pages of a jb-book `_toc.yml`, in reading order, numbered as the book is.

    Numbered parts count on from one part to the next (Jupyter Book's default multi-part
    numbering); pages in unnumbered parts (the appendix) get no number.
    """
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    root = toc_path.parent
    chapters: list[Chapter] = []
    number = 0
    for part in toc.get("parts", []):
        numbered = bool(part.get("numbered", False))
        for entry in part.get("chapters", []):
            docname = str(entry.get("file", "")).removesuffix(".ipynb")
            if not docname:
                continue
            if numbered:
                number += 1
            if (root / f"{docname}.ipynb").is_file():
                chapters.append(Chapter(docname, number if numbered else None))
    return chapters


def notebook_code(path: Path) -> list[str]:
    """The source of every code cell of a notebook, IPython magics turned into Python."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    transform = TransformerManager().transform_cell
    return [
        transform("".join(cell["source"]))
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
    ]


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def names_used(sources: Iterable[str], package: str = PACKAGE) -> set[str]:
    """Dotted names from `package` that code uses, as written (not yet resolved).

    One namespace for all sources (a notebook's cells share their globals): imports
    anywhere bind names, and every attribute chain on a bound name counts,
    so `from captionlib import recipes` then `recipes.trained_captioner(...)` gives
    `captionlib.recipes` and `captionlib.recipes.trained_captioner`.
    """
    trees = [ast.parse(source) for source in sources]
    bound: dict[str, str] = {}
    used: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] != package:
                        continue
                    used.add(alias.name)
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[package] = package
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] != package:
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    name = f"{node.module}.{alias.name}"
                    used.add(name)
                    bound[alias.asname or alias.name] = name
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            parts = _dotted(node)
            if parts and parts[0] in bound:
                used.add(".".join([bound[parts[0]], *parts[1:]]))
    return used


def resolve(dotted: str) -> Any | None:
    """The object a dotted name means, importing submodules on the way; None if none."""
    first, *rest = dotted.split(".")
    obj: Any = importlib.import_module(first)
    for part in rest:
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if not isinstance(obj, ModuleType) or not hasattr(obj, "__path__"):
            return None
        name = f"{obj.__name__}.{part}"
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            return None
    return obj


def object_key(obj: Any) -> str | None:
    """Where a function or class is defined, `module.qualname`; None for anything else."""
    if isinstance(obj, ModuleType) or not callable(obj):
        return None
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    return f"{module}.{qualname}"


def first_chapters(uses: Sequence[tuple[Chapter, set[str]]]) -> dict[str, Chapter]:
    """For each function or class the chapters use, the first chapter (in the order given)."""
    first: dict[str, Chapter] = {}
    for chapter, names in uses:
        for name in sorted(names):
            key = object_key(resolve(name))
            if key is not None and key.startswith(f"{PACKAGE}."):
                first.setdefault(key, chapter)
    return first


def introductions(toc_path: Path) -> dict[str, Chapter]:
    """`module.qualname` → the chapter that first uses it, for the book of `toc_path`."""
    uses = []
    for chapter in toc_notebooks(toc_path):
        path = toc_path.parent / f"{chapter.docname}.ipynb"
        try:
            uses.append((chapter, names_used(notebook_code(path))))
        except SyntaxError as error:
            raise ValueError(f"{path}: a code cell is not valid Python: {error}") from error
    return first_chapters(uses)


def without_summary(lines: list[str]) -> list[str]:
    """A module docstring without its first paragraph, which book/api.md says in its own words.

    A summary that ends in "::" introduced a literal block: the "::" stays.
    """
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    rest = lines[end:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    if end and lines[end - 1].rstrip().endswith("::"):
        rest = ["::", "", *rest]
    return rest


def backlink(chapter: Chapter | None) -> str:
    """The reStructuredText line appended to an object's docstring."""
    if chapter is None:
        return NOT_IN_A_CHAPTER
    link = f":doc:`/{chapter.docname}`"
    if chapter.number is None:
        return f"Introduced in {link}."
    return f"Introduced in chapter {chapter.number}, {link}."


class _BackLinks:
    def __init__(self) -> None:
        self.first: dict[str, Chapter] = {}

    def load(self, app: Sphinx, config: Config) -> None:
        toc = getattr(config, "external_toc_path", None) or "_toc.yml"
        path = Path(toc) if Path(toc).is_absolute() else Path(app.srcdir) / toc
        self.first = introductions(path)

    def outdated(
        self,
        app: Sphinx,
        env: BuildEnvironment,
        added: set[str],
        changed: set[str],
        removed: set[str],
    ) -> list[str]:
        # a chapter that changed its imports moves back-links on pages it does not touch
        previous = getattr(env, "chapter_links_first", None)
        env.chapter_links_first = dict(self.first)
        pages: set[str] = getattr(env, "chapter_links_pages", set())
        if previous is None or previous == self.first:
            return []
        return sorted(pages - removed)

    def purge(self, app: Sphinx, env: BuildEnvironment, docname: str) -> None:
        getattr(env, "chapter_links_pages", set()).discard(docname)

    def merge(
        self, app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
    ) -> None:
        pages: set[str] = getattr(env, "chapter_links_pages", set())
        env.chapter_links_pages = pages | getattr(other, "chapter_links_pages", set())

    def docstring(
        self, app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
    ) -> None:
        if what == "module":
            lines[:] = without_summary(lines)
            return
        key = object_key(obj)
        if what not in DOCUMENTED or key is None or "." in obj.__qualname__:
            return  # only module-level functions and classes have chapters
        env = app.env
        pages: set[str] = getattr(env, "chapter_links_pages", set())
        pages.add(env.docname)
        env.chapter_links_pages = pages
        if lines and lines[-1].strip():
            lines.append("")
        lines.append(backlink(self.first.get(key)))


def setup(app: Sphinx) -> dict[str, Any]:
    links = _BackLinks()
    app.connect("config-inited", links.load)
    app.connect("env-get-outdated", links.outdated)
    app.connect("env-purge-doc", links.purge)
    app.connect("env-merge-info", links.merge)
    # after napoleon (priority 500) has turned Google sections into reStructuredText, so the
    # line is a paragraph of its own and not part of a "Returns:" section
    app.connect("autodoc-process-docstring", links.docstring, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
