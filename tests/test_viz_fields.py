"""Settings and record tables, and caption scores under the book's names (chapters 1–4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from captionlib.viz.tables import field_table, value_text


@dataclass
class Inner:
    p: float = 0.9


@dataclass
class Settings:
    lr: float = 0.0005
    betas: tuple[float, float] = (0.8, 0.999)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    resume: bool = False
    inner: Inner = field(default_factory=Inner)


def test_values_keep_their_exact_short_form() -> None:
    assert value_text(0.0005) == "0.0005"  # not rounded to 0.001 as 3-digit cells would be
    assert value_text(1e-5) == "1e-05"
    assert value_text(np.int64(60512)) == "60512"
    assert value_text((0.8, 0.999)) == "(0.8, 0.999)"
    assert value_text([45, 2, 30, 16]) == "[45, 2, 30, 16]"
    assert value_text({"colour": "red", "size": "big"}) == "colour: red, size: big"
    assert value_text(None) == "None"
    assert value_text(True) == "True"


def test_field_table_has_one_code_row_per_field() -> None:
    table = field_table(Settings())
    assert table.to_markdown().splitlines() == [
        "| setting | value |",
        "|:---|:---|",
        "| `lr` | `0.0005` |",
        "| `betas` | `(0.8, 0.999)` |",
        "| `channels` | `[16, 32, 64]` |",
        "| `resume` | `False` |",
        "| `inner` | `p: 0.9` |",
    ]
    record = field_table({"file_name": "train/000001.png", "odd": "a`b"}, ("field", "value"))
    assert record.rows[0] == ["`file_name`", "`train/000001.png`"]
    assert record.rows[1][1] == "`` a`b ``"  # a backtick inside needs a double fence


def test_field_table_rejects_what_it_cannot_show() -> None:
    with pytest.raises(TypeError, match="mapping or a dataclass"):
        field_table([1, 2])
    with pytest.raises(TypeError, match="mapping or a dataclass"):
        field_table(Settings)  # the class, not an instance
    with pytest.raises(ValueError, match="empty"):
        field_table({})
    with pytest.raises(ValueError, match="two columns"):
        field_table({"a": 1}, ("only",))
