"""Relevance heat maps: pixels and preceding words, per explained word (chapters 6–11).

::

    heatmap(relevance)                                   # one map, (H, W) or (3, H, W)
    relevance_grid(image, words, pixel_relevance)        # one panel per word, (L, [3,] H, W)
    word_relevance_strip(words, word_relevance)          # (L, L) preceding-word relevance
    static_explorer(image, words, pixels, word_rel)      # both in one figure (online book)
    explorer(image, words, pixels, word_rel)             # ipywidgets control, or the figure

Explainers return raw relevance; normalisation happens here and every figure says how
(DESIGN.md). Pixel relevance is summed over the colour channels and drawn with a symmetric
diverging map centred at 0 (red: supports the explained word, blue: opposes it); a map with
no negative value (Grad-CAM, attention) gets a sequential map from 0 instead. A few
pixels often carry very large relevance, so the colour scale is ± a high percentile of `|R|`
(`normalize_symmetric`, 99.5 by default) and larger values saturate. Preceding-word
relevance is normalised per explained word by `max_i |r_i|` (book/method.md §5).
"""

from __future__ import annotations

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
from captionlib.viz.style import (
    DIVERGING_CMAP,
    FONT_SIZE,
    PANEL_WIDTH,
    TITLE_SIZE,
    axes_size,
    caption,
    colour_map,
    column_width,
    grid_size,
    is_signed,
    panel_grid,
    scale_bar,
    styled,
    with_missing,
    wrap,
)

Array = Tensor | np.ndarray
DEFAULT_PERCENTILE = 99.5
RELEVANCE_CMAP = DIVERGING_CMAP
MIN_CELL_WIDTH = 0.34  # inches: a cell of the word matrix that fits "−.52" at 9 pt
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


def scale_label(
    scale: float, percentile: float = DEFAULT_PERCENTILE, quantity: str = "R", signed: bool = True
) -> str:
    """The text that states a map's colour scale (± s for a signed map, 0 … s otherwise)."""
    if scale == 0:
        return f"{quantity} = 0 everywhere"
    if not signed:
        return (
            f"{quantity}; colour scale 0 … {scale:.3g} = {percentile:g}th percentile "
            "(beyond: saturated)"
        )
    return (
        f"{quantity}; colour scale ± {scale:.3g} = {percentile:g}th percentile of "
        f"|{quantity}| (beyond: saturated)"
    )


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


def _grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) → a lightened grey image (H, W) so the colours of the overlay stand out."""
    return 0.35 + 0.65 * pixels.mean(axis=2)


def panel_scale(scale: float, signed: bool = True) -> str:
    """The scale written under a panel: "± s" for a signed map, "0 … s" for a non-negative one."""
    return f"± {scale:.2g}" if signed else f"0 … {scale:.2g}"


def _draw_map(
    ax: Axes,
    relevance_map: np.ndarray,
    clip_percentile: float,
    cmap: str,
    pixels: np.ndarray | None,
    signed: bool = True,
) -> tuple[AxesImage, float]:
    """Draw one map, from −s to s (signed) or 0 to s, s its percentile of |R|; over a grey
    image when `pixels` is given, as R / s clipped to [−1, 1] (or [0, 1]), opacity |R| / s."""
    normalized, scale = normalize_symmetric(relevance_map, clip_percentile)
    low = -1.0 if signed else 0.0
    ax.set_xticks([])
    ax.set_yticks([])
    if pixels is None:
        limit = scale if scale > 0 else 1.0
        drawn = ax.imshow(
            relevance_map, cmap=cmap, vmin=low * limit, vmax=limit, interpolation="nearest"
        )
        return drawn, scale
    ax.imshow(_grey(pixels), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    shown = np.clip(normalized, low, 1.0)
    drawn = ax.imshow(
        shown, cmap=cmap, vmin=low, vmax=1.0, alpha=np.abs(shown), interpolation="nearest"
    )
    return drawn, scale


@styled
def heatmap(
    relevance: Array,
    ax: Axes | None = None,
    clip_percentile: float = DEFAULT_PERCENTILE,
    cmap: str | None = None,
    colorbar: bool = True,
    title: str | None = None,
    signed: bool | None = None,
    quantity: str | None = None,
) -> AxesImage:
    """Draw one map, (H, W) or (3, H, W) (summed over channels).

    A signed map (`signed=None`: any negative value) is drawn with a diverging colour map
    centred at 0, from − to + the `clip_percentile`-th percentile of `|R|`; a non-negative
    one (attention, Grad-CAM) with a sequential map from 0 to that percentile. The colour bar
    (or, without one, the x label) names `quantity` ("R" for signed, "map value" otherwise)
    and states the scale. Returns the drawn image.
    """
    relevance_map = pixel_map(relevance)
    signed = is_signed(relevance_map) if signed is None else signed
    quantity = quantity or ("R" if signed else "map value")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.0, 3.4), layout="constrained")
    drawn, scale = _draw_map(
        ax, relevance_map, clip_percentile, cmap or colour_map(signed), None, signed
    )
    label = scale_label(scale, clip_percentile, quantity, signed)
    width, height = axes_size(ax)
    if colorbar:
        bar = ax.figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(wrap(label, max(height, 2.0)), fontsize=FONT_SIZE)
    else:
        ax.set_xlabel(wrap(label, max(width, 1.5)), fontsize=FONT_SIZE)
    if title is not None:
        ax.set_title(wrap(title, max(width, 1.5), TITLE_SIZE), fontsize=TITLE_SIZE)
    return drawn


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


def grid_caption(
    clip_percentile: float = DEFAULT_PERCENTILE, overlay: bool = True, signed: bool = True
) -> str:
    """The caption that states how `relevance_grid` normalises its panels."""
    if not signed:
        text = (
            "Non-negative pixel map per word (sum over colour channels); each panel scaled "
            f"from 0 to its {clip_percentile:g}th percentile (stated under it), larger values "
            "saturate"
        )
        return text + ("; overlay opacity ∝ value" if overlay else "")
    text = (
        "Pixel relevance per word (sum over colour channels); red supports, blue opposes the "
        f"word; each panel scaled to ± its {clip_percentile:g}th percentile of |R| "
        "(stated under it), larger values saturate"
    )
    return text + ("; overlay opacity ∝ |R|" if overlay else "")


def _bar_label(signed: bool) -> str:
    if signed:
        return "R / that panel's scale (± under it)"
    return "value / that panel's scale (0 … under it)"


def _draw_pixel_panels(
    figure: Figure | SubFigure,
    pixels: np.ndarray,
    maps: np.ndarray,
    words: Sequence[str],
    columns: int,
    clip_percentile: float,
    overlay: bool,
    signed: bool,
    cmap: str | None = None,
    image_title: str = "image",
) -> list[Axes]:
    """The image, then one panel per word (at most 4 per row), and a colour bar under them;
    returns the word panels' axes."""
    count = len(words) + 1
    rows, shown = panel_grid(count, columns)
    axes = list(figure.subplots(rows, shown, squeeze=False).flatten())
    for ax in axes[count:]:
        ax.set_axis_off()
    axes[0].imshow(pixels, interpolation="nearest")
    axes[0].set_title(wrap(image_title, PANEL_WIDTH), fontsize=FONT_SIZE)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    colours = cmap or colour_map(signed)
    for ax, word, relevance_map in zip(axes[1:count], words, maps, strict=True):
        _, scale = _draw_map(
            ax, relevance_map, clip_percentile, colours, pixels if overlay else None, signed
        )
        ax.set_title(
            wrap(word, PANEL_WIDTH - 0.3, TITLE_SIZE), fontsize=TITLE_SIZE, fontweight="bold"
        )
        ax.set_xlabel(panel_scale(scale, signed), fontsize=FONT_SIZE)
    scale_bar(figure, axes[1:count], signed, _bar_label(signed))
    return axes[1:count]


@styled
def relevance_grid(
    image: Array,
    words: Sequence[str],
    pixel_relevance: Array,
    columns: int = 4,
    clip_percentile: float = DEFAULT_PERCENTILE,
    overlay: bool = True,
    normalized: bool = False,
    cmap: str | None = None,
    signed: bool | None = None,
    image_title: str = "image",
    title: str | None = None,
) -> Figure:
    """The image, then one relevance panel per explained word (at most 4 panels per row: a
    larger `columns` wraps at 4).

    image (3, H, W) uint8, float in [0, 1], or ImageNet-normalised with `normalized=True`;
    pixel_relevance (L, H, W) or (L, 3, H, W) (summed over channels), one map per word.
    Each panel is scaled to ± its own percentile of `|R|`, printed under it, so panels show
    where relevance lies, not how much compared with other panels. `overlay=True` draws the
    map over a grey copy of the image with opacity ∝ `|R|`; False draws the map alone.
    Signed maps (`signed=None`: any map has a negative value) get the diverging colour map,
    non-negative ones (Grad-CAM) a sequential map from 0. `title` opens the caption.
    """
    pixels = image_array(image, normalized)
    maps = pixel_maps(pixel_relevance)
    _check_pixels(pixels, maps, words, columns)
    signed = is_signed(*maps) if signed is None else signed
    text = grid_caption(clip_percentile, overlay, signed)
    if title is not None:
        text = f"{title}\n{text}"
    rows, shown = panel_grid(len(words) + 1, columns)
    figure = plt.figure(figsize=grid_size(rows, shown, text), layout="constrained")
    _draw_pixel_panels(
        figure, pixels, maps, words, columns, clip_percentile, overlay, signed, cmap, image_title
    )
    caption(figure, text)
    return figure


def input_words(words: Sequence[str], start_token: str = START_TOKEN) -> list[str]:
    """The decoder's input words when `words` are explained: <start>, then all but the last."""
    return [start_token, *words[:-1]]


def cell_text(value: float) -> str:
    """A normalised relevance in [−1, 1] as a matrix cell writes it: ".52", "−.31", "1", "0"."""
    rounded = round(value, 2)
    if rounded == 0:
        return "0"
    sign = "−" if rounded < 0 else ""
    if abs(rounded) >= 1:
        return f"{sign}1"
    return sign + f"{abs(rounded):.2f}".removeprefix("0")


def word_matrix(
    ax: Axes,
    words: Sequence[str],
    word_relevance: Array,
    start_token: str = START_TOKEN,
    cmap: str = RELEVANCE_CMAP,
    labels: bool = True,
    numbers: bool | None = None,
) -> AxesImage:
    """Draw the (L, L) preceding-word relevance on `ax`, each row divided by its `max_i |r_i|`
    (`row_normalize`); cells after the explained word grey. `labels=False` leaves out the
    explained words (a panel beside another); `numbers`: write each cell's value (None: when
    a cell is at least `MIN_CELL_WIDTH` wide)."""
    normalized = row_normalize(word_relevance)
    length = len(words)
    if normalized.shape[0] != length or not words:
        raise ValueError(
            f"got {length} words but word_relevance is {normalized.shape} (needs L ≥ 1)"
        )
    shown = np.where(np.tril(np.ones_like(normalized)) > 0, normalized, np.nan)
    drawn = ax.imshow(
        shown, cmap=with_missing(cmap), vmin=-1.0, vmax=1.0, interpolation="nearest", aspect="auto"
    )
    ax.set_xticks(range(length), input_words(words, start_token), rotation=45, ha="right")
    ax.set_yticks(range(length), [f"→ {word}" for word in words] if labels else [])
    ax.set_xlabel("preceding input word\n(grey: after the explained word)", fontsize=FONT_SIZE)
    if labels:
        ax.set_ylabel("explained word", fontsize=FONT_SIZE)
    if numbers is None:
        numbers = axes_size(ax)[0] / length >= MIN_CELL_WIDTH
    if numbers:
        for row in range(length):
            for column in range(row + 1):
                value = normalized[row, column]
                colour = "white" if abs(value) > 0.6 else "black"
                ax.text(
                    column,
                    row,
                    cell_text(value),
                    ha="center",
                    va="center",
                    fontsize=FONT_SIZE,
                    color=colour,
                )
    return drawn


def strip_caption() -> str:
    """The caption that states how `word_relevance_strip` normalises its rows."""
    return (
        "Relevance of each preceding word (columns) for each explained word (rows); red "
        "supports, blue opposes; each row normalised by its max_i |r_i| (numbers: .52 = 0.52)"
    )


@styled
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
    i = 0, then words[i − 1]). Cells above the diagonal are empty (grey). Cells wide enough
    for their number show it.
    """
    numbers = None
    if ax is None:
        width = column_width(0.5 * len(words) + 2.6)
        height = 0.32 * len(words) + 2.6
        figure, ax = plt.subplots(figsize=(width, height), layout="constrained")
        numbers = (width - 2.4) / max(len(words), 1) >= MIN_CELL_WIDTH
    drawn = word_matrix(ax, words, word_relevance, start_token, cmap, numbers=numbers)
    bar = ax.figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("r / max_i |r_i| (per row)", fontsize=FONT_SIZE)
    width = ax.get_figure(root=True).get_figwidth()
    ax.set_title(wrap(strip_caption(), width - 0.3), fontsize=FONT_SIZE)
    return ax.figure


@styled
def static_explorer(
    image: Array,
    words: Sequence[str],
    pixel_relevance: Array,
    word_relevance: Array | None = None,
    columns: int = 4,
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
    if word_relevance is not None and row_normalize(word_relevance).shape[0] != len(words):
        raise ValueError(
            f"got {len(words)} words but word_relevance is {tuple(word_relevance.shape)}"
        )
    signed = is_signed(*maps)
    text = grid_caption(clip_percentile, signed=signed)
    if word_relevance is not None:
        text += ".\n" + strip_caption()
    rows, shown = panel_grid(len(words) + 1, columns)
    width, grid_height = grid_size(rows, shown, text)
    matrix_height = 0.0 if word_relevance is None else 0.32 * len(words) + 2.2
    figure = plt.figure(figsize=(width, grid_height + matrix_height), layout="constrained")
    if word_relevance is None:
        _draw_pixel_panels(figure, pixels, maps, words, columns, clip_percentile, True, signed)
    else:
        top, bottom = figure.subfigures(2, 1, height_ratios=[grid_height, matrix_height])
        _draw_pixel_panels(top, pixels, maps, words, columns, clip_percentile, True, signed)
        ax = bottom.subplots()
        drawn = word_matrix(
            ax,
            words,
            word_relevance,
            start_token,
            numbers=(width - 2.4) / len(words) >= MIN_CELL_WIDTH,
        )
        bottom.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04).set_label(
            "r / max_i |r_i| (per row)", fontsize=FONT_SIZE
        )
    caption(figure, text)
    return figure


@styled
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
    """One explained word: the image, its pixel relevance (a colour bar under it) and (if given)
    a bar per preceding word, normalised by `max_i |r_i|`. The view `explorer` shows for the
    selected word."""
    pixels = image_array(image, normalized)
    maps = pixel_maps(pixel_relevance)
    _check_pixels(pixels, maps, words)
    if not 0 <= index < len(words):
        raise ValueError(f"word index {index} out of range for {len(words)} words")
    panels = 2 if word_relevance is None else 3
    figure, axes = plt.subplots(
        1,
        panels,
        figsize=(column_width(2.5 * panels), 3.9),
        layout="constrained",
        width_ratios=[1.0, 1.0, 1.1][:panels],
    )
    axes[0].imshow(pixels, interpolation="nearest")
    axes[0].set_title("image", fontsize=FONT_SIZE)
    axes[0].set_axis_off()
    signed = is_signed(maps[index])
    _, scale = _draw_map(axes[1], maps[index], clip_percentile, colour_map(signed), pixels, signed)
    axes[1].set_title(wrap(f'pixels → "{words[index]}"', 2.2, TITLE_SIZE), fontsize=TITLE_SIZE)
    scale_text = scale_label(scale, clip_percentile, "R" if signed else "map value", signed)
    axes[1].set_xlabel(wrap(scale_text, 2.3), fontsize=FONT_SIZE)
    scale_bar(figure, axes[1], signed, "R / scale" if signed else "value / scale")
    if word_relevance is not None:
        row = row_normalize(word_relevance)[index, : index + 1]  # (index + 1,)
        names = input_words(words, start_token)[: index + 1]
        colours = colormaps[RELEVANCE_CMAP]((row + 1.0) / 2.0)
        axes[2].barh(range(len(row)), row, color=colours, edgecolor="0.3")
        axes[2].set_yticks(range(len(row)), names, fontsize=FONT_SIZE)
        axes[2].invert_yaxis()
        axes[2].set_xlim(-1.05, 1.05)
        axes[2].axvline(0.0, color="0.3", linewidth=0.8)
        axes[2].set_title(
            wrap(f'preceding words → "{words[index]}"', 2.4, TITLE_SIZE), fontsize=TITLE_SIZE
        )
        axes[2].set_xlabel("r / max_i |r_i|", fontsize=FONT_SIZE)
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
