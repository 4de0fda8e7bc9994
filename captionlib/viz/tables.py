"""Tables a chapter shows (every chapter; introduced in chapter 1).

    display(Table(["split", "images"], [["train", 3000], ["test", 500]]))
    display(metrics_table({"A, test": scores_a, "B, test": scores_b}))

A `Table` is a small value object that Jupyter and the book render as a real table: its
Markdown form (a GFM pipe table) becomes an HTML `<table>` in JupyterLab, in Colab and in the
built book (myst-nb renders Markdown outputs with MyST, so `$...$` math and `**bold**` work
inside cells). `str(table)` is an aligned plain-text version for terminals and logs.
Numbers are formatted here (floats with `digits` decimals, None as "–"), so chapters pass raw
values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

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
