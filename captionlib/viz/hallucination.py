"""Figures and measured statements for debugging hallucinations (chapter 10).

::

    hallucination_counts({setting: words})          # hallucinated words per category
    auc_heatmap(aucs, title)                         # method × statistic ROC-AUC grid
    case_study(image, words, pixels, index, ...)     # one hallucinated word, pixels + words
    shift_statement(scores, metric)                  # "CHAIRi rises from … to …"
    auc_statement({setting: aucs})                   # the best statistic per setting

As in `captionlib.viz.evaluation`, sentences are generated from the measured numbers so the
prose always matches the tables printed above it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from captionlib.evaluate.diagnosis import AucResult, ObjectWord
from captionlib.viz.evaluation import method_name
from captionlib.viz.relevance import word_explanation
from captionlib.viz.style import (
    DIVERGING_CMAP,
    FONT_SIZE,
    TITLE_SIZE,
    caption,
    column_width,
    hatch_missing,
    method_title,
    missing_handle,
    styled,
    with_missing,
    wrap,
)

Array = Tensor | np.ndarray
STATISTIC_NAMES = {
    "mean": "mean",
    "positive_mean": "mean of R⁺",
    "max": "max",
    "q50": "median",
    "q90": "90th percentile",
    "q99": "99th percentile",
    "word_share": "share from preceding words",
    "context_share": "share of R⁺ off the objects",
    "probability": "word probability",
    "1-beta": "1 − β",
}


def statistic_name(statistic: str) -> str:
    """The name of a statistic in the book's prose ("q90" → "90th percentile")."""
    return STATISTIC_NAMES.get(statistic, statistic)


def _describe(method: str, statistic: str) -> str:
    if method == "model":
        return f"the model's {statistic_name(statistic)}"
    return f"{method_name(method)}'s {statistic_name(statistic)}"


@styled
def hallucination_counts(
    words: Mapping[str, Sequence[ObjectWord]], categories: Sequence[str] | None = None
) -> Figure:
    """Bar chart: hallucinated object words per category, one group of bars per setting.

    words: setting → the labelled object words of its captions. Counts are raw numbers of
    mentions (not normalised). The legend, under the axes, names the settings.
    """
    if not words:
        raise ValueError("words is empty: pass {setting: [ObjectWord, ...]}")
    counts = {
        setting: Counter(word.category for word in found if word.hallucinated)
        for setting, found in words.items()
    }
    if categories is None:
        totals = Counter()
        for counter in counts.values():
            totals.update(counter)
        categories = [name for name, _ in totals.most_common()]
    if not categories:
        raise ValueError("no hallucinated words to count")
    width = 0.8 / len(counts)
    figure, ax = plt.subplots(
        figsize=(column_width(max(5.0, 0.6 * len(categories) + 2)), 3.6), layout="constrained"
    )
    positions = np.arange(len(categories))
    for offset, (setting, counter) in enumerate(counts.items()):
        ax.bar(
            positions + (offset - (len(counts) - 1) / 2) * width,
            [counter.get(name, 0) for name in categories],
            width,
            label=setting,
        )
    ax.set_xticks(positions, categories, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylabel("hallucinated mentions")
    figure.legend(loc="outside lower center", ncols=min(2, len(counts)), fontsize=FONT_SIZE)
    ax.set_title("Hallucinated object words per category (raw counts)", fontsize=TITLE_SIZE)
    return figure


@styled
def auc_heatmap(
    aucs: Mapping[str, Mapping[str, AucResult]], title: str, ax: plt.Axes | None = None
) -> Figure:
    """Method × statistic grid of ROC-AUC (grounded = positive class), annotated; 0.5 is
    chance (white), blue < 0.5 (hallucinated words score higher), red > 0.5: a diverging
    map symmetric around 0.5. A statistic a method does not have is a hatched grey cell,
    named under the grid."""
    if not aucs:
        raise ValueError("aucs is empty: pass {method: {statistic: AucResult}}")
    methods = list(aucs)
    statistics = list(dict.fromkeys(name for table in aucs.values() for name in table))
    values = np.full((len(methods), len(statistics)), np.nan)
    for row, method in enumerate(methods):
        for column, name in enumerate(statistics):
            if name in aucs[method]:
                values[row, column] = aucs[method][name].auc
    if ax is None:
        size = (column_width(0.6 * len(statistics) + 2.4), 0.4 * len(methods) + 2.6)
        _, ax = plt.subplots(figsize=size, layout="constrained")
    drawn = ax.imshow(values, cmap=with_missing(DIVERGING_CMAP), vmin=0.0, vmax=1.0, aspect="auto")
    for row in range(len(methods)):
        for column in range(len(statistics)):
            value = values[row, column]
            if not np.isnan(value):
                colour = "white" if abs(value - 0.5) > 0.3 else "black"
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", color=colour)
    missing = hatch_missing(ax, values)
    names = [statistic_name(s) for s in statistics]
    ax.set_xticks(range(len(statistics)), names, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(methods)), [method_title(m) for m in methods])
    width = ax.get_figure(root=True).get_figwidth()
    ax.set_title(wrap(title, width - 0.3, TITLE_SIZE), fontsize=TITLE_SIZE)
    ax.figure.colorbar(drawn, ax=ax, fraction=0.04, pad=0.02).set_label("ROC-AUC")
    if missing:
        ax.figure.legend(
            handles=[missing_handle("not measured for this method")],
            loc="outside lower center",
            fontsize=FONT_SIZE,
        )
    return ax.figure


@styled
def case_study(
    image: Array,
    words: Sequence[str],
    pixel_relevance: Array,
    index: int,
    word_relevance: Array,
    note: str,
    objects: Array | None = None,
) -> Figure:
    """One explained (hallucinated) word: image, pixel relevance (± 99.5th percentile of
    `|R|`, as `relevance.word_explanation`) with the annotated objects outlined in green, and
    its preceding-word relevance normalised by `max_i |r_i|`; `note` goes in the title."""
    figure = word_explanation(image, words, pixel_relevance, index, word_relevance)
    if objects is not None:
        outline = objects.detach().cpu().numpy() if isinstance(objects, Tensor) else objects
        outline = np.asarray(outline, dtype=float)
        if outline.any():
            for ax in figure.axes[:2]:
                ax.contour(outline, levels=[0.5], colors="lime", linewidths=0.8)
    caption(figure, note, TITLE_SIZE)
    return figure


def shift_statement(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]],
    metric: str,
    first: str = "test",
    second: str = "shifted",
    digits: int = 2,
) -> str:
    """One sentence per captioner on how `metric` changes between two splits.

    scores: captioner → split → metric → value. Example: "Captioner A: CHAIRi rises from
    0.05 (test) to 0.39 (shifted)." Values equal after rounding are "unchanged".
    """
    if not scores:
        raise ValueError("scores is empty: pass {captioner: {split: {metric: value}}}")
    sentences = []
    for captioner, splits in scores.items():
        for split in (first, second):
            if split not in splits or metric not in splits[split]:
                raise ValueError(f"scores[{captioner!r}] has no {metric!r} for split {split!r}")
        before, after = float(splits[first][metric]), float(splits[second][metric])
        difference = round(after, digits) - round(before, digits)
        if abs(difference) < 0.5 * 10**-digits:
            change = f"is unchanged at {before:.{digits}f}"
        else:
            verb = "rises" if difference > 0 else "falls"
            change = f"{verb} from {before:.{digits}f} ({first}) to {after:.{digits}f} ({second})"
        sentences.append(f"{captioner}: {metric} {change}.")
    return " ".join(sentences)


def auc_statement(
    tables: Mapping[str, Mapping[str, Mapping[str, AucResult]]],
    exclude: Sequence[str] = (),
    digits: int = 2,
) -> str:
    """One sentence per setting: the (method, statistic) whose AUC is furthest from 0.5
    (statistics in `exclude` left out), with its Hanley–McNeil standard error, its direction
    and the numbers of words; tables: setting → method → statistic → AucResult."""
    if not tables:
        raise ValueError("tables is empty: pass {setting: {method: {statistic: AucResult}}}")
    sentences = []
    for setting, aucs in tables.items():
        pairs = [
            (m, s, r) for m, table in aucs.items() for s, r in table.items() if s not in exclude
        ]
        if not pairs:
            raise ValueError(f"tables[{setting!r}] has no AUC values")
        method, statistic, result = max(pairs, key=lambda item: abs(item[2].auc - 0.5))
        direction = "grounded" if result.auc >= 0.5 else "hallucinated"
        sentences.append(
            f"On {setting} ({result.grounded} grounded, {result.hallucinated} hallucinated "
            f"words), the best separation is {_describe(method, statistic)}: AUC "
            f"{result.auc:.{digits}f} ± {result.standard_error:.{digits}f} (s.e.), larger for "
            f"{direction} words."
        )
    return " ".join(sentences)
