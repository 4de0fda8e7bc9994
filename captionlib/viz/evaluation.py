"""Figures and measured statements for comparing explanation methods (chapters 8 and 9).

::

    method_panels(image, {name: map})                  # one image, one map per method (ch. 8)
    word_relevance_panels(words, {name: word_rel})     # preceding-word relevance side by side
    correctness_curves({setting: {method: summary}})   # correctness vs τ, ± s.e. (chapter 9)
    drop_boxplots({setting: {method: drops}})          # ablation drops per method (chapter 9)
    mean_se_table({column: {method: values}})          # "0.52 ± 0.03" cells for metrics_table
    display(methods_table(mean_se_table(columns)))     # one row per method, named as in prose
    compare_methods({measure: {setting: {m: values}}}) # the finding: where LRP wins, loses
    compare_with_baseline({setting: {method: drops}})  # which rankings beat random ablation
    correlation_statement(table, column)               # which maps survive randomisation

The book states only what the code measured on the run that builds the page: the
`compare_*` functions turn the per-item values behind a table into one or two sentences, so
the finding always matches the numbers beside it. A difference counts only when the two
means differ by more than two standard errors of their difference; smaller ones are ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from captionlib.evaluate.localization import LocalizationSummary
from captionlib.viz.attention import image_array
from captionlib.viz.relevance import (
    DEFAULT_PERCENTILE,
    MIN_CELL_WIDTH,
    heatmap,
    normalize_symmetric,
    panel_scale,
    pixel_map,
    strip_caption,
    word_matrix,
)
from captionlib.viz.style import (
    COLUMN_WIDTH,
    FONT_SIZE,
    MAX_COLUMNS,
    PANEL_WIDTH,
    TITLE_SIZE,
    caption,
    is_signed,
    legend_below,
    method_title,
    panel_grid,
    scale_bar,
    styled,
    wrap,
)
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


@styled
def method_panels(
    image: Array,
    maps: Mapping[str, Array],
    image_title: str = "image",
    columns: int = 4,
    panel_width: float = 4.2,
) -> Figure:
    """The image, then one heat map per method, at most 4 per row (chapter 8).

    image: (3, H, W) uint8 or floats in [0, 1]; maps: title or method id → (H, W) or
    (3, H, W) map (a coarser grid is drawn as is); a method id is shown by its name
    (`style.method_title`: "gradcam" → "Grad-CAM"). The figure fits the column: panels are
    `panel_width` inches wide at most. Each map is scaled to its own 99.5th percentile s of
    `|value|` (`relevance.heatmap`, s stated under the panel), so panels compare where, not
    how much: a signed map from −s to s (diverging), a non-negative one (attention, Grad-CAM)
    from 0 to s (sequential); a colour bar for each kind shown.
    """
    if not maps:
        raise ValueError("maps is empty: pass {title: map}")
    rows, columns = panel_grid(len(maps) + 1, columns)
    width = max(min(panel_width, PANEL_WIDTH) * columns, 2 * PANEL_WIDTH)
    panel = width / columns
    signs = {title: is_signed(pixel_map(values)) for title, values in maps.items()}
    text = (
        f"Each map scaled to its own {DEFAULT_PERCENTILE:g}th percentile s of |value| (stated "
        "under it; beyond: saturated): signed maps from −s (blue) to s (red), non-negative maps "
        "from 0 to s"
    )
    lines = wrap(text, width - 0.2).count("\n") + 1
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(width, (panel + 0.75) * rows + 0.8 * len(set(signs.values())) + 0.17 * lines),
        layout="constrained",
        squeeze=False,
    )
    flat = axes.ravel()
    flat[0].imshow(image_array(image))
    flat[0].set_title(wrap(image_title, panel), fontsize=FONT_SIZE)
    for ax, (title, values) in zip(flat[1:], maps.items(), strict=False):
        signed = signs[title]
        heatmap(values, ax=ax, title=method_title(title), colorbar=False, signed=signed)
        _, scale = normalize_symmetric(pixel_map(values))
        ax.set_xlabel(panel_scale(scale, signed), fontsize=FONT_SIZE)
    for ax in flat[len(maps) + 1 :]:
        ax.set_visible(False)
    for ax in flat:
        ax.set_xticks([])
        ax.set_yticks([])
    shown = list(flat[1 : len(maps) + 1])
    for signed in sorted(set(signs.values()), reverse=True):
        kind = "signed maps" if signed else "non-negative maps"
        scale_bar(figure, shown, signed, f"{kind}: value / s")
    caption(figure, text)
    return figure


@styled
def word_relevance_panels(
    words: Sequence[str],
    word_relevance: Mapping[str, Array],
    panel_width: float = 5.0,
    columns: int = 2,
) -> Figure:
    """Preceding-word relevance of one caption, one panel per method (chapter 8).

    word_relevance: title or method id → (L, L) relevance of the preceding words (`<start>`
    included) for each of the L explained words; each row is normalised by its largest
    `|value|` (`relevance.word_matrix`), one colour bar for all. `columns` panels per row
    (at most 4), each at most `panel_width` inches wide; cells wide enough show their number.
    """
    if not word_relevance:
        raise ValueError("word_relevance is empty: pass {title: (L, L) relevance}")
    rows, columns = panel_grid(len(word_relevance), columns)
    width = min(panel_width * columns, COLUMN_WIDTH)
    numbers = (width - 1.2) / columns / max(len(words), 1) >= MIN_CELL_WIDTH
    lines = wrap(strip_caption(), width - 0.2).count("\n") + 1
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(width, (0.3 * len(words) + 1.6) * rows + 0.17 * lines + 0.8),
        layout="constrained",
        squeeze=False,
    )
    flat = list(axes.ravel())
    drawn = None
    for index, (ax, (title, values)) in enumerate(zip(flat, word_relevance.items(), strict=False)):
        labels = index % columns == 0
        drawn = word_matrix(ax, words, values, labels=labels, numbers=numbers)
        ax.set_title(method_title(title), fontsize=TITLE_SIZE)
    for ax in flat[len(word_relevance) :]:
        ax.remove()
    bar = figure.colorbar(
        drawn, ax=flat[: len(word_relevance)], location="bottom", shrink=0.6, aspect=35
    )
    bar.set_label("r / max_i |r_i| (per row)", fontsize=FONT_SIZE)
    caption(figure, strip_caption())
    return figure


def _curve_axes(count: int, columns: int, height: float) -> tuple[Figure, list[Axes]]:
    """Line-plot panels, `columns` per row (at most 4), sharing y; unused slots removed."""
    rows, columns = panel_grid(count, columns)
    width = COLUMN_WIDTH if columns > 1 else 4.5
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(width, height * rows + 0.8),
        sharey=True,
        layout="constrained",
        squeeze=False,
    )
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.remove()
    return figure, flat[:count]


@styled
def correctness_curves(
    summaries: Mapping[str, Mapping[str, LocalizationSummary]],
    dashed: Sequence[str] = ("attention",),
    columns: int = 2,
) -> Figure:
    """Correctness against the threshold τ, one panel per setting, `columns` per row (chapter 9).

    summaries: setting (e.g. "adaptive, test") → method → `LocalizationSummary`. Each curve is
    the mean over (image, category) pairs with error bars ± one standard error
    (standard deviation / √pairs); methods in `dashed` are drawn dashed. One legend, under
    the panels, names the methods (`style.method_title`).
    """
    _check_settings(summaries, "summaries")
    figure, axes = _curve_axes(len(summaries), columns, 2.7)
    panel = figure.get_figwidth() / min(columns, MAX_COLUMNS, len(summaries))
    order = list(dict.fromkeys(method for methods in summaries.values() for method in methods))
    legend: dict[str, object] = {}
    for index, (ax, (setting, methods)) in enumerate(zip(axes, summaries.items(), strict=True)):
        for method, summary in methods.items():
            if summary.pairs < 1:
                raise ValueError(f"summaries[{setting!r}][{method!r}] has no pairs")
            drawn = ax.errorbar(
                summary.thresholds,
                summary.correctness,
                yerr=summary.correctness_std / np.sqrt(summary.pairs),
                label=method_title(method),
                capsize=2,
                color=f"C{order.index(method) % 10}",
                linestyle="--" if method in dashed else "-",
            )
            legend.setdefault(method_title(method), drawn)
        ax.set_title(wrap(setting, panel - 0.3, TITLE_SIZE), fontsize=TITLE_SIZE)
        ax.set_xlabel("threshold τ")
        if index % min(columns, MAX_COLUMNS) == 0:
            ax.set_ylabel("correctness\n(mean over pairs)")
    legend_below(figure, legend, 4)
    return figure


@styled
def drop_boxplots(
    drops: Mapping[str, Mapping[str, Array]],
    ylabel: str = "drop in the word's probability",
    columns: int = 2,
) -> Figure:
    """Box plots of ablation drops, one panel per setting, `columns` per row (chapter 9).

    drops: setting → method → (W,) drop per ablated word. Box: quartiles, line: median,
    triangle: mean; a grey line marks 0. Methods are named as in `style.method_title`.
    """
    _check_settings(drops, "drops")
    figure, axes = _curve_axes(len(drops), columns, 3.0)
    panel = figure.get_figwidth() / min(columns, MAX_COLUMNS, len(drops))
    for index, (ax, (setting, methods)) in enumerate(zip(axes, drops.items(), strict=True)):
        names = list(methods)
        ax.boxplot(
            [_values(methods[m], f"drops[{setting!r}][{m!r}]") for m in names], showmeans=True
        )
        ax.set_xticks(
            range(1, len(names) + 1),
            [method_title(m) for m in names],
            rotation=45,
            ha="right",
            rotation_mode="anchor",
        )
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(wrap(setting, panel - 0.3, TITLE_SIZE), fontsize=TITLE_SIZE)
        if index % min(columns, MAX_COLUMNS) == 0:
            ax.set_ylabel(wrap(ylabel, 2.4))
    return figure


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _verdict(values: np.ndarray, other: np.ndarray, standard_errors: float) -> tuple[float, str]:
    # (difference of the means, "above" / "within" / "below"): clearly above or below when the
    # difference exceeds `standard_errors` × √(se² + se_other²)
    gap = float(values.mean() - other.mean())
    error = standard_errors * math.hypot(_standard_error(values), _standard_error(other))
    if gap > error:
        return gap, "above"
    return gap, ("below" if gap < -error else "within")


def _range(values: Sequence[float], digits: int) -> str:
    # "0.09 to 0.42", or one number when both ends print the same
    low, high = (f"{value:.{digits}f}" for value in (min(values), max(values)))
    return low if low == high else f"{low} to {high}"


def _count(count: int, total: int, noun: str = "") -> str:
    # "all 20 measurements", "both measurements", "6 of the 8 measurements", "none of the 8 …"
    if count == total:
        wholes = {1: f"the one {noun.removesuffix('s')}", 2: f"both {noun}"}
        text = wholes.get(total, f"all {total} {noun}")
    else:
        text = f"{count} of the {total} {noun}" if count else f"none of the {total} {noun}"
    return text.rstrip()


def _check_rule(standard_errors: float, digits: int) -> None:
    if standard_errors < 0:
        raise ValueError(f"standard_errors must be ≥ 0, got {standard_errors}")
    if digits < 0:
        raise ValueError(f"digits must be ≥ 0, got {digits}")


Cells = list[tuple[str, str, dict[str, np.ndarray]]]  # (measure, setting, {method: values})


def _measurements(tables: Mapping[str, Mapping[str, Mapping[str, Array]]], reference: str) -> Cells:
    # every cell of the tables, checked
    if not tables:
        raise ValueError("tables is empty: pass {measure: {setting: {method: values}}}")
    cells = []
    for measure, settings in tables.items():
        _check_settings(settings, f"tables[{measure!r}]")
        for setting, methods in settings.items():
            where = f"tables[{measure!r}][{setting!r}]"
            if reference not in methods:
                raise ValueError(f"{where} has no {reference!r} entry")
            values = {m: _values(v, f"{where}[{m!r}]") for m, v in methods.items()}
            cells.append((measure, setting, values))
    return cells


def _against(
    cells: Cells, reference: str, other: str, noun: str, rule: tuple[float, int]
) -> list[str]:
    # "clearly above Grad-CAM in 6 of the 8 measurements (by …)", "within the error in 2", …
    standard_errors, digits = rule
    found = [_verdict(v[reference], v[other], standard_errors) for *_, v in cells if other in v]
    above = [gap for gap, verdict in found if verdict == "above"]
    below = [-gap for gap, verdict in found if verdict == "below"]
    details = {
        "clearly above": (len(above), f" (by {_range(above, digits)})" if above else ""),
        "within the error": (len(found) - len(above) - len(below), ""),
        "clearly below": (len(below), f" (by up to {max(below):.{digits}f})" if below else ""),
    }
    parts: list[str] = []
    for relation, (count, detail) in details.items():
        if count and parts:
            parts.append(f"{relation} in {count}{detail}")
        elif count:
            of = " of" if relation == "within the error" else ""
            where = _count(count, len(found), noun)
            parts.append(f"{relation}{of} {method_name(other)} in {where}{detail}")
    return parts


def _beaten(cells: Cells, reference: str, rule: tuple[float, int]) -> str:
    # "No other method is clearly above LRP in 6 of the 8 measurements; X is in 2 (…)."
    standard_errors, digits = rule
    name = method_name(reference)
    beaten: dict[str, list[tuple[str, str, float]]] = {}  # method → cells where it is above
    top = 0
    for measure, setting, methods in cells:
        losses = [
            (method, gap)
            for method, values in methods.items()
            if method != reference
            for gap, verdict in [_verdict(values, methods[reference], standard_errors)]
            if verdict == "above"
        ]
        top += not losses
        for method, gap in losses:
            beaten.setdefault(method, []).append((measure, setting, gap))
    if not beaten:
        return f"No other method is clearly above {name} in any of the {len(cells)} measurements."
    listed = []
    for method, where in sorted(beaten.items(), key=lambda item: -len(item[1])):
        measures = list(dict.fromkeys(measure for measure, _, _ in where))
        settings = list(dict.fromkeys(setting for _, setting, _ in where))
        place = _join(measures) + (f", on {settings[0]}" if len(settings) == 1 else "")
        largest = max(gap for *_, gap in where)
        listed.append(
            f"{method_name(method)} is in {len(where)} ({place}; by up to {largest:.{digits}f})"
        )
    if top:
        lead = f"No other method is clearly above {name} in {top} of the {len(cells)} measurements"
    else:
        lead = f"In each of the {len(cells)} measurements some method is clearly above {name}"
    return lead + "; " + _join(listed) + "."


def compare_methods(
    tables: Mapping[str, Mapping[str, Mapping[str, Array]]],
    reference: str = "lrp",
    others: Sequence[str] = ("attention", "gradcam"),
    standard_errors: float = 2.0,
    digits: int = 2,
) -> str:
    """The finding of measured tables in at most two sentences: how often `reference` is
    clearly above each of `others` and by how much, then which methods are clearly above
    `reference`, where and by how much (chapter 9).

    tables: measure (e.g. "pointing accuracy") → setting (e.g. "captioner B (shifted split)")
    → method → per-item values, higher is better; each (measure, setting) cell is one
    measurement. Clearly above or below: the means differ by more than `standard_errors`
    × √(se_a² + se_b²), with se = std (n − 1) / √n as in the tables; a smaller difference is
    a tie within the error. With `others` empty only the second sentence comes back. Example:
    "LRP is clearly above attention in all 8 measurements (by 0.05 to 0.32) and clearly above
    Grad-CAM in 6 of the 8 (by 0.03 to 0.20), within the error in 2. No other method is
    clearly above LRP in 6 of the 8 measurements; gradient × input is in 2 (mean drop and
    share of vanished words, on captioner A (shifted split); by up to 0.08)."
    """
    _check_rule(standard_errors, digits)
    cells = _measurements(tables, reference)
    rule = (standard_errors, digits)
    clauses: list[list[str]] = []
    for other in others:
        if other != reference and any(other in methods for *_, methods in cells):
            noun = "" if clauses else "measurements"
            clauses.append(_against(cells, reference, other, noun, rule))
    text = ""  # "A and B" after a one-part clause, "A, a; it is B" after a longer one
    for index, parts in enumerate(clauses):
        if index:
            text += " and " if len(clauses[index - 1]) == 1 else "; it is "
        text += ", ".join(parts)
    first = [f"{method_name(reference)} is {text}."] if clauses else []
    return " ".join([*first, _beaten(cells, reference, rule)])


def compare_with_baseline(
    drops: Mapping[str, Mapping[str, Array]],
    baseline: str = "random",
    standard_errors: float = 2.0,
    what: str = "patches",
    quantity: str = "probability",
    digits: int = 3,
) -> str:
    """One sentence over all settings: which methods' rankings remove clearly more than the
    baseline's in every setting and by how much, and how often the others do (chapter 9).

    drops: setting → method → (W,) drop per ablated word, `baseline` included; what: what
    the baseline ranks ("patches", "deletions"). Clearly: as in `compare_methods`, the means
    differ by more than `standard_errors` × √(se_method² + se_baseline²). Example: "Ranking
    by LRP and gradient × input removes clearly more probability than random deletions in all
    4 settings (by 0.188 to 0.242); the plain gradient is within the error of random in 4 of
    the 4 (gaps 0.005 to 0.026)."
    """
    _check_rule(standard_errors, digits)
    _check_settings(drops, "drops")
    found: dict[str, list[tuple[float, str]]] = {}
    for setting, methods in drops.items():
        if baseline not in methods:
            raise ValueError(f"drops[{setting!r}] has no {baseline!r} entry")
        base = _values(methods[baseline], f"drops[{setting!r}][{baseline!r}]")
        for method, values in methods.items():
            if method != baseline:
                own = _values(values, f"drops[{setting!r}][{method!r}]")
                found.setdefault(method, []).append(_verdict(own, base, standard_errors))
    if not found:
        raise ValueError(f"drops has no method besides {baseline!r}")
    settings = len(drops)
    always = [m for m, verdicts in found.items() if all(v == "above" for _, v in verdicts)]
    rest = [m for m in found if m not in always]
    against = f"{method_name(baseline)} {what}"
    if always:
        names = [method_name(m) for m in always]
        who = "every method" if not rest and len(always) > 1 else _join(names)
        gaps = [gap for m in always for gap, _ in found[m]]
        text = (
            f"Ranking by {who} removes clearly more {quantity} than {against} in "
            f"{_count(settings, settings, 'settings')} (by {_range(gaps, digits)})"
        )
    else:
        text = (
            f"No method's ranking removes clearly more {quantity} than {against} in every setting"
        )
    clauses = []
    for method in rest:
        verdicts = found[method]
        labels = {
            "above": f"clearly above {method_name(baseline)}",
            "within": f"within the error of {method_name(baseline)}",
            "below": f"clearly below {method_name(baseline)}",
        }
        counts = {key: sum(v == key for _, v in verdicts) for key in labels}
        present = [key for key, count in counts.items() if count]
        if len(present) == 1:  # the same verdict in every setting
            where = f"{labels[present[0]]} in {_count(settings, settings, 'settings')}"
        else:
            parts = [f"{labels[key]} in {counts[key]}" for key in present]
            where = f"{_join(parts)} of the {settings} settings"
        gaps = _range([gap for gap, _ in verdicts], digits)
        clauses.append(f"{method_name(method)} is {where} (gaps {gaps})")
    return text + "".join(f"; {clause}" for clause in clauses) + "."


def correlation_statement(
    table: Mapping[str, Mapping[str, float]], column: str, threshold: float = 0.5
) -> str:
    """One sentence: which methods' maps keep a correlation ≥ `threshold` in `column`, and how
    high the others reach (chapter 9 sanity check).

    table: method → column → mean rank correlation with the trained model's maps. Example:
    "After randomisation (random captioner), guided backprop (0.91) keeps a mean rank
    correlation of at least 0.5 with the trained model's maps; every other method stays at or
    below 0.38."
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
    rest = [row[column] for row in table.values() if row[column] < threshold]
    text = f"After randomisation ({column}), "
    if not kept:
        return text + (
            f"every method's mean rank correlation is below {threshold:g} "
            f"(at most {max(rest):.2f})."
        )
    text += f"{_join(kept)} {'keeps' if len(kept) == 1 else 'keep'} a mean rank correlation "
    text += f"of at least {threshold:g} with the trained model's maps"
    return text + (f"; every other method stays at or below {max(rest):.2f}." if rest else ".")
