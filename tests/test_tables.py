"""Tables render as Markdown pipe tables (→ HTML in the book) and as aligned text."""

from __future__ import annotations

import numpy as np
import pytest

from captionlib.viz.tables import Table, format_cell


def test_cells_are_formatted_once() -> None:
    assert format_cell(0.123456, 2) == "0.12"
    assert format_cell(np.float32(1.5), 1) == "1.5"
    assert format_cell(np.int64(7)) == "7"
    assert format_cell(None) == "–"
    assert format_cell("**boat**") == "**boat**"
    with pytest.raises(ValueError, match="numbers or strings"):
        format_cell(True)
    with pytest.raises(ValueError, match="numbers or strings"):
        format_cell([1, 2])  # type: ignore[arg-type]


def test_markdown_escapes_pipes_and_aligns_numbers_right() -> None:
    table = Table(["word", "count", "share"], [["a|b", 3, 0.5], ["dog", 12, None]], digits=2)
    assert table.to_markdown().splitlines() == [
        "| word | count | share |",
        "|:---|---:|---:|",
        "| a\\|b | 3 | 0.50 |",
        "| dog | 12 | – |",
    ]
    text = str(table).splitlines()
    assert text[0] == "word  count  share"
    assert text[2] == "a|b       3   0.50"
    assert text[3] == "dog      12      –"


def test_bad_shapes_name_the_row() -> None:
    with pytest.raises(ValueError, match="row 1 has 1 cells, the table has 2 columns"):
        Table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="at least one column"):
        Table([], [])
    with pytest.raises(ValueError, match="align has 1 entries"):
        Table(["a", "b"], [[1, 2]], align=["l"])
    with pytest.raises(ValueError, match="'l', 'r' or 'c'"):
        Table(["a"], [[1]], align=["x"])
