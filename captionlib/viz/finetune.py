"""Figures, tables and measured statements for LRP-inference fine-tuning (chapter 11).

::

    display(settings_table(recipes.FINETUNING))                   # the fine-tuning settings
    weight_panels(words, (w_first, w_second), ("ĉ_t", "h2_t"))   # the weights of one caption
    loss_curves({"captioner A": {"control": [h0, h1, h2], "lrp": [...]}})
    stats = seed_statistics(results.scores)                      # mean and std over seeds
    display(results_table(stats))                                 # a Table, mean ± std
    print(finetune_statement(stats))                              # what the numbers show

The statements are generated from the measured numbers, so the prose matches the table
printed above it. "Clearly" better or worse means that the means differ by more than the sum
of the two standard deviations over seeds; anything smaller is reported as within the spread.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import fields

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from captionlib.finetune import FinetuneConfig, FinetuneHistory
from captionlib.viz.attention import image_array
from captionlib.viz.tables import Table

METRICS = ("BLEU-4", "CIDEr-D", "precision", "recall", "F1", "CHAIRi", "CHAIRs")
LOWER_IS_BETTER = frozenset({"CHAIRi", "CHAIRs"})
HALLUCINATION_METRICS = ("precision", "CHAIRi", "CHAIRs")
FAMILIES = (
    "the hallucination measures (precision, CHAIRi, CHAIRs)",
    "the sentence metrics (BLEU-4, CIDEr-D)",
    "recall and F1",
)
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
    height = max(0.32 * len(words) + 1.6, 3.2)
    widths = [1.0, 1.6, 1.6][3 - panels :]
    figure, all_axes = plt.subplots(
        1, panels, figsize=(4.2 * panels, height), layout="constrained", width_ratios=widths
    )
    axes = all_axes[-2:]
    if image is not None:
        all_axes[0].imshow(image_array(image))
        all_axes[0].set_title(textwrap.fill(image_title, 36), fontsize=9)
        all_axes[0].set_xticks([])
        all_axes[0].set_yticks([])
    axes[1].sharey(axes[0])
    for ax, name, array in zip(axes, names, arrays, strict=True):
        image = ax.imshow(
            array, cmap="bwr", vmin=0.0, vmax=2.0, aspect="auto", interpolation="nearest"
        )
        ax.set_title(f"weights on {name}")
        ax.set_xlabel("feature dimension d")
        ax.set_yticks(range(len(words)), words)
    axes[0].set_ylabel("explained (predicted) word")
    figure.colorbar(image, ax=axes, label="w = 1 + R / max|R|", shrink=0.8)
    return figure


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, values.size))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def loss_curves(
    histories: Mapping[str, Mapping[str, Sequence[FinetuneHistory]]], window: int = 10
) -> Figure:
    """Per-batch training losses of the fine-tuning runs, one panel per captioner.

    histories: captioner → method ("control", "lrp") → one history per seed. Solid: the
    plain cross-entropy CE(y, y*) that both methods contain; dashed: LRP-IFT's extra
    CE(ỹ, y*). Each line is the mean over seeds of a moving average over `window` batches;
    the band spans the seeds' minimum and maximum.
    """
    if not histories:
        raise ValueError("histories is empty: pass {captioner: {method: [history, ...]}}")
    figure, axes = plt.subplots(
        1, len(histories), figsize=(5.5 * len(histories), 3.6), layout="constrained", squeeze=False
    )
    for ax, (name, methods) in zip(axes[0], histories.items(), strict=True):
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
                ax.plot(steps, stacked.mean(0), style, color=colour, label=label)
                ax.fill_between(steps, stacked.min(0), stacked.max(0), color=colour, alpha=0.15)
        ax.set_title(name)
        ax.set_xlabel("batch")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel(f"loss per word (moving average, {window} batches)")
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
    """One row per (captioner, split, stage), cells "mean ± std" over seeds.

    A stage measured once (the checkpoint before fine-tuning) shows its single value.
    """
    names = names or {}
    rows = []
    for kind, splits in stats.items():
        for split, stages in splits.items():
            for stage, row in stages.items():
                cells = []
                for metric in metrics:
                    mean, std = row[metric]
                    cell = f"{mean:.{digits}f}"
                    if stage != "before":
                        cell += f" ± {std:.{digits}f}"
                    cells.append(cell)
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


def finetune_statement(
    stats: Stats,
    metrics: Sequence[str] = METRICS,
    digits: int = 3,
    names: Mapping[str, str] | None = None,
) -> str:
    """Sentences on what the table shows (chapter 11): LRP-IFT against the control per
    captioner and split, then per split a verdict on the hallucination measures (precision,
    CHAIRi, CHAIRs over all captioners), the sentence metrics (BLEU-4, CIDEr-D) and recall.

    LRP-IFT "reduces hallucination more than the control" on a split only when it is clearly
    better in more than half of the hallucination comparisons and clearly worse in none.
    """
    names = names or {}
    sentences = []
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for kind, splits in stats.items():
        for split, stages in splits.items():
            if "lrp" not in stages or "control" not in stages:
                raise ValueError(f"stats[{kind!r}][{split!r}] needs 'lrp' and 'control' entries")
            lrp, control = stages["lrp"], stages["control"]
            groups: dict[str, list[str]] = {"better": [], "worse": [], "within": []}
            for metric in metrics:
                verdict = compare(lrp, control, metric)
                groups[verdict].append(
                    f"{metric} {lrp[metric][0]:.{digits}f} vs {control[metric][0]:.{digits}f}"
                )
                family = _family(metric)
                tally = counts.setdefault(split, {}).setdefault(
                    family, {"better": 0, "worse": 0, "within": 0}
                )
                tally[verdict] += 1
            parts = []
            if groups["better"]:
                parts.append("clearly better than the control on " + "; ".join(groups["better"]))
            if groups["worse"]:
                parts.append("clearly worse on " + "; ".join(groups["worse"]))
            if groups["within"]:
                parts.append("within the seed spread on " + "; ".join(groups["within"]))
            where = f"{names.get(kind, kind)}, {split} split"
            sentences.append(f"On {where}, LRP-IFT is " + "; ".join(parts) + ".")
    verdicts = []
    for split, families in counts.items():
        text = f"On the {split} split, over all captioners, LRP-IFT is "
        details = []
        for family in sorted(families, key=_family_order):
            tally = families[family]
            total = sum(tally.values())
            details.append(
                f"clearly better in {tally['better']} and clearly worse in {tally['worse']} of "
                f"{total} comparisons on {family}"
            )
        text += "; ".join(details)
        hallucination = families.get(FAMILIES[0])
        if hallucination is not None:
            total = sum(hallucination.values())
            if hallucination["better"] > total / 2 and hallucination["worse"] == 0:
                text += ": here LRP-IFT reduces hallucination more than the control does."
            else:
                text += (
                    ": here LRP-IFT does not clearly beat the control at reducing hallucination."
                )
        else:
            text += "."
        verdicts.append(text)
    return " ".join(sentences) + "\n\n" + " ".join(verdicts)


def _family(metric: str) -> str:
    if metric in HALLUCINATION_METRICS:
        return FAMILIES[0]
    if metric in ("BLEU-4", "CIDEr-D"):
        return FAMILIES[1]
    if metric in ("recall", "F1"):
        return FAMILIES[2]
    return metric


def _family_order(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
