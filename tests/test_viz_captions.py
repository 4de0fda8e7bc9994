"""Captioner result tables: metric names and absent-object counts (chapters 3 and 4)."""

from __future__ import annotations

from collections import Counter

import pytest

from captionlib.evaluate.objects import ObjectMentionReport
from captionlib.viz.tables import absent_objects_table, caption_metrics_table


def test_caption_metrics_use_the_book_names() -> None:
    scores = {
        "test": {"BLEU-4": 0.404, "ROUGE_L": 0.619, "CIDEr": 1.036},
        "shifted": {"BLEU-4": 0.31, "ROUGE_L": 0.544, "CIDEr": 0.76},
    }
    table = caption_metrics_table(scores, row_header="split")
    assert list(table.columns) == ["split", "BLEU-4", "ROUGE-L", "CIDEr-D"]
    assert table.cells[1] == ("shifted", "0.310", "0.544", "0.760")
    picked = caption_metrics_table(scores, columns=["CIDEr", "BLEU-4"], digits=2)
    assert list(picked.columns) == ["", "CIDEr-D", "BLEU-4"]
    assert picked.cells[0] == ("test", "1.04", "0.40")


def report(captions: int, absent: dict[str, int], with_absent: int) -> ObjectMentionReport:
    mentions = sum(absent.values())
    return ObjectMentionReport(captions, with_absent, 2 * mentions, mentions, Counter(absent))


def test_absent_objects_are_counted_per_category_most_often_first() -> None:
    table = absent_objects_table(
        {
            "test": report(500, {"person": 16, "boat": 9}, 24),
            "shifted": report(500, {"boat": 97, "ball": 34, "car": 31}, 150),
        }
    )
    assert list(table.columns) == ["captions", "test", "shifted"]
    assert table.cells == (
        ("all", "500", "500"),
        ("name an absent object", "24", "150"),
        ("share that name an absent object", "0.048", "0.300"),
        ("name an absent boat", "9", "97"),  # 106 in all: first
        ("name an absent ball", "0", "34"),
        ("name an absent car", "0", "31"),
        ("name an absent person", "16", "0"),
    )
    assert table.to_markdown().splitlines()[1] == "|:---|---:|---:|"
    assert list(absent_objects_table({"A": report(10, {}, 0)}, "shifted split").columns) == [
        "shifted split",
        "A",
    ]
    with pytest.raises(ValueError, match="reports is empty"):
        absent_objects_table({})
