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


# hand-made per-item values: mean 0.6, standard error 0.041, so two methods with this spread
# differ clearly (two standard errors of the difference) when their means are > 0.115 apart
LRP = np.array([0.5, 0.6, 0.7, 0.6])


def test_compare_methods_winner_tie_and_loser() -> None:
    tables = {
        "pointing accuracy": {
            "A": {
                "lrp": LRP,
                "attention": torch.tensor(LRP - 0.4),  # LRP wins
                "gradcam": LRP - 0.05,  # a tie within the error
                "gradient_x_input": LRP + 0.3,  # LRP loses
            },
            "B": {"lrp": LRP, "attention": LRP - 0.4, "gradcam": LRP - 0.3},
        }
    }
    assert ev.compare_methods(tables) == (
        "LRP is clearly above attention in both measurements (by 0.40) and clearly above "
        "Grad-CAM in 1 of the 2 (by 0.30), within the error in 1. No other method is clearly "
        "above LRP in 1 of the 2 measurements; gradient × input is in 1 (pointing accuracy, on "
        "A; by up to 0.30)."
    )
    mixed = {"energy": {"A": {"lrp": LRP, "attention": LRP - 0.4, "gradcam": LRP}}}
    mixed["energy"]["B"] = {"lrp": LRP, "attention": LRP, "gradcam": LRP + 0.05}
    assert ev.compare_methods(mixed).startswith(
        "LRP is clearly above attention in 1 of the 2 measurements (by 0.40), within the error "
        "in 1; it is within the error of Grad-CAM in both."
    )


def test_compare_methods_reference_below_everywhere_and_only_the_second_sentence() -> None:
    tables = {
        "energy": {"A": {"lrp": LRP, "attention": LRP + 0.2}},
        "pointing": {"A": {"lrp": LRP, "attention": LRP + 0.5}},
    }
    assert ev.compare_methods(tables, others=("attention",), digits=1) == (
        "LRP is clearly below attention in both measurements (by up to 0.5). In each of the 2 "
        "measurements some method is clearly above LRP; attention is in 2 (energy and "
        "pointing, on A; by up to 0.5)."
    )
    alone = {"drop": {"A": {"lrp": LRP, "gradient": LRP - 0.3}, "B": {"lrp": LRP}}}
    assert ev.compare_methods(alone, others=()) == (
        "No other method is clearly above LRP in any of the 2 measurements."
    )


def test_compare_methods_bad_input() -> None:
    with pytest.raises(ValueError, match="no 'lrp' entry"):
        ev.compare_methods({"energy": {"A": {"attention": LRP}}})
    with pytest.raises(ValueError, match="tables is empty"):
        ev.compare_methods({})
    with pytest.raises(ValueError, match="NaN"):
        ev.compare_methods({"energy": {"A": {"lrp": [np.nan]}}})
    with pytest.raises(ValueError, match="standard_errors"):
        ev.compare_methods({"energy": {"A": {"lrp": LRP}}}, standard_errors=-1)


def test_compare_with_baseline_winner_tie_and_loser() -> None:
    base = np.array([0.0, 0.1, -0.1, 0.0])  # mean 0, s.e. ≈ 0.041
    drops = {
        "A": {
            "lrp": torch.tensor([0.5, 0.6, 0.4, 0.5]),  # far above
            "attention": np.array([0.0, 0.1, 0.0, -0.1]),  # the same mean as random: a tie
            "gradient": np.array([-0.5, -0.6, -0.4, -0.5]),  # far below
            "random": base,
        },
        "B": {"lrp": base + 0.6, "attention": base + 0.3, "gradient": base - 0.5, "random": base},
    }
    assert ev.compare_with_baseline(drops) == (
        "Ranking by LRP removes clearly more probability than random patches in both settings "
        "(by 0.500 to 0.600); attention is clearly above random in 1 and within the error of "
        "random in 1 of the 2 settings (gaps 0.000 to 0.300); the plain gradient is clearly "
        "below random in both settings (gaps -0.500)."
    )
    none = ev.compare_with_baseline({"A": {"attention": base, "random": base}}, what="deletions")
    assert none == (
        "No method's ranking removes clearly more probability than random deletions in every "
        "setting; attention is within the error of random in the one setting (gaps 0.000)."
    )
    everyone = ev.compare_with_baseline(
        {"A": {"lrp": base + 1, "gradcam": base + 2, "random": base}}
    )
    assert everyone.startswith("Ranking by every method removes clearly more probability")
    with pytest.raises(ValueError, match="no 'random' entry"):
        ev.compare_with_baseline({"A": {"lrp": base}})


def test_correlation_statement_splits_at_threshold() -> None:
    rows = {
        "guided_backprop": {"random captioner": 0.91},
        "lrp": {"random captioner": 0.05},
        "attention": {"random captioner": 0.22},
    }
    assert ev.correlation_statement(rows, "random captioner") == (
        "After randomisation (random captioner), guided backprop (0.91) keeps a mean rank "
        "correlation of at least 0.5 with the trained model's maps; every other method stays "
        "at or below 0.22."
    )
    low = ev.correlation_statement({"lrp": {"c": 0.1}, "attention": {"c": 0.2}}, "c")
    assert low == (
        "After randomisation (c), every method's mean rank correlation is below 0.5 (at most 0.20)."
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
    (legend,) = figure.legends  # one legend for all panels, outside them
    assert [text.get_text() for text in legend.get_texts()] == ["LRP", "attention"]
    with pytest.raises(ValueError, match="has no pairs"):
        ev.correctness_curves({"A": {"lrp": _summary(0.4, pairs=0)}})


def test_drop_boxplots_and_bad_values() -> None:
    drops = {"A": {"lrp": torch.tensor([0.1, 0.2, 0.3]), "random": np.array([0.0, 0.1, -0.1])}}
    figure = ev.drop_boxplots(drops)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["LRP", "random"]
    with pytest.raises(ValueError, match="NaN"):
        ev.drop_boxplots({"A": {"lrp": np.array([np.nan])}})


def test_method_panels_and_word_relevance_panels() -> None:
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    maps = {"lrp": torch.randn(3, 16, 16), "gradcam": torch.rand(14, 14)}
    figure = ev.method_panels(image, maps, image_title="word: dog", columns=2)
    visible = [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible[:3]] == ["word: dog", "LRP", "Grad-CAM"]
    lrp, gradcam = visible[1].images[0], visible[2].images[0]
    assert lrp.get_cmap().name == "bwr" and lrp.get_clim()[0] == -lrp.get_clim()[1]
    assert gradcam.get_cmap().name == "inferno" and gradcam.get_clim()[0] == 0.0
    scale = np.percentile(maps["gradcam"].numpy(), 99.5)
    assert visible[2].get_xlabel() == f"0 … {scale:.2g}"
    bars = [ax.get_xlabel() for ax in figure.axes if ax.get_xlabel().endswith("value / s")]
    assert bars == ["signed maps: value / s", "non-negative maps: value / s"]
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
