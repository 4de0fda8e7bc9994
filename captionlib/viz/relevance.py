"""Relevance heat maps: pixels and preceding words, per explained word (chapters 6–11).

::

    heatmap(relevance)                                   # one map, (H, W) or (3, H, W)
    relevance_grid(image, words, pixel_relevance)        # one panel per word, (L, [3,] H, W)
    word_relevance_strip(words, word_relevance)          # (L, L) preceding-word relevance
    static_explorer(image, words, pixels, word_rel)      # both in one figure (online book)
    explorer(image, words, pixels, word_rel)             # ipywidgets control, or the figure

Explainers return raw relevance; normalisation happens here and every figure says how
(DESIGN.md). Pixel relevance is summed over the colour channels and drawn with a symmetric
diverging map centred at 0 (red: supports the explained word, blue: opposes it). A few
pixels often carry very large relevance, so the colour scale is ± a high percentile of `|R|`
(`normalize_symmetric`, 99.5 by default) and larger values saturate. Preceding-word
relevance is normalised per explained word by `max_i |r_i|` (book/method.md §5).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.image import AxesImage
from torch import Tensor

from captionlib.viz.attention import as_float_array, image_array

Array = Tensor | np.ndarray
DEFAULT_PERCENTILE = 99.5
RELEVANCE_CMAP = "bwr"
START_TOKEN = "<start>"


def _as_array(values: Array, name: str) -> np.ndarray:
    values = as_float_array(values, name)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def normalize_symmetric(
    values: Array, percentile: float = DEFAULT_PERCENTILE
) -> tuple[np.ndarray, float]:
    """Scale a map to [-1, 1] around 0: (values / s clipped to [-1, 1], s).

    s = the `percentile`-th percentile of `|values|` (numpy's linear interpolation), so values
    beyond ± s saturate at ±1. When that percentile is 0 but the map is not (fewer nonzero
    entries than 100 − percentile %), s = `max |values|`. An all-zero map gives (zeros, 0.0).
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    array = _as_array(values, "relevance")
    if array.size == 0:
        raise ValueError("relevance is empty")
    magnitude = np.abs(array)
    scale = float(np.percentile(magnitude, percentile))
    if scale == 0:
        scale = float(magnitude.max())
    if scale == 0:
        return np.zeros_like(array), 0.0
    return np.clip(array / scale, -1.0, 1.0), scale


def scale_label(scale: float, percentile: float = DEFAULT_PERCENTILE) -> str:
    """The text that states a map's colour scale."""
    if scale == 0:
        return "R = 0 everywhere"
    return f"R; colour scale ± {scale:.3g} = {percentile:g}th percentile of |R| (beyond: saturated)"


def pixel_map(relevance: Array) -> np.ndarray:
    """One pixel-relevance map (H, W), or (3, H, W) summed over channels → (H, W)."""
    values = _as_array(relevance, "relevance")
    if values.ndim == 3 and values.shape[0] == 3:
        return values.sum(axis=0)
    if values.ndim != 2:
        raise ValueError(f"relevance must be (H, W) or (3, H, W), got shape {values.shape}")
    return values


def pixel_maps(pixel_relevance: Array) -> np.ndarray:
    """Per-word maps (L, H, W), or (L, 3, H, W) summed over channels → (L, H, W)."""
    values = _as_array(pixel_relevance, "pixel_relevance")
    if values.ndim == 4 and values.shape[1] == 3:
        return values.sum(axis=1)
    if values.ndim != 3:
        raise ValueError(
            f"pixel_relevance must be (L, H, W) or (L, 3, H, W), got shape {values.shape}"
        )
    return values


def row_normalize(word_relevance: Array) -> np.ndarray:
    """Preceding-word relevance (L, L) divided row by row by `max_i |r_i|` (zero rows stay 0).

    Checks that the matrix is lower-triangular: row t explains word t+1, column i is input
    word i, and an input after the explained word (i > t) cannot have relevance.
    """
    values = _as_array(word_relevance, "word_relevance")
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"word_relevance must be a square (L, L) matrix, got {values.shape}")
    if np.any(np.triu(values, k=1) != 0):
        raise ValueError(
            "word_relevance must be lower-triangular: entry [t, i] with i > t is the relevance "
            "of an input word after the explained word"
        )
    peaks = np.abs(values).max(axis=1, keepdims=True)  # (L, 1)
    return np.divide(values, peaks, out=np.zeros_like(values), where=peaks > 0)


def _overlay_rgba(normalized: np.ndarray, cmap: str) -> np.ndarray:
    """(H, W) in [-1, 1] → RGBA (H, W, 4): diverging colour, opacity = |value|."""
    rgba = colormaps[cmap]((normalized + 1.0) / 2.0)
    rgba[..., 3] = np.abs(normalized)
    return rgba


def _grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) → a lightened grey image (H, W) so the colours of the overlay stand out."""
    return 0.35 + 0.65 * pixels.mean(axis=2)


def _draw_map(
    ax: Axes,
    relevance_map: np.ndarray,
    clip_percentile: float,
    cmap: str,
    pixels: np.ndarray | None,
) -> tuple[AxesImage, float]:
    """Draw one map; over a grey image (opacity ∝ |R|) when `pixels` is given."""
    normalized, scale = normalize_symmetric(relevance_map, clip_percentile)
    ax.set_xticks([])
    ax.set_yticks([])
    if pixels is None:
        limit = scale if scale > 0 else 1.0
        drawn = ax.imshow(
            relevance_map, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest"
        )
        return drawn, scale
    ax.imshow(_grey(pixels), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    return ax.imshow(_overlay_rgba(normalized, cmap), interpolation="nearest"), scale


def heatmap(
    relevance: Array,
    ax: Axes | None = None,
    clip_percentile: float = DEFAULT_PERCENTILE,
    cmap: str = RELEVANCE_CMAP,
    colorbar: bool = True,
    title: str | None = None,
) -> AxesImage:
    """Draw one relevance map, (H, W) or (3, H, W) (summed over channels), centred at 0.

    The colour scale is ± the `clip_percentile`-th percentile of `|R|`; the colour bar (or,
    without one, the x label) says so. Returns the drawn image.
    """
    relevance_map = pixel_map(relevance)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.0, 3.4))
    drawn, scale = _draw_map(ax, relevance_map, clip_percentile, cmap, pixels=None)
    label = scale_label(scale, clip_percentile)
    if colorbar:
        bar = ax.figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(label, fontsize=7)
    else:
        ax.set_xlabel(label, fontsize=7)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return drawn


def _caption(figure: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (about 15 characters per inch at 8 pt)."""
    width = max(30, int(figure.get_figwidth() * 15))
    lines = [textwrap.fill(line, width) for line in text.split("\n")]
    figure.suptitle("\n".join(lines), fontsize=8)


def _check_pixels(
    pixels: np.ndarray, maps: np.ndarray, words: Sequence[str], columns: int = 1
) -> None:
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if maps.shape[0] != len(words):
        raise ValueError(f"got {len(words)} words but pixel_relevance has {maps.shape[0]} maps")
    if maps.shape[1:] != pixels.shape[:2]:
        raise ValueError(
            f"pixel_relevance maps are {maps.shape[1:]} but the image is {pixels.shape[:2]}"
        )


def grid_caption(clip_percentile: float = DEFAULT_PERCENTILE, overlay: bool = True) -> str:
    """The caption that states how `relevance_grid` normalises its panels."""
    text = (
        "Pixel relevance per word (sum over colour channels); red supports, blue opposes the "
        f"word; each panel scaled to ± its {clip_percentile:g}th percentile of |R| "
        "(stated under it), larger values saturate"
    )
    return text + ("; overlay opacity ∝ |R|" if overlay else "")


def _draw_pixel_panels(
    figure: Figure | SubFigure,
    pixels: np.ndarray,
    maps: np.ndarray,
    words: Sequence[str],
    columns: int,
    clip_percentile: float,
    overlay: bool,
    cmap: str,
) -> list[Axes]:
    """The image, then one panel per word; returns the word panels' axes."""
    count = len(words) + 1
    columns = min(columns, count)
    axes = list(figure.subplots(math.ceil(count / columns), columns, squeeze=False).flatten())
    for ax in axes[count:]:
        ax.set_axis_off()
    axes[0].imshow(pixels, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    for ax, word, relevance_map in zip(axes[1:count], words, maps, strict=True):
        _, scale = _draw_map(ax, relevance_map, clip_percentile, cmap, pixels if overlay else None)
        ax.set_title(word, fontsize=10, fontweight="bold")
        ax.set_xlabel(f"± {scale:.2g}", fontsize=8)
    return axes[1:count]


def relevance_grid(
    image: Array,
    words: Sequence[str],
    pixel_relevance: Array,
    columns: int = 6,
    clip_percentile: float = DEFAULT_PERCENTILE,
    overlay: bool = True,
    normalized: bool = False,
    cmap: str = RELEVANCE_CMAP,
) -> Figure:
    """The image, then one relevance panel per explained word.

    image (3, H, W) uint8, float in [0, 1], or ImageNet-normalised with `normalized=True`;
    pixel_relevance (L, H, W) or (L, 3, H, W) (summed over channels), one map per word.
    Each panel is scaled to ± its own percentile of `|R|`, printed under it, so panels show
    where relevance lies, not how much compared with other panels. `overlay=True` draws the
    map over a grey copy of the image with opacity ∝ `|R|`; False draws the map alone.
    """
    pixels = image_array(image, normalized)
    maps = pixel_maps(pixel_relevance)
    _check_pixels(pixels, maps, words, columns)
    count = len(words) + 1
    shown_columns = min(columns, count)
    rows = math.ceil(count / shown_columns)
    figure = plt.figure(figsize=(2.1 * shown_columns, 2.6 * rows + 0.6), layout="constrained")
    _draw_pixel_panels(figure, pixels, maps, words, columns, clip_percentile, overlay, cmap)
    _caption(figure, grid_caption(clip_percentile, overlay))
    return figure


def input_words(words: Sequence[str], start_token: str = START_TOKEN) -> list[str]:
    """The decoder's input words when `words` are explained: <start>, then all but the last."""
    return [start_token, *words[:-1]]


def _draw_word_matrix(
    ax: Axes, words: Sequence[str], normalized: np.ndarray, start_token: str, cmap: str
) -> AxesImage:
    shown = np.where(np.tril(np.ones_like(normalized)) > 0, normalized, np.nan)
    colours = colormaps[cmap].with_extremes(bad="0.92")
    drawn = ax.imshow(shown, cmap=colours, vmin=-1.0, vmax=1.0, interpolation="nearest")
    length = len(words)
    ax.set_xticks(range(length), input_words(words, start_token), rotation=45, ha="right")
    ax.set_yticks(range(length), [f"→ {word}" for word in words])
    ax.set_xlabel("preceding input word", fontsize=8)
    ax.set_ylabel("explained word", fontsize=8)
    ax.tick_params(labelsize=8)
    if length <= 20:
        for row in range(length):
            for column in range(row + 1):
                value = normalized[row, column]
                style = {"ha": "center", "va": "center", "fontsize": 6}
                style["color"] = "white" if abs(value) > 0.6 else "black"
                ax.text(column, row, f"{value:+.2f}", **style)
    return drawn


def strip_caption() -> str:
    """The caption that states how `word_relevance_strip` normalises its rows."""
    return (
        "Relevance of each preceding word (columns) for each explained word (rows); red "
        "supports, blue opposes; each row normalised by its max_i |r_i|"
    )


def word_relevance_strip(
    words: Sequence[str],
    word_relevance: Array,
    start_token: str = START_TOKEN,
    ax: Axes | None = None,
    cmap: str = RELEVANCE_CMAP,
) -> Figure:
    """Preceding-word relevance, one row per explained word, normalised by `max_i |r_i|`.

    words: the L explained words (word t is predicted at step t); word_relevance (L, L)
    lower-triangular: row t explains word t, column i is input word i (`start_token` at
    i = 0, then words[i − 1]). Cells above the diagonal are empty (grey).
    """
    normalized = row_normalize(word_relevance)
    if normalized.shape[0] != len(words) or not words:
        raise ValueError(
            f"got {len(words)} words but word_relevance is {normalized.shape} (needs L ≥ 1)"
        )
    if ax is None:
        side = 0.45 * len(words) + 2.2
        figure, ax = plt.subplots(figsize=(side + 1.0, side), layout="constrained")
    drawn = _draw_word_matrix(ax, words, normalized, start_token, cmap)
    bar = ax.figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("r / max_i |r_i| (per row)", fontsize=7)
    width = max(30, int(ax.figure.get_figwidth() * 13))
    ax.set_title(textwrap.fill(strip_caption(), width), fontsize=8)
    return ax.figure


def static_explorer(
    image: Array,
    words: Sequence[str],
    pixel_relevance: Array,
    word_relevance: Array | None = None,
    columns: int = 6,
    clip_percentile: float = DEFAULT_PERCENTILE,
    normalized: bool = False,
    start_token: str = START_TOKEN,
) -> Figure:
    """Everything `explorer` can show, as one static figure (for the online book).

    Top: `relevance_grid`'s panels; bottom (when word_relevance (L, L) is given): the
    preceding-word matrix of `word_relevance_strip`. Same normalisation as those two.
    """
    pixels = image_array(image, normalized)
    maps = pixel_maps(pixel_relevance)
    _check_pixels(pixels, maps, words, columns)
    word_matrix = None
    if word_relevance is not None:
        word_matrix = row_normalize(word_relevance)
        if word_matrix.shape[0] != len(words):
            raise ValueError(f"got {len(words)} words but word_relevance is {word_matrix.shape}")
    count = len(words) + 1
    shown_columns = min(columns, count)
    grid_height = 2.6 * math.ceil(count / shown_columns)
    matrix_height = 0.0 if word_matrix is None else 0.35 * len(words) + 2.4
    figure = plt.figure(
        figsize=(max(2.1 * shown_columns, 6.0), grid_height + matrix_height + 0.8),
        layout="constrained",
    )
    caption = grid_caption(clip_percentile)
    if word_matrix is None:
        _draw_pixel_panels(
            figure, pixels, maps, words, columns, clip_percentile, True, RELEVANCE_CMAP
        )
    else:
        top, bottom = figure.subfigures(2, 1, height_ratios=[grid_height, matrix_height])
        _draw_pixel_panels(top, pixels, maps, words, columns, clip_percentile, True, RELEVANCE_CMAP)
        ax = bottom.subplots()
        drawn = _draw_word_matrix(ax, words, word_matrix, start_token, RELEVANCE_CMAP)
        bottom.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04).set_label(
            "r / max_i |r_i| (per row)", fontsize=7
        )
        caption += ".\n" + strip_caption()
    _caption(figure, caption)
    return figure


def word_explanation(
    image: Array,
    words: Sequence[str],
    pixel_relevance: Array,
    index: int,
    word_relevance: Array | None = None,
    clip_percentile: float = DEFAULT_PERCENTILE,
    normalized: bool = False,
    start_token: str = START_TOKEN,
) -> Figure:
    """One explained word: the image, its pixel relevance and (if given) a bar per preceding
    word, normalised by `max_i |r_i|`. The view `explorer` shows for the selected word."""
    pixels = image_array(image, normalized)
    maps = pixel_maps(pixel_relevance)
    _check_pixels(pixels, maps, words)
    if not 0 <= index < len(words):
        raise ValueError(f"word index {index} out of range for {len(words)} words")
    panels = 2 if word_relevance is None else 3
    figure, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 3.4), layout="constrained")
    axes[0].imshow(pixels, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[0].set_axis_off()
    _, scale = _draw_map(axes[1], maps[index], clip_percentile, RELEVANCE_CMAP, pixels)
    axes[1].set_title(f'pixels → "{words[index]}"', fontsize=9)
    axes[1].set_xlabel(textwrap.fill(scale_label(scale, clip_percentile), 45), fontsize=7)
    if word_relevance is not None:
        row = row_normalize(word_relevance)[index, : index + 1]  # (index + 1,)
        names = input_words(words, start_token)[: index + 1]
        colours = colormaps[RELEVANCE_CMAP]((row + 1.0) / 2.0)
        axes[2].barh(range(len(row)), row, color=colours, edgecolor="0.3")
        axes[2].set_yticks(range(len(row)), names, fontsize=8)
        axes[2].invert_yaxis()
        axes[2].set_xlim(-1.05, 1.05)
        axes[2].axvline(0.0, color="0.3", linewidth=0.8)
        axes[2].set_title(f'preceding words → "{words[index]}"', fontsize=9)
        axes[2].set_xlabel("r / max_i |r_i|", fontsize=8)
    return figure


def explorer(
    image: Array,
    words: Sequence[str],
    pixel_relevance: Array,
    word_relevance: Array | None = None,
    clip_percentile: float = DEFAULT_PERCENTILE,
    normalized: bool = False,
    start_token: str = START_TOKEN,
) -> Any:
    """An ipywidgets control to step through the explained words (live kernels).

    Returns a `VBox` (a word dropdown above the selected word's `word_explanation`), or,
    when ipywidgets is not importable, the `static_explorer` figure.
    """
    arguments = {"clip_percentile": clip_percentile, "normalized": normalized}
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        return static_explorer(
            image, words, pixel_relevance, word_relevance, start_token=start_token, **arguments
        )
    figure = word_explanation(
        image, words, pixel_relevance, 0, word_relevance, start_token=start_token, **arguments
    )  # validates every input before any widget exists
    choice = widgets.Dropdown(
        options=[(f"{index}: {word}", index) for index, word in enumerate(words)],
        value=0,
        description="word",
    )
    output = widgets.Output()

    def show(current: Figure) -> None:
        with output:
            output.clear_output(wait=True)
            display(current)
        plt.close(current)

    def redraw(change: dict[str, Any]) -> None:
        show(
            word_explanation(
                image,
                words,
                pixel_relevance,
                change["new"],
                word_relevance,
                start_token=start_token,
                **arguments,
            )
        )

    choice.observe(redraw, names="value")
    show(figure)
    return widgets.VBox([choice, output])
