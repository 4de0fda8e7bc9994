"""Short source listings of library code (chapters 6 and 7 show the rules they derive).

::

    display(source_listing(ops.linear))                         # the whole function
    display(source_listing(toy.epsilon_rule, start="contributions ="))  # a few lines

A chapter that shows code shows only the lines its prose discusses: `source_listing` cuts
one function's source from the first line containing `start` to the first line after it
containing `stop`, leaves out the docstring, dedents, and fits every line into `width`
characters (the book's column) so that nothing scrolls. The result is a `Listing`, which
Jupyter and the book render as a highlighted Python code block; its first line is a comment
naming where the code comes from.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_WIDTH = 80
CONTINUATION = " " * 8  # extra indentation of a wrapped line's continuation


@dataclass(frozen=True)
class Listing:
    """Python code to show: a Markdown code block for Jupyter and the book, plain text else."""

    code: str

    def _repr_markdown_(self) -> str:
        return f"```python\n{self.code}\n```"

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return self.code

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(self.code)  # type: ignore[attr-defined]


def _qualified_name(obj: Callable[..., object]) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    return f"{module}.{name}" if module else name


def _docstring_lines(lines: list[str]) -> set[int]:
    """Indices of the lines of the function's or class's docstring (empty if it has none)."""
    tree = ast.parse(textwrap.dedent("\n".join(lines)))
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return set()
    docstring = node.body[0]
    if not (
        isinstance(docstring, ast.Expr)
        and isinstance(docstring.value, ast.Constant)
        and isinstance(docstring.value.value, str)
    ):
        return set()
    end = docstring.end_lineno or docstring.lineno
    return set(range(docstring.lineno - 1, end))


def _find(lines: list[str], text: str, after: int, name: str, what: str) -> int:
    for index in range(after, len(lines)):
        if text in lines[index]:
            return index
    raise ValueError(f"no line of {name} contains {what}={text!r}")


def _comma_breaks(code: str) -> list[tuple[int, int, int]]:
    """(bracket depth, end of the text before the break, column to continue at) for every
    ", " inside brackets and outside string literals: where a long line can be split."""
    breaks, opened, quote = [], [], ""
    for index, char in enumerate(code):
        if quote:
            if char == quote and code[index - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            opened.append(index)
        elif char in ")]}" and opened:
            opened.pop()
        elif char == "," and opened and code[index + 1 : index + 2] == " ":
            breaks.append((len(opened), index + 1, opened[-1] + 1))
    return breaks


def fit_line(line: str, width: int = DEFAULT_WIDTH) -> list[str]:
    """One source line as lines of at most `width` characters (where possible).

    A trailing `# comment` that makes the line too long moves onto its own line above the
    code, at the code's indentation. Code that is still too long is split after the last
    ", " that fits at the outermost bracket depth, the rest aligned with its bracket;
    failing that, at spaces (comments continue as comments). A single word longer than
    `width` stays whole.
    """
    if len(line) <= width:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    code, marker, comment = line.partition("  # ")
    if marker and code.strip():
        return [
            *fit_line(f"{indent}# {comment.strip()}", width),
            *fit_line(code.rstrip(), width),
        ]
    fitting = [(depth, -end, column) for depth, end, column in _comma_breaks(line) if end <= width]
    if fitting:
        _, later_first, column = min(fitting)  # the outermost depth, then the latest break
        end = -later_first
        return [line[:end], *fit_line(" " * column + line[end:].lstrip(), width)]
    comment = "# " if line.lstrip().startswith("#") else ""
    wrapper = textwrap.TextWrapper(
        width=width,
        initial_indent=indent + comment,
        subsequent_indent=indent + (comment or CONTINUATION),
        break_long_words=False,
        break_on_hyphens=False,
    )
    return wrapper.wrap(line.strip()[len(comment) :].strip()) or [line]


def source_listing(
    obj: Callable[..., object],
    start: str | None = None,
    stop: str | None = None,
    docstring: bool = False,
    width: int = DEFAULT_WIDTH,
) -> Listing:
    """The source of `obj` from the line containing `start` to the line containing `stop`.

    start None: from the first line (the `def`); stop None: to the last line. The
    docstring is left out unless `docstring=True`. Lines are dedented and fitted into
    `width` characters (`fit_line`); the listing opens with a comment naming `obj`.
    """
    if width < 20:
        raise ValueError(f"width must be at least 20 characters, got {width}")
    name = _qualified_name(obj)
    try:
        lines = inspect.getsource(obj).splitlines()
    except (OSError, TypeError) as error:
        raise ValueError(f"no source available for {name}: {error}") from error
    first = 0 if start is None else _find(lines, start, 0, name, "start")
    last = len(lines) - 1 if stop is None else _find(lines, stop, first, name, "stop")
    skipped = set() if docstring else _docstring_lines(lines)
    chosen = [line for i, line in enumerate(lines) if first <= i <= last and i not in skipped]
    body = textwrap.dedent("\n".join(chosen)).strip("\n").splitlines()
    header = f"# {name}" + ("" if first == 0 and last == len(lines) - 1 else " (excerpt)")
    fitted = [part for line in [header, *body] for part in fit_line(line, width)]
    return Listing("\n".join(fitted))
