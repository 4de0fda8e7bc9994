"""Tables a chapter shows (every chapter; introduced in chapter 1).

::

    display(Table(["split", "images"], [["train", 3000], ["test", 500]]))
    display(metrics_table({"A, test": scores_a, "B, test": scores_b}))
    display(field_table(recipes.ENCODER))      # one row per setting
    display(caption_metrics_table(scores))     # "CIDEr" shown as CIDEr-D

A `Table` is a small value object that Jupyter and the book render as a real table: its
Markdown form (a GFM pipe table) becomes an HTML `<table>` in JupyterLab, in Colab and in the
built book (myst-nb renders Markdown outputs with MyST, so `$...$` math and `**bold**` work
inside cells). `str(table)` is an aligned plain-text version for terminals and logs.
Numbers are formatted here (floats with `digits` decimals, None as "–"), so chapters pass raw
values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from captionlib.evaluate.objects import ObjectMentionReport

CellValue = float | int | str | None
MISSING = "–"


def format_cell(value: CellValue, digits: int = 3) -> str:
    """One cell as text: ints as is, floats with `digits` decimals, None as "–"."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"table cells must be numbers or strings, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    if isinstance(value, str):
        return value
    raise ValueError(f"table cells must be numbers or strings, got {type(value).__name__}")


def _markdown_cell(text: str) -> str:
    # a pipe or a line break would end the cell early
    return text.replace("|", "\\|").replace("\n", " ").strip() or " "


@dataclass(frozen=True)
class Table:
    """A table with a header row; rendered as Markdown (→ HTML) by Jupyter and the book.

    columns: the header; rows: one sequence of cells per row, each as long as `columns`;
    cells are numbers, strings (Markdown allowed) or None; floats get `digits` decimals.
    `align` gives one of "l", "r", "c" per column (default: text left, numbers right).
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[CellValue]]
    digits: int = 3
    align: Sequence[str] | None = None
    cells: tuple[tuple[str, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("a table needs at least one column")
        if self.digits < 0:
            raise ValueError(f"digits must be >= 0, got {self.digits}")
        for index, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"row {index} has {len(row)} cells, the table has {len(self.columns)} columns"
                )
        cells = tuple(tuple(format_cell(v, self.digits) for v in row) for row in self.rows)
        object.__setattr__(self, "cells", cells)
        if self.align is not None:
            if len(self.align) != len(self.columns):
                raise ValueError(
                    f"align has {len(self.align)} entries, the table has "
                    f"{len(self.columns)} columns"
                )
            bad = [a for a in self.align if a not in ("l", "r", "c")]
            if bad:
                raise ValueError(f"align entries must be 'l', 'r' or 'c', got {bad}")

    def alignment(self) -> list[str]:
        """Per column "l", "r" or "c": as given, else "r" where every cell is a number."""
        if self.align is not None:
            return list(self.align)
        numeric = []
        for column in range(len(self.columns)):
            values = [row[column] for row in self.rows if row[column] is not None]
            numeric.append(
                bool(values)
                and all(
                    isinstance(v, (int, float, np.integer, np.floating))
                    and not isinstance(v, (bool, np.bool_))
                    for v in values
                )
            )
        return ["r" if is_number else "l" for is_number in numeric]

    def to_markdown(self) -> str:
        """A GFM pipe table (what Jupyter and the book render)."""
        rules = {"l": ":---", "r": "---:", "c": ":---:"}
        lines = [
            "| " + " | ".join(_markdown_cell(c) for c in self.columns) + " |",
            "|" + "|".join(rules[a] for a in self.alignment()) + "|",
        ]
        lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in self.cells]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        header = [str(c) for c in self.columns]
        widths = [max(len(line[i]) for line in [header, *self.cells]) for i in range(len(header))]
        alignment = self.alignment()

        def render(line: Sequence[str]) -> str:
            parts = [
                cell.rjust(width) if a == "r" else cell.ljust(width)
                for cell, width, a in zip(line, widths, alignment, strict=True)
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * width for width in widths)
        return "\n".join([render(header), rule, *(render(line) for line in self.cells)])

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(str(self))  # type: ignore[attr-defined]


def metrics_table(
    rows: Mapping[str, Mapping[str, CellValue]],
    columns: Sequence[str] | None = None,
    digits: int = 3,
    row_header: str = "",
) -> Table:
    """One row per row name, one column per metric (chapters 2–12).

    `columns` picks and orders the columns (default: every key, in order of first
    appearance); a row without a column shows "–". Floats get `digits` decimals.
    `row_header` names the first column.
    """
    if not rows:
        raise ValueError("rows is empty: pass {row name: {column: value}}")
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    body = [[name, *(row.get(column) for column in columns)] for name, row in rows.items()]
    align = ["l", *("r" for _ in columns)]
    return Table([row_header, *columns], body, digits=digits, align=align)


def format_vector(values: Sequence[float] | np.ndarray, digits: int = 4) -> str:
    """A short vector as one cell, e.g. "(3, 0, -0.5)" (chapter 6's relevance per layer).

    Each value is rounded to `digits` decimals with trailing zeros dropped, so exact numbers
    read as they would be written by hand; values must be finite. Accepts a sequence, a
    numpy array or a CPU tensor without gradient (flattened).
    """
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise ValueError(f"values must be finite, got {array.tolist()}")
    parts = []
    for value in array:
        text = f"{value:.{digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        parts.append("0" if text == "-0" else text)
    return "(" + ", ".join(parts) + ")"


# --- settings and records (chapters 1–4) ---------------------------------------------------


def value_text(value: object) -> str:
    """A setting or record value as short text (chapters 1–4).

    Floats in their shortest exact form (0.0005 stays 0.0005), lists in [ ], tuples in ( ),
    mappings as "key: value" pairs, everything else as `str`.
    """
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {value_text(item)}" for key, item in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(value_text(item) for item in value) + ")"
    return str(value)


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    padding = " " if fence == "``" else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def field_table(fields: object, header: Sequence[str] = ("setting", "value")) -> Table:
    """One row per field of a configuration, a dataclass or a JSON record (chapters 1–4).

    `fields` is a mapping or a dataclass instance (read with `asdict`, so nested dataclasses
    show as "key: value" pairs). Names and values (through `value_text`) are in code font.
    """
    if is_dataclass(fields) and not isinstance(fields, type):
        fields = asdict(fields)
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping or a dataclass, got {type(fields).__name__}")
    if not fields:
        raise ValueError("fields is empty: nothing to show")
    if len(header) != 2:
        raise ValueError(f"header names the two columns, got {list(header)}")
    rows = [[_code(str(name)), _code(value_text(value))] for name, value in fields.items()]
    return Table(list(header), rows, align=["l", "l"])


# every ASCII punctuation character that CommonMark lets a backslash escape, except "|",
# which `Table` escapes itself (a table cell would otherwise end there)
_MARKDOWN_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{}~")


def literal(text: str) -> str:
    """`text` escaped so that Markdown shows it as it is (chapters 5 and 8).

    For words and captions in a `Table` cell or in `display(Markdown(...))`: tokens such as
    `<end>` would otherwise be read as HTML tags and vanish, `*` and `_` as emphasis, `$` as
    math. Every ASCII punctuation character except "|" gets a backslash.
    """
    return "".join(f"\\{char}" if char in _MARKDOWN_PUNCTUATION else char for char in text)


# --- caption scores and absent objects (chapters 3 and 4) ------------------------------------

CAPTION_METRIC_NAMES = {"ROUGE_L": "ROUGE-L", "CIDEr": "CIDEr-D"}


def caption_metrics_table(
    rows: Mapping[str, Mapping[str, CellValue]],
    columns: Sequence[str] | None = None,
    digits: int = 3,
    row_header: str = "",
) -> Table:
    """`metrics_table` of caption scores under the book's names (chapters 3 and 4).

    pycocoevalcap's keys "ROUGE_L" and "CIDEr" (its CIDEr is CIDEr-D) are shown as
    "ROUGE-L" and "CIDEr-D"; other keys keep their names. `columns` uses the scores' keys.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    renamed = {
        name: {CAPTION_METRIC_NAMES.get(key, key): value for key, value in row.items()}
        for name, row in rows.items()
    }
    shown = [CAPTION_METRIC_NAMES.get(column, column) for column in columns]
    return metrics_table(renamed, shown, digits=digits, row_header=row_header)


def absent_objects_table(
    reports: Mapping[str, ObjectMentionReport], row_header: str = "captions"
) -> Table:
    """Captions that name an absent object, and how often each category is named while
    absent: one column per report, one row per count (chapters 3 and 4).

    Rows: all captions, those that name an absent object and their share, then one row per
    category ("name an absent boat": captions that name a boat the image does not have), from
    the most to the least often absent over all reports (ties a–z); a report that never names
    a category while absent counts 0 there. Categories as rows keep the table narrow however
    many there are. `row_header` heads the first column.
    """
    if not reports:
        raise ValueError("reports is empty: pass {split or captioner: ObjectMentionReport}")
    totals: Counter[str] = Counter()
    for report in reports.values():
        totals.update(report.absent_by_category)
    categories = sorted(totals, key=lambda category: (-totals[category], category))
    shown = list(reports.values())
    rows: list[list[CellValue]] = [
        ["all", *(report.captions for report in shown)],
        ["name an absent object", *(report.with_absent for report in shown)],
        ["share that name an absent object", *(report.absent_caption_share for report in shown)],
    ]
    rows += [
        [f"name an absent {category}", *(r.absent_by_category.get(category, 0) for r in shown)]
        for category in categories
    ]
    columns = [row_header, *reports]
    return Table(columns, rows, align=["l", *("r" for _ in reports)])
