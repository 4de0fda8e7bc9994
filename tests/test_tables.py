"""Tables render as Markdown pipe tables (→ HTML in the book) and as aligned text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captionlib.viz.tables import Table, format_cell, format_vector, literal


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


def test_vectors_read_as_written_by_hand() -> None:
    assert format_vector([3.0, 0.0, -0.5]) == "(3, 0, -0.5)"
    assert format_vector(np.array([[0.888888, 2.222222]])) == "(0.8889, 2.2222)"
    assert format_vector(torch.tensor([-0.00001, 12.5]), digits=2) == "(0, 12.5)"
    assert format_vector([1234.4], digits=0) == "(1234)"
    with pytest.raises(ValueError, match="finite"):
        format_vector([1.0, float("nan")])
    with pytest.raises(ValueError, match="digits"):
        format_vector([1.0], digits=-1)


def test_literal_text_survives_markdown() -> None:
    assert literal("a dog <end>") == "a dog \\<end\\>"
    assert literal("2*3_x $5") == "2\\*3\\_x \\$5"
    assert literal("plain words") == "plain words"
    # pipes are left to Table, which escapes them once
    cell = Table(["caption"], [[literal("a|b <end>")]]).to_markdown().splitlines()[2]
    assert cell == "| a\\|b \\<end\\> |"
