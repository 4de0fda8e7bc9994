"""Figures and measured statements for comparing explanation methods (chapters 8 and 9).

::

    method_panels(image, {name: map})                  # one image, one map per method (ch. 8)
    word_relevance_panels(words, {name: word_rel})     # preceding-word relevance side by side
    correctness_curves({setting: {method: summary}})   # correctness vs τ, ± s.e. (chapter 9)
    drop_boxplots({setting: {method: drops}})          # ablation drops per method (chapter 9)
    compare_methods(table, metric)                     # "LRP's … (0.47) is below attention's …"
    compare_with_baseline({setting: {method: drops}})  # which rankings beat random ablation
    correlation_statement(table, column)               # which maps survive randomisation
    mean_se_table({column: {method: values}})          # "0.52 ± 0.03" cells for metrics_table
    display(methods_table(mean_se_table(columns)))     # one row per method, named as in prose
    reference_summary({measure: {setting: {m: v}}})    # where LRP wins and loses, all tables

The book states only what the code measured on the run that builds the page: the
`compare_*` functions turn measured tables into sentences, so the prose always matches the
numbers printed above it. Values equal after rounding to the printed digits count as ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from captionlib.evaluate.localization import LocalizationSummary
from captionlib.viz.attention import image_array
from captionlib.viz.relevance import heatmap, word_relevance_strip
from captionlib.viz.tables import CellValue, Table, metrics_table

Array = Tensor | np.ndarray

METHOD_NAMES = {
    "lrp": "LRP",
    "attnlrp": "AttnLRP",
    "attention": "attention",
    "gradient": "the plain gradient",
    "gradient_x_input": "gradient × input",
    "guided_backprop": "guided backprop",
    "gradcam": "Grad-CAM",
    "guided_gradcam": "guided Grad-CAM",
    "random": "random",
}


def method_name(method: str) -> str:
    """The name a method has in the book's prose ("gradcam" → "Grad-CAM"); unknown: as is."""
    return METHOD_NAMES.get(method, method)


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _values(values: Array, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    array = array.astype(np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _standard_error(values: np.ndarray) -> float:
    # sample standard deviation (n − 1, as torch.std) / √n; 0 for a single value
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0


def mean_with_error(values: Array, digits: int = 2) -> str:
    """ "mean ± standard error" of per-item values (standard error = std with n − 1 / √n;
    0 for one value), e.g. "0.52 ± 0.03" (chapter 9)."""
    array = _values(values, "values")
    return f"{array.mean():.{digits}f} ± {_standard_error(array):.{digits}f}"


def mean_se_table(
    columns: Mapping[str, Mapping[str, Array]], digits: int = 2
) -> dict[str, dict[str, str | None]]:
    """column → method → per-item values  ⟶  method → column → "mean ± s.e." (chapter 9).

    The result goes to `methods_table` (or `captionlib.viz.tables.metrics_table`); a method
    missing from a column gets None (shown as "–"). Methods keep their order of first appearance.
    """
    if not columns:
        raise ValueError("columns is empty: pass {column: {method: values}}")
    if digits < 0:
        raise ValueError(f"digits must be ≥ 0, got {digits}")
    methods = list(dict.fromkeys(m for values in columns.values() for m in values))
    return {
        method: {
            column: (mean_with_error(values[method], digits) if method in values else None)
            for column, values in columns.items()
        }
        for method in methods
    }


def methods_table(
    rows: Mapping[str, Mapping[str, CellValue]], digits: int = 3, row_header: str = "method"
) -> Table:
    """`metrics_table` with one row per method, each named as in the book ("gradcam" →
    "Grad-CAM", "gradient" → "plain gradient"); rows: method → column → value (chapter 9)."""
    if not rows:
        raise ValueError("rows is empty: pass {method: {column: value}}")
    named = {method_name(method).removeprefix("the "): row for method, row in rows.items()}
    return metrics_table(named, digits=digits, row_header=row_header)


def _check_settings(settings: Mapping[str, Mapping[str, object]], name: str) -> None:
    if not settings:
        raise ValueError(f"{name} is empty: pass {{setting: {{method: ...}}}}")
    for setting, methods in settings.items():
        if not methods:
            raise ValueError(f"{name}[{setting!r}] has no methods")


def _grid(count: int, columns: int) -> tuple[int, int]:
    if columns < 1:
        raise ValueError(f"columns must be ≥ 1, got {columns}")
    columns = min(columns, count)
    return math.ceil(count / columns), columns


def method_panels(
    image: Array,
    maps: Mapping[str, Array],
    image_title: str = "image",
    columns: int = 4,
    panel_width: float = 4.2,
) -> Figure:
    """The image, then one heat map per method, side by side (chapter 8).

    image: (3, H, W) uint8 or floats in [0, 1]; maps: title → (H, W) or (3, H, W) map (a
    coarser grid is drawn as is). Panels are `panel_width` inches wide, wide enough for the
    scale stated under each. Each map is scaled to ± its own 99.5th percentile of `|value|`
    (`relevance.heatmap`, stated under the panel), so panels compare where, not how much.
    """
    if not maps:
        raise ValueError("maps is empty: pass {title: map}")
    rows, columns = _grid(len(maps) + 1, columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(panel_width * columns, 0.85 * panel_width * rows + 0.4),
        layout="constrained",
        squeeze=False,
    )
    flat = axes.ravel()
    flat[0].imshow(image_array(image))
    flat[0].set_title(image_title)
    for ax, (title, values) in zip(flat[1:], maps.items(), strict=False):
        heatmap(values, ax=ax, title=title, colorbar=False)
    for ax in flat[len(maps) + 1 :]:
        ax.set_visible(False)
    for ax in flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure


def word_relevance_panels(
    words: Sequence[str], word_relevance: Mapping[str, Array], panel_width: float = 5.0
) -> Figure:
    """Preceding-word relevance of one caption, one panel per method (chapter 8).

    word_relevance: title → (L, L) relevance of the preceding words (`<start>` included) for
    each of the L explained words; each row is normalised by its largest `|value|`
    (`relevance.word_relevance_strip`).
    """
    if not word_relevance:
        raise ValueError("word_relevance is empty: pass {title: (L, L) relevance}")
    count = len(word_relevance)
    figure, axes = plt.subplots(
        1, count, figsize=(panel_width * count, 4.5), layout="constrained", squeeze=False
    )
    for ax, (title, values) in zip(axes[0], word_relevance.items(), strict=True):
        word_relevance_strip(words, values, ax=ax)
        ax.set_title(title)
    return figure


def correctness_curves(
    summaries: Mapping[str, Mapping[str, LocalizationSummary]],
    dashed: Sequence[str] = ("attention",),
) -> Figure:
    """Correctness against the threshold τ, one panel per setting (chapter 9).

    summaries: setting (e.g. "adaptive, test") → method → `LocalizationSummary`. Each curve is
    the mean over (image, category) pairs with error bars ± one standard error
    (standard deviation / √pairs); methods in `dashed` are drawn dashed.
    """
    _check_settings(summaries, "summaries")
    count = len(summaries)
    figure, axes = plt.subplots(
        1, count, figsize=(4 * count, 3.8), sharey=True, layout="constrained", squeeze=False
    )
    for ax, (setting, methods) in zip(axes[0], summaries.items(), strict=True):
        for method, summary in methods.items():
            if summary.pairs < 1:
                raise ValueError(f"summaries[{setting!r}][{method!r}] has no pairs")
            ax.errorbar(
                summary.thresholds,
                summary.correctness,
                yerr=summary.correctness_std / np.sqrt(summary.pairs),
                label=method,
                capsize=2,
                linestyle="--" if method in dashed else "-",
            )
        ax.set_title(setting)
        ax.set_xlabel("threshold τ")
    axes[0, 0].set_ylabel("correctness (mean over pairs)")
    axes[0, -1].legend(fontsize=7)
    return figure


def drop_boxplots(
    drops: Mapping[str, Mapping[str, Array]],
    ylabel: str = "drop in the word's probability",
) -> Figure:
    """Box plots of ablation drops, one panel per setting, one box per method (chapter 9).

    drops: setting → method → (W,) drop per ablated word. Box: quartiles, line: median,
    triangle: mean; a grey line marks 0.
    """
    _check_settings(drops, "drops")
    count = len(drops)
    figure, axes = plt.subplots(
        1, count, figsize=(4 * count, 3.6), sharey=True, layout="constrained", squeeze=False
    )
    for ax, (setting, methods) in zip(axes[0], drops.items(), strict=True):
        names = list(methods)
        ax.boxplot(
            [_values(methods[m], f"drops[{setting!r}][{m!r}]") for m in names], showmeans=True
        )
        ax.set_xticks(range(1, len(names) + 1), names, rotation=60, fontsize=7)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(setting)
    axes[0, 0].set_ylabel(ylabel)
    return figure


def _relation(value: float, other: float, digits: int) -> str:
    difference = round(value, digits) - round(other, digits)
    if abs(difference) < 0.5 * 10**-digits:
        return "equal to"
    return "above" if difference > 0 else "below"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def compare_methods(
    summary_table: Mapping[str, Mapping[str, float]],
    metric: str,
    reference: str = "lrp",
    others: Sequence[str] = ("attention", "gradcam"),
    digits: int = 2,
    higher_is_better: bool = True,
) -> str:
    """One sentence per setting: the reference method against others, and the best method.

    summary_table: setting (e.g. "captioner B (in-distribution)") → method → measured value;
    metric: its name in the prose ("pointing accuracy"). Values equal after rounding to
    `digits` are ties ("equal to"). Example: "On captioner B (in-distribution), LRP's pointing
    accuracy (0.47) is below attention's (0.57) and below Grad-CAM's (0.50); the best is
    gradient × input (0.70)." Others missing from a setting are skipped (chapter 9).
    """
    if not summary_table:
        raise ValueError("summary_table is empty: pass {setting: {method: value}}")
    if digits < 0:
        raise ValueError(f"digits must be ≥ 0, got {digits}")
    sentences = []
    for setting, scores in summary_table.items():
        if reference not in scores:
            raise ValueError(f"summary_table[{setting!r}] has no {reference!r} entry")
        value = float(scores[reference])
        comparisons = [
            f"{_relation(value, float(scores[o]), digits)} "
            f"{_possessive(method_name(o))} ({float(scores[o]):.{digits}f})"
            for o in others
            if o in scores and o != reference
        ]
        pick = max if higher_is_better else min
        best = round(pick(float(v) for v in scores.values()), digits)
        leaders = [method_name(m) for m, v in scores.items() if round(float(v), digits) == best]
        sentence = (
            f"On {setting}, {_possessive(method_name(reference))} {metric} ({value:.{digits}f})"
        )
        if comparisons:
            sentence += " is " + _join(comparisons)
        if method_name(reference) in leaders and len(leaders) == 1:
            sentence += "; it is the best of all methods."
        else:
            verb = "is" if len(leaders) == 1 else "are"
            sentence += f"; the best {verb} {_join(leaders)} ({best:.{digits}f})."
        sentences.append(sentence)
    return " ".join(sentences)


def compare_with_baseline(
    drops: Mapping[str, Mapping[str, Array]],
    baseline: str = "random",
    standard_errors: float = 2.0,
    quantity: str = "probability",
) -> str:
    """One sentence per setting: which rankings remove clearly more than the baseline (chapter 9).

    drops: setting → method → (W,) drop per ablated word, `baseline` included. A method is
    "clearly above" the baseline when its mean drop exceeds the baseline's by more than
    `standard_errors` × √(se_method² + se_baseline²), with se = std / √W (std with W − 1);
    "clearly below" symmetrically; otherwise "within" it.
    """
    if standard_errors < 0:
        raise ValueError(f"standard_errors must be ≥ 0, got {standard_errors}")
    _check_settings(drops, "drops")
    sentences = []
    for setting, methods in drops.items():
        if baseline not in methods:
            raise ValueError(f"drops[{setting!r}] has no {baseline!r} entry")
        base = _values(methods[baseline], f"drops[{setting!r}][{baseline!r}]")
        groups: dict[str, list[str]] = {"above": [], "within": [], "below": []}
        for method, values in methods.items():
            if method == baseline:
                continue
            own = _values(values, f"drops[{setting!r}][{method!r}]")
            error = math.hypot(_standard_error(own), _standard_error(base))
            gap = own.mean() - base.mean()
            key = (
                "above"
                if gap > standard_errors * error
                else ("below" if gap < -standard_errors * error else "within")
            )
            groups[key].append(f"{method_name(method)} ({own.mean():.3f})")
        parts = []
        if groups["above"]:
            parts.append(
                f"clearly more {quantity} than {method_name(baseline)} rankings for "
                f"{_join(groups['above'])}"
            )
        if groups["within"]:
            parts.append(
                f"no clear difference from {method_name(baseline)} for {_join(groups['within'])}"
            )
        if groups["below"]:
            parts.append(f"clearly less for {_join(groups['below'])}")
        sentences.append(
            f"On {setting}, the mean drop was {base.mean():.3f} with {method_name(baseline)} "
            f"rankings; ablation removed " + "; ".join(parts) + "."
        )
    return " ".join(sentences)


def correlation_statement(
    table: Mapping[str, Mapping[str, float]], column: str, threshold: float = 0.5
) -> str:
    """Which methods' maps keep a correlation ≥ `threshold` in `column` (chapter 9 sanity check).

    table: method → column → mean rank correlation with the trained model's maps.
    """
    if not table:
        raise ValueError("table is empty: pass {method: {column: value}}")
    missing = [m for m, row in table.items() if column not in row]
    if missing:
        raise ValueError(f"column {column!r} missing for {', '.join(missing)}")
    kept = [
        f"{method_name(m)} ({row[column]:.2f})"
        for m, row in table.items()
        if row[column] >= threshold
    ]
    changed = [
        f"{method_name(m)} ({row[column]:.2f})"
        for m, row in table.items()
        if row[column] < threshold
    ]
    text = f"After randomisation ({column}), "
    if not kept:
        return (
            text + f"every method's mean rank correlation is below {threshold:g}: {_join(changed)}."
        )
    text += f"the maps of {_join(kept)} keep a mean rank correlation of at least {threshold:g}"
    text += " with the trained model's"
    return text + (f"; the others stay below it: {_join(changed)}." if changed else ".")


def reference_summary(
    tables: Mapping[str, Mapping[str, Mapping[str, float]]],
    reference: str = "lrp",
    others: Sequence[str] = ("attention", "gradcam"),
    digits: int = 2,
) -> str:
    """One paragraph over many tables: how often `reference` is above, equal to or below each
    of `others`, how often it is the best, and which methods beat it where (chapter 9).

    tables: measure (e.g. "pointing accuracy") → setting → method → value (higher is better);
    values equal after rounding to `digits` are ties, as in `compare_methods`.
    """
    if not tables:
        raise ValueError("tables is empty: pass {measure: {setting: {method: value}}}")
    cases = [(m, s, scores) for m, settings in tables.items() for s, scores in settings.items()]
    for measure, setting, scores in cases:
        if reference not in scores:
            raise ValueError(f"tables[{measure!r}][{setting!r}] has no {reference!r} entry")
    name = method_name(reference)
    parts = []
    for other in others:
        counts = {"above": 0, "equal to": 0, "below": 0}
        compared = [(m, s, v) for m, s, v in cases if other in v]
        for _, _, scores in compared:
            counts[_relation(float(scores[reference]), float(scores[other]), digits)] += 1
        if compared:
            parts.append(
                f"above {_possessive(method_name(other))} in {counts['above']}, equal in "
                f"{counts['equal to']} and below in {counts['below']}"
            )
    best = 0
    beaten: dict[str, dict[str, int]] = {}  # method → measure → settings where it is above
    for measure, _, scores in cases:
        own = round(float(scores[reference]), digits)
        better = [m for m, v in scores.items() if round(float(v), digits) > own]
        best += not better
        for method in better:
            where = beaten.setdefault(method_name(method), {})
            where[measure] = where.get(measure, 0) + 1
    text = f"Over the {len(cases)} (measure, setting) tables, {name} is "
    text += (_join(parts) if parts else "compared with no other method") + "; "
    text += f"it is the best method (ties included) in {best}."
    if beaten:
        listed = []
        for method, where in sorted(beaten.items(), key=lambda item: -sum(item[1].values())):
            measures = ", ".join(f"{measure}: {count}" for measure, count in where.items())
            listed.append(f"{method} in {sum(where.values())} ({measures})")
        text += f" Methods above {name} (tables per measure): " + "; ".join(listed) + "."
    return text
