"""Figures, tables and measured statements for LRP-inference fine-tuning (chapter 11).

::

    display(settings_table(recipes.FINETUNING))                   # the fine-tuning settings
    weight_panels(words, (w_first, w_second), ("ĉ_t", "h2_t"))   # the weights of one caption
    loss_curves({"captioner A": {"control": [h0, h1, h2], "lrp": [...]}})
    stats = seed_statistics(results.scores)                      # mean and std over seeds
    display(results_table(stats))                                 # a Table, mean ± std
    display(Markdown(finetune_statement(stats)))                  # the finding, per split

The finding is generated from the measured numbers, so the prose matches the table beside
it. "Clearly" better or worse means that the means differ by more than the sum of the two
standard deviations over seeds; anything smaller is reported as within the spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from captionlib.finetune import FinetuneConfig, FinetuneHistory
from captionlib.viz.attention import image_array
from captionlib.viz.style import (
    COLUMN_WIDTH,
    DIVERGING_CMAP,
    FONT_SIZE,
    TITLE_SIZE,
    legend_below,
    panel_grid,
    styled,
    wrap,
)
from captionlib.viz.tables import Table

METRICS = ("BLEU-4", "CIDEr-D", "precision", "recall", "F1", "CHAIRi", "CHAIRs")
LOWER_IS_BETTER = frozenset({"CHAIRi", "CHAIRs"})
HALLUCINATION_METRICS = ("precision", "CHAIRi", "CHAIRs")
SPLIT_NAMES = {"test": "in-distribution test split", "shifted": "shifted split"}
STAGE_NAMES = {"before": "before", "control": "control", "lrp": "LRP-IFT"}
METHOD_COLOURS = {"control": "tab:blue", "lrp": "tab:red"}

SETTING_MEANINGS = {
    "method": "lrp (LRP-IFT) or control (plain cross-entropy)",
    "epochs": "passes over the training images",
    "batch_size": "images per batch",
    "captions_per_image": "captions drawn per image and epoch",
    "lr": "Adam learning rate of the decoder",
    "encoder_lr": "Adam learning rate of the encoder",
    "betas": "Adam betas",
    "grad_clip": "gradient values clamped to ± this",
    "epsilon": "ε of the output layer's ε-rule",
    "normalization": "R / max|R| per term (separate) or over both (joint)",
    "seed": "data order, caption drawn, dropout",
}

Stats = dict[str, dict[str, dict[str, dict[str, tuple[float, float]]]]]


def _setting(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(_setting(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_table(config: FinetuneConfig, skip: Sequence[str] = ("method", "seed")) -> Table:
    """One row per setting of a fine-tuning config: name, value, meaning (chapter 11).

    `skip` leaves out the fields that differ between the runs of a comparison; floats are
    shown with :g ("1e-4" as 0.0001), pairs as "0.8, 0.999".
    """
    rows = [
        [f"`{item.name}`", _setting(getattr(config, item.name)), SETTING_MEANINGS.get(item.name)]
        for item in fields(config)
        if item.name not in skip
    ]
    return Table(["setting", "value", "meaning"], rows, align=["l", "l", "l"])


@styled
def weight_panels(
    words: Sequence[str],
    weights: tuple[Tensor, Tensor],
    names: tuple[str, str] = ("ĉ_t", "h2_t"),
    max_dims: int | None = None,
    image: Tensor | np.ndarray | None = None,
    image_title: str = "image",
) -> Figure:
    """The LRP-IFT weights of one caption: one panel per readout term (chapter 11).

    words: the L explained (predicted) words; weights: two (L, D) tensors in [0, 2]. Colours
    are the raw weights on a fixed scale centred at 1 (white: unchanged, red: amplified up
    to ×2, blue: shrunk towards 0); stop-word rows are all 1. max_dims: show only the first
    dimensions. image: optional (3, H, W) uint8 image drawn in a first panel.
    """
    if len(weights) != 2:
        raise ValueError(f"weights must be a pair of (L, D) tensors, got {len(weights)}")
    arrays = [w.detach().cpu().double().numpy() for w in weights]
    for name, array in zip(names, arrays, strict=True):
        if array.ndim != 2 or array.shape[0] != len(words):
            raise ValueError(
                f"weights of {name} must be ({len(words)}, D), got shape {array.shape}"
            )
    if max_dims is not None:
        arrays = [array[:, :max_dims] for array in arrays]
    panels = 2 if image is None else 3
    height = max(0.3 * len(words) + 2.2, 3.4)
    widths = [1.0, 1.6, 1.6][3 - panels :]
    figure, all_axes = plt.subplots(
        1, panels, figsize=(COLUMN_WIDTH, height), layout="constrained", width_ratios=widths
    )
    axes = all_axes[-2:]
    if image is not None:
        all_axes[0].imshow(image_array(image))
        panel = COLUMN_WIDTH * widths[0] / sum(widths)
        all_axes[0].set_title(wrap(image_title, panel), fontsize=FONT_SIZE)
        all_axes[0].set_xticks([])
        all_axes[0].set_yticks([])
    axes[1].sharey(axes[0])
    for ax, name, array in zip(axes, names, arrays, strict=True):
        image = ax.imshow(
            array, cmap=DIVERGING_CMAP, vmin=0.0, vmax=2.0, aspect="auto", interpolation="nearest"
        )
        ax.set_title(f"weights on {name}", fontsize=TITLE_SIZE)
        ax.set_xlabel("feature dimension d")
        ax.set_yticks(range(len(words)), words)
    axes[1].tick_params(labelleft=False)
    axes[0].set_ylabel("explained (predicted) word")
    bar = figure.colorbar(image, ax=axes, location="bottom", shrink=0.7, aspect=35)
    bar.set_label("w = 1 + R / max|R| (1: unchanged)", fontsize=FONT_SIZE)
    return figure


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, values.size))
    return np.convolve(values, np.ones(window) / window, mode="valid")


@styled
def loss_curves(
    histories: Mapping[str, Mapping[str, Sequence[FinetuneHistory]]],
    window: int = 10,
    columns: int = 2,
) -> Figure:
    """Per-batch training losses of the fine-tuning runs, one panel per captioner.

    histories: captioner → method ("control", "lrp") → one history per seed. Solid: the
    plain cross-entropy CE(y, y*) that both methods contain; dashed: LRP-IFT's extra
    CE(ỹ, y*). Each line is the mean over seeds of a moving average over `window` batches;
    the band spans the seeds' minimum and maximum. `columns` panels per row (at most 4);
    one legend under the panels.
    """
    if not histories:
        raise ValueError("histories is empty: pass {captioner: {method: [history, ...]}}")
    rows, columns = panel_grid(len(histories), columns)
    figure, grid = plt.subplots(
        rows,
        columns,
        figsize=(COLUMN_WIDTH if columns > 1 else 4.5, 2.9 * rows + 0.9),
        layout="constrained",
        squeeze=False,
    )
    axes = list(grid.ravel())
    for ax in axes[len(histories) :]:
        ax.remove()
    legend: dict[str, object] = {}
    for index, (ax, (name, methods)) in enumerate(zip(axes, histories.items(), strict=False)):
        for method, runs in methods.items():
            if not runs or not runs[0].loss:
                raise ValueError(f"histories[{name!r}][{method!r}] has no recorded batches")
            colour = METHOD_COLOURS.get(method)
            parts = [("cross_entropy", "-", "CE(y)")]
            if method == "lrp":
                parts.append(("extra", "--", "CE(ỹ)"))
            for part, style, what in parts:
                curves = []
                for run in runs:
                    plain = np.asarray(run.cross_entropy)
                    values = np.asarray(run.loss) - plain if part == "extra" else plain
                    curves.append(_moving_average(values, window))
                stacked = np.stack(curves)
                steps = np.arange(stacked.shape[1]) + min(window, len(runs[0].loss))
                label = f"{STAGE_NAMES.get(method, method)}: {what}"
                (line,) = ax.plot(steps, stacked.mean(0), style, color=colour, label=label)
                ax.fill_between(steps, stacked.min(0), stacked.max(0), color=colour, alpha=0.15)
                legend.setdefault(label, line)
        ax.set_title(wrap(name, COLUMN_WIDTH / columns - 0.3, TITLE_SIZE), fontsize=TITLE_SIZE)
        ax.set_xlabel("batch")
        if index % columns == 0:
            ax.set_ylabel(f"loss per word\n(moving average, {window} batches)")
    legend_below(figure, legend, 3)
    return figure


def seed_statistics(
    scores: Mapping[str, Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]]],
    metrics: Sequence[str] = METRICS,
) -> Stats:
    """Mean and standard deviation (n − 1; 0 for one run) over seeds.

    scores: captioner → stage → split → one metrics dict per seed. Returns
    captioner → split → stage → metric → (mean, std).
    """
    out: Stats = {}
    for kind, stages in scores.items():
        for stage, splits in stages.items():
            for split, runs in splits.items():
                if not runs:
                    raise ValueError(f"scores[{kind!r}][{stage!r}][{split!r}] has no runs")
                row = out.setdefault(kind, {}).setdefault(split, {}).setdefault(stage, {})
                for metric in metrics:
                    values = np.array([run[metric] for run in runs], dtype=np.float64)
                    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
                    row[metric] = (float(values.mean()), std)
    return out


def results_table(
    stats: Stats,
    metrics: Sequence[str] = METRICS,
    digits: int = 3,
    names: Mapping[str, str] | None = None,
) -> Table:
    """One row per (captioner, split, stage), cells "mean ± std" over seeds (chapter 11:
    every stage, the cross-entropy checkpoint too, has one run per training seed)."""
    names = names or {}
    rows = []
    for kind, splits in stats.items():
        for split, stages in splits.items():
            for stage, row in stages.items():
                cells = []
                for metric in metrics:
                    mean, std = row[metric]
                    cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
                label = STAGE_NAMES.get(stage, stage)
                rows.append([names.get(kind, kind), split, label, *cells])
    align = ["l", "l", "l", *("r" for _ in metrics)]
    return Table(["captioner", "split", "model", *metrics], rows, align=align)


def compare(
    row: Mapping[str, tuple[float, float]], other: Mapping[str, tuple[float, float]], metric: str
) -> str:
    """ "better", "worse" or "within" for `row` against `other` on `metric` (clearly: the
    means differ by more than the sum of the two standard deviations)."""
    (mean, std), (other_mean, other_std) = row[metric], other[metric]
    gap = mean - other_mean
    if metric in LOWER_IS_BETTER:
        gap = -gap
    if abs(gap) <= std + other_std or gap == 0:
        return "within"
    return "better" if gap > 0 else "worse"


def _pairs(
    found: Sequence[tuple[str, str, float, float]], names: Mapping[str, str], digits: int
) -> str:
    # "captioner B: precision 0.726 vs 0.662, CHAIRs 0.315 vs 0.431; captioner A: …"
    kinds = list(dict.fromkeys(kind for kind, *_ in found))
    groups = []
    for kind in kinds:
        values = [
            f"{metric} {lrp:.{digits}f} vs {control:.{digits}f}"
            for other, metric, lrp, control in found
            if other == kind
        ]
        groups.append(f"{names.get(kind, kind)}: {', '.join(values)}")
    return "; ".join(groups)


Verdicts = dict[str, list[tuple[str, str, float, float]]]  # verdict → (kind, metric, lrp, control)


def _hallucination_sentence(
    where: str, verdicts: Verdicts, names: Mapping[str, str], digits: int
) -> str:
    # does LRP-IFT reduce hallucination more than the control on this split?
    found = {
        key: [item for item in items if item[1] in HALLUCINATION_METRICS]
        for key, items in verdicts.items()
    }
    total = sum(len(items) for items in found.values())
    better, worse = found["better"], found["worse"]
    if total == 0:
        return f"On the {where} the hallucination measures were not compared."
    if len(better) > total / 2 and not worse:
        return (
            f"On the {where} LRP-IFT reduces hallucination more than the control: it is clearly "
            f"better in {len(better)} of the {total} comparisons (LRP-IFT vs control, "
            f"{_pairs(better, names, digits)}) and clearly worse in none."
        )
    if not better and not worse:
        return (
            f"On the {where} LRP-IFT does not reduce hallucination more than the control: all "
            f"{total} comparisons are within the seed spread."
        )
    listed = [f"better: {_pairs(better, names, digits)}"] if better else []
    listed += [f"worse: {_pairs(worse, names, digits)}"] if worse else []
    return (
        f"On the {where} LRP-IFT does not clearly reduce hallucination more than the control: "
        f"it is clearly better in {len(better)} and clearly worse in {len(worse)} of the "
        f"{total} comparisons (LRP-IFT vs control; {'; '.join(listed)})."
    )


def _cost_sentence(verdicts: Verdicts, names: Mapping[str, str], digits: int, shown: bool) -> str:
    # where LRP-IFT is clearly worse or better on the metrics other than hallucination
    rest = {
        key: [item for item in items if item[1] not in HALLUCINATION_METRICS]
        for key, items in verdicts.items()
    }
    clauses = [
        f"clearly {key} on {_pairs(rest[key], names, digits)}"
        for key in ("worse", "better")
        if rest[key]
    ]
    if clauses:
        convention = "" if shown else " (LRP-IFT vs control)"
        return f"On the other metrics{convention} it is " + ", and ".join(clauses) + "."
    if any(rest.values()):
        return "On the other metrics it is within the seed spread of the control."
    return ""


def finetune_statement(
    stats: Stats,
    metrics: Sequence[str] = METRICS,
    digits: int = 3,
    names: Mapping[str, str] | None = None,
    costs: bool = True,
) -> str:
    """The finding of the results table, one paragraph per split (chapter 11): does LRP-IFT
    reduce hallucination more than the control, by how much, and (with `costs`) where it is
    clearly worse or better on the other metrics.

    stats: `seed_statistics`; names: captioner → name in the prose. Clearly better or worse:
    the means differ by more than the sum of the two standard deviations over seeds
    (`compare`). LRP-IFT "reduces hallucination more than the control" on a split only when
    it is clearly better in more than half of the hallucination comparisons (precision,
    CHAIRi, CHAIRs of every captioner) and clearly worse in none. Example: "On the shifted
    split LRP-IFT reduces hallucination more than the control: it is clearly better in 4 of
    the 6 comparisons (LRP-IFT vs control, captioner B: precision 0.726 vs 0.662, …) and
    clearly worse in none. On the other metrics it is clearly worse on captioner A: recall
    0.397 vs 0.443, …"
    """
    names = names or {}
    found: dict[str, Verdicts] = {}  # split → verdict → comparisons
    for kind, splits in stats.items():
        for split, stages in splits.items():
            if "lrp" not in stages or "control" not in stages:
                raise ValueError(f"stats[{kind!r}][{split!r}] needs 'lrp' and 'control' entries")
            lrp, control = stages["lrp"], stages["control"]
            verdicts = found.setdefault(split, {"better": [], "worse": [], "within": []})
            for metric in metrics:
                item = (kind, metric, lrp[metric][0], control[metric][0])
                verdicts[compare(lrp, control, metric)].append(item)
    paragraphs = []
    for split, verdicts in found.items():
        text = _hallucination_sentence(
            SPLIT_NAMES.get(split, f"{split} split"), verdicts, names, digits
        )
        if costs:
            shown = "LRP-IFT vs control" in text
            text = f"{text} {_cost_sentence(verdicts, names, digits, shown)}".rstrip()
        paragraphs.append(text)
    return "\n\n".join(paragraphs)
