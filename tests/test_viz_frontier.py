"""Chapter 11's frontier comparisons, figure, table and statement on hand-made numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from captionlib.viz.frontier import (  # noqa: E402
    frontier_comparisons,
    frontier_figure,
    frontier_statement,
    frontier_table,
)

# caution on both checkpoints: recall 0.2 → CHAIRs 0.1, 0.6 → 0.3, 1.0 → 0.5 (every seed)
CURVE = [{"recall": r, "CHAIRs": c} for r, c in ((1.0, 0.5), (0.6, 0.3), (0.2, 0.1))]
SEEDS = 3


def _runs(recall: float, chairs: list[float]) -> list[dict[str, float]]:
    return [{"recall": recall, "CHAIRs": chair} for chair in chairs]


def _study(lrp_chairs: list[float]):
    sweeps = {"adaptive": {stage: {"shifted": [CURVE] * SEEDS} for stage in ("before", "control")}}
    scores = {
        "adaptive": {
            "before": {"shifted": _runs(1.0, [0.5] * SEEDS)},
            "control": {"shifted": _runs(1.0, [0.5, 0.52, 0.48])},
            "lrp": {"shifted": _runs(0.4, lrp_chairs)},
        }
    }
    contrast = {"adaptive": {"shifted": _runs(0.6, [0.40, 0.41, 0.39])}}  # caution: 0.3
    return sweeps, contrast, scores


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_comparisons_table_and_statement_say_where_each_method_lies() -> None:
    found = frontier_comparisons(*_study([0.10, 0.11, 0.09]))  # caution at recall 0.4: 0.2
    lrp, contrast = found["adaptive"]["shifted"]["lrp"], found["adaptive"]["shifted"]["contrast"]
    assert lrp.verdict == "above" and lrp.frontier_chair[0] == pytest.approx(0.2)
    assert lrp.gap[0] == pytest.approx(0.1)
    assert contrast.verdict == "below" and contrast.gap[0] == pytest.approx(-0.1)
    names = {"adaptive": "captioner A"}
    text = frontier_statement(found, names=names)
    assert text.startswith("On the shifted split LRP-IFT is more than saying less")
    assert "LRP-IFT reaches recall 0.400 ± 0.000 at CHAIRs 0.100 ± 0.010" in text
    assert "where caution reaches 0.200 ± 0.000, so it lies above the caution frontier" in text
    assert "contrastive decoding reaches recall 0.600 ± 0.000" in text
    assert "below the caution frontier" in text
    rows = frontier_table(found, names=names).to_markdown()
    assert "| captioner A, shifted | LRP-IFT | 0.400 ± 0.000 | 0.100 ± 0.010 |" in rows
    on = frontier_statement(frontier_comparisons(*_study([0.19, 0.22, 0.20])), names=names)
    assert on.startswith("On the shifted split LRP-IFT buys nothing that caution alone does not")
    assert "on the caution frontier: within the seed spread" in on


def test_a_recall_beyond_the_caution_points_is_flagged() -> None:
    sweeps, contrast, scores = _study([0.10, 0.11, 0.09])
    scores["adaptive"]["lrp"]["shifted"] = _runs(1.1, [0.45, 0.46, 0.44])
    found = frontier_comparisons(sweeps, contrast, scores)
    assert not found["adaptive"]["shifted"]["lrp"].covered
    assert "outside the recall range of the caution points" in frontier_statement(found)
    assert "above *" in frontier_table(found).to_markdown()


def test_the_figure_has_one_panel_per_captioner_and_split() -> None:
    sweeps, contrast, scores = _study([0.10, 0.11, 0.09])
    figure = frontier_figure(sweeps, contrast, scores, names={"adaptive": "captioner A"})
    (ax,) = figure.axes
    assert ax.get_title().startswith("captioner A, shifted split")
    # one line per distinct sweep (the three seeds' equal sweeps are drawn once per checkpoint)
    assert len(ax.lines) >= 2
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "LRP-IFT" in labels and "contrastive decoding" in labels
    assert "caution on before (λ sweep)" in labels
