"""Does the explanation depend on the word? The figure, table and finding of chapter 8.

::

    method_word_grid(image, ["dog", "ball", "grass"], {"lrp": maps, "contrastive_lrp": maps})
    display(word_dependence_table(study))           # one row per method, mean ± s.e.
    word_dependence_statement({"A": study_a, "B": study_b})   # the finding, from the numbers

`method_word_grid` starts each row with the image and shows one signed pixel map per word,
at most three words (four panels per row): reading down a column compares methods on one
word, reading along a row shows whether a method's map changes with the word. The table and
the statement read a `captionlib.explain.word_dependence.WordDependence`; as in
`captionlib.viz.evaluation`, a difference counts only when two means differ by more than two
standard errors of their difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from captionlib.explain.word_dependence import WORD_DEPENDENCE_METHODS, WordDependence
from captionlib.viz.attention import image_array
from captionlib.viz.evaluation import mean_with_error
from captionlib.viz.relevance import (
    DEFAULT_PERCENTILE,
    heatmap,
    normalize_symmetric,
    panel_scale,
    pixel_map,
)
from captionlib.viz.style import (
    FONT_SIZE,
    MAX_COLUMNS,
    caption,
    grid_size,
    method_title,
    scale_bar,
    styled,
)
from captionlib.viz.tables import Table

TITLES = {"contrastive_lrp": "contrastive LRP"}
TABLE_COLUMNS = (
    "method",
    "correlation between content words",
    "captions",
    "negative share of |R|",
    "positive mass on the named object",
    "object words",
)


def title_of(method: str) -> str:
    """A method's name in the figure and the table: "contrastive_lrp" → "contrastive LRP",
    the others as `style.method_title` names them."""
    return TITLES.get(method, method_title(method))


@styled
def method_word_grid(
    image: Tensor,
    words: Sequence[str],
    maps: Mapping[str, Sequence[Tensor] | Tensor],
    title: str | None = None,
) -> Figure:
    """One row per method: the image, then the pixel map of each word (chapter 8).

    image: (3, H, W) uint8 or floats in [0, 1]; words: at most MAX_COLUMNS − 1 = 3 words;
    maps: method name or id (`title_of`) → one (H, W) or (3, H, W) map per word,
    in `words` order. Every map is drawn from −s (blue) to s (red), s its own 99.5th
    percentile of `|R|` (stated under it), so rows compare where relevance lies, not how much.
    """
    if not maps:
        raise ValueError("maps is empty: pass {method: one map per word}")
    if not 1 <= len(words) <= MAX_COLUMNS - 1:
        raise ValueError(f"give 1 to {MAX_COLUMNS - 1} words, got {len(words)}")
    for method, per_word in maps.items():
        if len(per_word) != len(words):
            raise ValueError(f"{method!r} has {len(per_word)} maps for {len(words)} words")
    text = (
        f"Pixel relevance per word (sum over colour channels), each panel from −s (blue, "
        f"opposes the word) to s (red, supports it), s = its {DEFAULT_PERCENTILE:g}th "
        "percentile of |R| (under it); beyond ±s saturated"
    )
    if title is not None:
        text = f"{title}\n{text}"
    rows, columns = len(maps), len(words) + 1
    figure, axes = plt.subplots(
        rows, columns, figsize=grid_size(rows, columns, text), layout="constrained", squeeze=False
    )
    pixels = image_array(image)
    for row, (method, per_word) in enumerate(maps.items()):
        axes[row, 0].imshow(pixels, interpolation="nearest")
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        axes[row, 0].set_ylabel(title_of(method), fontsize=FONT_SIZE + 1, fontweight="bold")
        for column, (word, values) in enumerate(zip(words, per_word, strict=True), start=1):
            ax = axes[row, column]
            heatmap(values, ax=ax, colorbar=False, title=word, signed=True)
            _, scale = normalize_symmetric(pixel_map(values))
            ax.set_xlabel(panel_scale(scale, signed=True), fontsize=FONT_SIZE)
    scale_bar(figure, list(axes[:, 1:].ravel()), True, "R / that panel's scale (± under it)")
    caption(figure, text)
    return figure


def _finite(values: Tensor | Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _masses(study: WordDependence, method: str) -> np.ndarray:
    return _finite([record.mass for record in study.mass[method]])


def word_dependence_table(study: WordDependence, digits: int = 2) -> Table:
    """One row per method of the study (chapter 8): the mean ± s.e. over captions of the
    cross-word correlation and of the negative share of `|R|`, over object words of the
    positive mass on the named object, and how many captions and words each mean covers."""
    rows = []
    for method in study.correlation:
        correlation = _finite(study.correlation[method])
        negative = _finite(study.negative[method])
        masses = _masses(study, method)
        rows.append(
            [
                title_of(method),
                mean_with_error(correlation, digits) if correlation.size else None,
                int(correlation.size),
                mean_with_error(negative, digits) if negative.size else None,
                mean_with_error(masses, digits) if masses.size else None,
                int(masses.size),
            ]
        )
    return Table(list(TABLE_COLUMNS), rows, digits=digits)


Values = dict[str, np.ndarray]  # setting (captioner) → per-item values


def _error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0


def _relation(values: np.ndarray, other: np.ndarray) -> str:
    # "above" / "below" when the means differ by more than two standard errors of the
    # difference, else "within"
    gap = float(values.mean() - other.mean())
    error = 2.0 * math.hypot(_error(values), _error(other))
    return "above" if gap > error else ("below" if gap < -error else "within")


def _same_relation(values: Values, other: Values) -> str | None:
    # the relation of values to other if it is the same on every setting, else None
    relations = {_relation(values[setting], other[setting]) for setting in values}
    return relations.pop() if len(relations) == 1 else None


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _means(values: Values, digits: int, percent: bool = False) -> str:
    # "0.62 on A and 0.64 on B"
    form = ".0%" if percent else f".{digits}f"
    return _join([f"{array.mean():{form}} on {setting}" for setting, array in values.items()])


def _insensitive(correlation: dict[str, Values], reference: str, base: str, digits: int) -> str:
    # the first sentence: which methods correlate clearly more than the reference everywhere
    above = [
        method
        for method, values in correlation.items()
        if method != reference and _same_relation(values, correlation[reference]) == "above"
    ]
    settings = len(correlation[reference])
    every = {1: "the captioner", 2: "both captioners"}.get(settings, "every captioner")
    reference_means = _means(correlation[reference], digits)
    if not above:
        return (
            f"No method's maps of different content words correlate clearly more than {base} "
            f"on {every} ({reference_means})."
        )
    listed = "; ".join(f"{title_of(m)} {_means(correlation[m], digits)}" for m in above)
    owners = _join([_possessive(title_of(m)) for m in above])
    return (
        f"On {every} {owners} maps of different content words correlate clearly more than "
        f"{base} ({reference_means}): {listed}. These maps hardly depend on the word."
    )


def _contrastive(correlation: dict[str, Values], reference: str, base: str, digits: int) -> str:
    # the second sentence: what the contrastive start does to LRP's correlation
    lrp, contrastive = correlation["lrp"], correlation["contrastive_lrp"]
    changes = " and ".join(
        f"from {lrp[s].mean():.{digits}f} to {contrastive[s].mean():.{digits}f} on {s}" for s in lrp
    )
    places = {
        "below": f"clearly below {base}",
        "within": f"within the error of {base}",
        "above": f"still clearly above {base}",
        None: f"on different sides of {base} on different captioners",
    }
    place = places[_same_relation(contrastive, correlation[reference])]
    return f"The contrastive start moves LRP's correlation {changes}: {place}."


def _price(negative: dict[str, Values], masses: dict[str, Values], digits: int) -> str:
    # the third sentence: the negative share and the mass on the named object
    text = (
        "Its price is a signed map: the share of its |R| that is negative is "
        f"{_means(negative['contrastive_lrp'], digits, True)} (LRP: "
        f"{_means(negative['lrp'], digits, True)})"
    )
    lrp, contrastive = masses["lrp"], masses["contrastive_lrp"]
    if not all(lrp[s].size and contrastive[s].size for s in lrp):
        return text + "."
    verdicts = {
        "above": "more of its positive relevance on the named object than LRP",
        "below": "less of its positive relevance on the named object than LRP",
        "within": "as much of its positive relevance on the named object as LRP",
        None: "its positive relevance on the named object differently from LRP per captioner",
    }
    verdict = verdicts[_same_relation(contrastive, lrp)]
    return f"{text}; it puts {verdict} ({_means(contrastive, digits)}; LRP: {_means(lrp, digits)})."


def word_dependence_statement(
    studies: Mapping[str, WordDependence], reference: str = "gradient", digits: int = 2
) -> str:
    """The finding of chapter 8's word-dependence study, from the numbers (setting →
    study, e.g. {"A": …, "B": …}): which methods' maps of different content words correlate
    clearly more than the `reference` method's on every setting, what the contrastive start
    does to LRP's correlation, and at what price (the share of `|R|` that is negative, the
    positive mass on the named object)."""
    if not studies:
        raise ValueError("studies is empty: pass {setting: WordDependence}")
    for setting, study in studies.items():
        missing = {reference, "lrp", "contrastive_lrp"} - set(study.correlation)
        if missing:
            raise ValueError(f"study {setting!r} lacks {sorted(missing)}")
    methods = [
        m for m in WORD_DEPENDENCE_METHODS if all(m in s.correlation for s in studies.values())
    ]
    correlation = {
        m: {setting: _finite(study.correlation[m]) for setting, study in studies.items()}
        for m in methods
    }
    negative = {
        m: {setting: _finite(study.negative[m]) for setting, study in studies.items()}
        for m in ("lrp", "contrastive_lrp")
    }
    masses = {
        m: {setting: _masses(study, m) for setting, study in studies.items()}
        for m in ("lrp", "contrastive_lrp")
    }
    name = title_of(reference)
    base = f"the plain {name}'s" if reference == "gradient" else f"{name}'s"
    return " ".join(
        [
            _insensitive(correlation, reference, base, digits),
            _contrastive(correlation, reference, base, digits),
            _price(negative, masses, digits),
        ]
    )
