"""The caution frontier of chapter 11: figure, table and measured statement.

::

    study = recipes.caution_frontier()                      # sweeps and contrastive points
    results = recipes.finetuning_results()                  # before / control / LRP-IFT
    found = frontier_comparisons(study.sweeps, study.contrast, results.scores)
    frontier_figure(study.sweeps, study.contrast, results.scores)
    display(frontier_table(found))
    display(Markdown(frontier_statement(found)))

A method lies "above" the caution frontier when it has clearly less CHAIRs than caution
reaches at the same recall (the gap exceeds the sum of the two standard deviations over
seeds), "below" when clearly more, "on" otherwise (`captionlib.evaluate.frontier`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from captionlib.evaluate.frontier import FrontierComparison, compare_to_frontier, seed_frontiers
from captionlib.viz.finetune import METHOD_COLOURS, SPLIT_NAMES, STAGE_NAMES
from captionlib.viz.style import COLUMN_WIDTH, TITLE_SIZE, legend_below, styled, wrap
from captionlib.viz.tables import Table

Points = Sequence[Mapping[str, float]]  # one metrics dict per seed
Sweeps = Mapping[str, Mapping[str, Mapping[str, Sequence[Points]]]]  # kind → stage → split → seeds
Scores = Mapping[str, Mapping[str, Mapping[str, Points]]]  # kind → stage → split → seeds
Contrast = Mapping[str, Mapping[str, Points]]  # kind → split → seeds

COMPARED = {"lrp": "LRP-IFT", "contrast": "contrastive decoding"}
TABLE_LABELS = {"lrp": "LRP-IFT", "contrast": "VCD"}  # short: the table has seven columns
POINT_COLOURS = {"before": "black", **METHOD_COLOURS, "contrast": "tab:purple"}
POINT_MARKERS = {"before": "s", "control": "o", "lrp": "D", "contrast": "^"}
CURVE_COLOURS = {"before": "0.45", "control": "tab:cyan"}


def _points(runs: Points, metric: str) -> list[tuple[float, float]]:
    return [(float(run["recall"]), float(run[metric])) for run in runs]


def frontier_comparisons(
    sweeps: Sweeps, contrast: Contrast, scores: Scores, metric: str = "CHAIRs"
) -> dict[str, dict[str, dict[str, FrontierComparison]]]:
    """kind → split → "lrp" / "contrast" → its per-seed (recall, `metric`) points against
    the per-seed caution frontiers (`seed_frontiers` of the before and control sweeps).

    sweeps: `FrontierStudy.sweeps`; contrast: `FrontierStudy.contrast`; scores:
    `FinetuningResults.scores` (its "lrp" runs, seed for seed with the sweeps)."""
    found: dict[str, dict[str, dict[str, FrontierComparison]]] = {}
    for kind, stages in sweeps.items():
        splits = next(iter(stages.values()))
        for split in splits:
            frontiers = seed_frontiers(
                {stage: runs[split] for stage, runs in stages.items()}, metric
            )
            methods = {"lrp": scores[kind]["lrp"][split], "contrast": contrast[kind][split]}
            found.setdefault(kind, {})[split] = {
                method: compare_to_frontier(_points(runs, metric), frontiers)
                for method, runs in methods.items()
            }
    return found


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


@styled
def frontier_figure(
    sweeps: Sweeps,
    contrast: Contrast,
    scores: Scores,
    names: Mapping[str, str] | None = None,
    metric: str = "CHAIRs",
) -> Figure:
    """Recall against `metric` per captioner (rows) and split (columns).

    Lines: the caution sweeps (object-word logits lowered by λ, one line per checkpoint and
    seed; λ = 0 at the right end) of the cross-entropy checkpoint (grey) and of the control
    (cyan). Markers: before, control, LRP-IFT and visual contrastive decoding, mean over
    seeds with ± one standard deviation (n − 1) as error bars in both directions.
    """
    names = names or {}
    kinds = list(sweeps)
    splits = list(next(iter(sweeps[kinds[0]].values())))
    figure, grid = plt.subplots(
        len(kinds),
        len(splits),
        figsize=(COLUMN_WIDTH, 2.9 * len(kinds) + 0.9),
        layout="constrained",
        squeeze=False,
    )
    legend: dict[str, object] = {}
    for row, kind in enumerate(kinds):
        for column, split in enumerate(splits):
            ax = grid[row, column]
            for stage, runs in sweeps[kind].items():
                label = f"caution on {STAGE_NAMES.get(stage, stage)} (λ sweep)"
                drawn = set()
                for run in runs[split]:
                    recall = tuple(point["recall"] for point in run)
                    curve = (recall, tuple(point[metric] for point in run))
                    if curve in drawn:  # the same checkpoint listed for several seeds
                        continue
                    drawn.add(curve)
                    (line,) = ax.plot(
                        recall,
                        [point[metric] for point in run],
                        "-",
                        marker=".",
                        color=CURVE_COLOURS.get(stage),
                        linewidth=1,
                        alpha=0.8,
                        label=label,
                    )
                    legend.setdefault(label, line)
            markers = {stage: scores[kind][stage][split] for stage in ("before", "control", "lrp")}
            markers["contrast"] = contrast[kind][split]
            for stage, runs in markers.items():
                recall = _mean_std([run["recall"] for run in runs])
                value = _mean_std([run[metric] for run in runs])
                label = COMPARED.get(stage, STAGE_NAMES.get(stage, stage))
                handle = ax.errorbar(
                    recall[0],
                    value[0],
                    xerr=recall[1],
                    yerr=value[1],
                    fmt=POINT_MARKERS[stage],
                    color=POINT_COLOURS[stage],
                    markersize=6,
                    capsize=2,
                    label=label,
                    zorder=3,
                )
                legend.setdefault(label, handle)
            title = f"{names.get(kind, kind)}, {SPLIT_NAMES.get(split, split)}"
            ax.set_title(
                wrap(title, COLUMN_WIDTH / len(splits) - 0.3, TITLE_SIZE), fontsize=TITLE_SIZE
            )
            ax.set_xlabel("recall (higher is better)")
            if column == 0:
                ax.set_ylabel(f"{metric} (lower is better)")
    legend_below(figure, legend, 3)
    return figure


def _value(pair: tuple[float, float], digits: int) -> str:
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def frontier_table(
    found: Mapping[str, Mapping[str, Mapping[str, FrontierComparison]]],
    names: Mapping[str, str] | None = None,
    digits: int = 3,
    metric: str = "CHAIRs",
) -> Table:
    """One row per (captioner, split, method; VCD: visual contrastive decoding): its recall
    and `metric`, caution's `metric` at the same recall (linear between sweep points), the gap
    (caution minus method), all mean ± std over seeds, and where the method lies against the
    frontier."""
    names = names or {}
    rows = []
    for kind, splits in found.items():
        for split, methods in splits.items():
            for method, comparison in methods.items():
                rows.append(
                    [
                        f"{names.get(kind, kind)}, {split}",
                        TABLE_LABELS.get(method, method),
                        _value(comparison.recall, digits),
                        _value(comparison.chair, digits),
                        _value(comparison.frontier_chair, digits),
                        _value(comparison.gap, digits),
                        comparison.verdict + ("" if comparison.covered else " *"),
                    ]
                )
    header = [
        "captioner, split",
        "method",
        "recall",
        metric,
        f"caution's {metric} at that recall",
        "gap",
        "against the frontier",
    ]
    return Table(header, rows, align=["l", "l", "r", "r", "r", "r", "l"])


def _comparison_clause(
    method: str, comparison: FrontierComparison, digits: int, metric: str
) -> str:
    where = {
        "above": f"above the caution frontier: clearly less {metric} than caution at equal recall",
        "below": f"below the caution frontier: clearly more {metric} than caution at equal recall",
        "on": "on the caution frontier: within the seed spread of caution at equal recall",
    }[comparison.verdict]
    clause = (
        f"{COMPARED[method]} reaches recall {_value(comparison.recall, digits)} at {metric} "
        f"{_value(comparison.chair, digits)}, where caution reaches "
        f"{_value(comparison.frontier_chair, digits)}, so it lies {where}"
    )
    if not comparison.covered:
        clause += (
            " — in at least one seed its recall lies outside the recall range of the caution "
            "points, where the frontier's end point stands in"
        )
    return clause


def frontier_statement(
    found: Mapping[str, Mapping[str, Mapping[str, FrontierComparison]]],
    names: Mapping[str, str] | None = None,
    digits: int = 3,
    metric: str = "CHAIRs",
) -> str:
    """Chapter 11's answer, one paragraph per split: per captioner, LRP-IFT's and
    contrastive decoding's recall and `metric` with the caution frontier's `metric` at the
    same recall (mean ± std over seeds) and whether each lies above, on or below it; then
    how many of the LRP-IFT comparisons are above the frontier."""
    names = names or {}
    by_split: dict[str, list[str]] = {}
    verdicts: dict[str, list[str]] = {}
    for kind, splits in found.items():
        for split, methods in splits.items():
            clauses = [
                _comparison_clause(method, comparison, digits, metric)
                for method, comparison in methods.items()
            ]
            by_split.setdefault(split, []).append(
                f"For {names.get(kind, kind)}, " + "; ".join(clauses) + "."
            )
            if "lrp" in methods:
                verdicts.setdefault(split, []).append(methods["lrp"].verdict)
    paragraphs = []
    for split, sentences in by_split.items():
        where = SPLIT_NAMES.get(split, f"{split} split")
        lrp = verdicts.get(split, [])
        above = lrp.count("above")
        if above == len(lrp):
            summary = f"On the {where} LRP-IFT is more than saying less for every captioner."
        elif above == 0:
            summary = (
                f"On the {where} LRP-IFT buys nothing that caution alone does not: for no "
                "captioner does it lie above the caution frontier."
            )
        else:
            summary = (
                f"On the {where} LRP-IFT lies above the caution frontier for {above} of the "
                f"{len(lrp)} captioners."
            )
        paragraphs.append(" ".join([summary, *sentences]))
    return "\n\n".join(paragraphs)
