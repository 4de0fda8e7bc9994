"""Chapter 8–9 evaluation figures and the sentences generated from measured tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from captionlib.evaluate.localization import LocalizationSummary  # noqa: E402
from captionlib.viz import evaluation as ev  # noqa: E402

SETTING = "captioner B (in-distribution)"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _summary(level: float, pairs: int = 4) -> LocalizationSummary:
    thresholds = tuple(round(0.1 * i, 1) for i in range(10))
    return LocalizationSummary(
        thresholds=thresholds,
        correctness=np.linspace(level, 1.0, 10),
        correctness_std=np.full(10, 0.2),
        pointing=level,
        energy=level,
        pairs=pairs,
    )


def test_compare_methods_below_above_and_best() -> None:
    table = {SETTING: {"lrp": 0.47, "attention": 0.57, "gradcam": 0.40, "gradient_x_input": 0.7}}
    text = ev.compare_methods(table, "pointing accuracy")
    assert text == (
        "On captioner B (in-distribution), LRP's pointing accuracy (0.47) is below attention's "
        "(0.57) and above Grad-CAM's (0.40); the best is gradient × input (0.70)."
    )


def test_compare_methods_tie_after_rounding_and_reference_best() -> None:
    table = {"A": {"lrp": 0.801, "attention": 0.799, "gradcam": 0.3}}
    text = ev.compare_methods(table, "energy")
    assert "equal to attention's (0.80)" in text
    assert "above Grad-CAM's (0.30)" in text
    assert "the best are LRP and attention (0.80)." in text
    alone = ev.compare_methods({"A": {"lrp": 0.9, "attention": 0.2}}, "energy")
    assert alone.endswith("is above attention's (0.20); it is the best of all methods.")


def test_compare_methods_lower_is_better_and_one_sentence_per_setting() -> None:
    table = {"A": {"lrp": 0.1, "gradcam": 0.2}, "B": {"lrp": 0.3, "attention": 0.3}}
    text = ev.compare_methods(table, "error", higher_is_better=False)
    assert text.count("On ") == 2
    assert "On A, LRP's error (0.10) is below Grad-CAM's (0.20); it is the best" in text
    assert "On B, LRP's error (0.30) is equal to attention's (0.30); the best are" in text


def test_compare_methods_bad_input() -> None:
    with pytest.raises(ValueError, match="no 'lrp' entry"):
        ev.compare_methods({"A": {"attention": 0.5}}, "energy")
    with pytest.raises(ValueError, match="empty"):
        ev.compare_methods({}, "energy")


def test_compare_with_baseline_groups_by_standard_errors() -> None:
    base = np.array([0.0, 0.1, -0.1, 0.0])  # mean 0, s.e. ≈ 0.035
    drops = {
        "A": {
            "lrp": torch.tensor([0.5, 0.6, 0.4, 0.5]),  # far above
            "attention": torch.tensor([0.0, 0.1, 0.0, -0.1]),  # same mean as random
            "gradient": np.array([-0.5, -0.6, -0.4, -0.5]),  # far below
            "random": base,
        }
    }
    text = ev.compare_with_baseline(drops)
    assert "mean drop was 0.000 with random rankings" in text
    assert "clearly more probability than random rankings for LRP (0.500)" in text
    assert "no clear difference from random for attention (0.000)" in text
    assert "clearly less for the plain gradient (-0.500)" in text
    with pytest.raises(ValueError, match="no 'random' entry"):
        ev.compare_with_baseline({"A": {"lrp": base}})


def test_correlation_statement_splits_at_threshold() -> None:
    rows = {"guided_backprop": {"random captioner": 0.91}, "lrp": {"random captioner": 0.05}}
    text = ev.correlation_statement(rows, "random captioner")
    assert text == (
        "After randomisation (random captioner), the maps of guided backprop (0.91) keep a mean "
        "rank correlation of at least 0.5 with the trained model's; the others stay below it: "
        "LRP (0.05)."
    )
    low = ev.correlation_statement({"lrp": {"c": 0.1}, "attention": {"c": 0.2}}, "c")
    assert low == (
        "After randomisation (c), every method's mean rank correlation is below 0.5: "
        "LRP (0.10) and attention (0.20)."
    )
    with pytest.raises(ValueError, match="missing for lrp"):
        ev.correlation_statement({"lrp": {}}, "random captioner")


def test_correctness_curves_one_panel_per_setting_with_error_bars() -> None:
    summaries = {
        "A": {"lrp": _summary(0.4), "attention": _summary(0.2)},
        "B": {"lrp": _summary(0.5)},
    }
    figure = ev.correctness_curves(summaries)
    assert isinstance(figure, Figure)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["A", "B"]
    assert len(axes[0].containers) == 2  # one errorbar container per method
    line = axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), np.linspace(0.4, 1.0, 10))
    with pytest.raises(ValueError, match="has no pairs"):
        ev.correctness_curves({"A": {"lrp": _summary(0.4, pairs=0)}})


def test_drop_boxplots_and_bad_values() -> None:
    drops = {"A": {"lrp": torch.tensor([0.1, 0.2, 0.3]), "random": np.array([0.0, 0.1, -0.1])}}
    figure = ev.drop_boxplots(drops)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["lrp", "random"]
    with pytest.raises(ValueError, match="NaN"):
        ev.drop_boxplots({"A": {"lrp": np.array([np.nan])}})


def test_method_panels_and_word_relevance_panels() -> None:
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    maps = {"lrp": torch.randn(3, 16, 16), "gradcam": torch.rand(14, 14)}
    figure = ev.method_panels(image, maps, image_title="word: dog", columns=2)
    visible = [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible[:3]] == ["word: dog", "lrp", "gradcam"]
    with pytest.raises(ValueError, match="maps is empty"):
        ev.method_panels(image, {})
    words = ["a", "red", "boat"]
    strips = ev.word_relevance_panels(
        words, {"LRP": torch.randn(3, 3).tril(), "grad": torch.randn(3, 3).tril()}
    )
    assert [ax.get_title() for ax in strips.axes[:2]] == ["LRP", "grad"]


def test_mean_se_table_cells_and_missing_methods() -> None:
    values = np.array([0.2, 0.4, 0.6, 0.8])  # mean 0.5, std (n − 1) 0.2582, s.e. 0.1291
    assert ev.mean_with_error(values) == "0.50 ± 0.13"
    assert ev.mean_with_error(torch.tensor([0.25]), digits=3) == "0.250 ± 0.000"
    table = ev.mean_se_table(
        {"drop": {"lrp": values, "random": [0.0, 0.1]}, "vanished": {"lrp": [1.0, 0.0]}}
    )
    assert list(table) == ["lrp", "random"]
    assert table["lrp"] == {"drop": "0.50 ± 0.13", "vanished": "0.50 ± 0.50"}
    assert table["random"] == {"drop": "0.05 ± 0.05", "vanished": None}
    with pytest.raises(ValueError, match="columns is empty"):
        ev.mean_se_table({})
    with pytest.raises(ValueError, match="is empty"):
        ev.mean_with_error([])


def test_methods_table_names_rows_as_the_prose_does() -> None:
    table = ev.methods_table(
        ev.mean_se_table({"drop": {"lrp": [0.4, 0.6], "gradient": [0.1, 0.1], "gradcam": [0.2]}})
    )
    assert list(table.columns) == ["method", "drop"]
    assert table.cells == (
        ("LRP", "0.50 ± 0.10"),
        ("plain gradient", "0.10 ± 0.00"),
        ("Grad-CAM", "0.20 ± 0.00"),
    )
    assert "| LRP | 0.50 ± 0.10 |" in table.to_markdown()
    assert ev.methods_table({"random": {"r": 0.25}}, digits=1).cells == (("random", "0.2"),)
    with pytest.raises(ValueError, match="rows is empty"):
        ev.methods_table({})


def test_reference_summary_counts_wins_ties_and_losses() -> None:
    tables = {
        "pointing": {"A": {"lrp": 0.6, "attention": 0.4, "gradcam": 0.7, "gradient": 0.5}},
        "energy": {
            "A": {"lrp": 0.30, "attention": 0.301, "gradcam": 0.1},
            "B": {"lrp": 0.5, "attention": 0.2, "gradcam": 0.2},
        },
    }
    text = ev.reference_summary(tables)
    assert text.startswith("Over the 3 (measure, setting) tables, LRP is above attention's")
    assert "above attention's in 2, equal in 1 and below in 0" in text
    assert "above Grad-CAM's in 2, equal in 0 and below in 1" in text
    assert "it is the best method (ties included) in 2." in text
    assert text.endswith("Methods above LRP (tables per measure): Grad-CAM in 1 (pointing: 1).")
    with pytest.raises(ValueError, match="no 'lrp' entry"):
        ev.reference_summary({"pointing": {"A": {"attention": 0.1}}})
    with pytest.raises(ValueError, match="tables is empty"):
        ev.reference_summary({})
