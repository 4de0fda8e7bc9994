"""The book's figure style: column width, font sizes, colour maps, method names (all chapters).

::

    @styled                                   # every figure function of captionlib.viz
    def my_figure(...) -> Figure: ...
    rows, columns = panel_grid(9, 8)          # (3, 4): at most 4 panels per row
    method_title("gradient_x_input")          # "gradient × input"
    colour_map(signed=True)                   # "bwr"; non-negative maps get "inferno"

The book shows a figure at about 740 px wide, which at matplotlib's 100 dpi (with the 0.1-inch
margins of ``bbox_inches="tight"``) is a figure `COLUMN_WIDTH` = 7.2 inches wide: text drawn
at `FONT_SIZE` = 9 pt or more then appears at 9 pt or more on screen. `figure_style` sets
those sizes only while a figure function runs (no global change at import). Non-negative maps
(attention weights α, Grad-CAM) use a sequential colour map, signed relevance a diverging one
symmetric around 0; missing values are drawn in `MISSING_COLOUR`, hatched, and named.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Patch, Rectangle

COLUMN_WIDTH = 7.2  # inches: 720 px at 100 dpi, 740 px with the margins of bbox "tight"
MAX_WIDTH = 7.5  # no figure is wider
MAX_COLUMNS = 4  # panels per row
PANEL_WIDTH = COLUMN_WIDTH / MAX_COLUMNS  # 1.8 inches
FONT_SIZE = 9  # the smallest text anywhere in a figure
TITLE_SIZE = 10
SEQUENTIAL_CMAP = "inferno"
DIVERGING_CMAP = "bwr"
MISSING_COLOUR = "0.7"  # grey: no colour map of the book passes near it
MISSING_HATCH = "///"
CHARACTER_WIDTH = 0.55  # average character width in em (DejaVu Sans, with some margin)

STYLE = {
    "font.size": FONT_SIZE,
    "axes.titlesize": TITLE_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE,
    "ytick.labelsize": FONT_SIZE,
    "legend.fontsize": FONT_SIZE,
    "legend.title_fontsize": FONT_SIZE,
    "figure.titlesize": TITLE_SIZE,
    "figure.labelsize": FONT_SIZE,
    "image.cmap": SEQUENTIAL_CMAP,
}

METHOD_TITLES = {
    "lrp": "LRP",
    "attnlrp": "AttnLRP",
    "attention": "attention",
    "gradient": "gradient",
    "gradient_x_input": "gradient × input",
    "guided_backprop": "guided backprop",
    "gradcam": "Grad-CAM",
    "guided_gradcam": "guided Grad-CAM",
    "random": "random",
}

Parameters = ParamSpec("Parameters")
Result = TypeVar("Result")


def method_title(method: str) -> str:
    """A method's name in panel titles and legends ("gradcam" → "Grad-CAM"); others as is."""
    return METHOD_TITLES.get(method, method)


@contextmanager
def figure_style() -> Iterator[None]:
    """The book's font sizes and default colour map while the block runs (`STYLE`).

    Only the keys of `STYLE` are set and restored: `plt.rc_context` would also restore
    ``interactive``, which a notebook's first figure switches on (the inline backend is
    chosen then), and later figures of that notebook would not be shown.
    """
    saved = {key: matplotlib.rcParams[key] for key in STYLE}
    matplotlib.rcParams.update(STYLE)
    try:
        yield
    finally:
        matplotlib.rcParams.update(saved)


def styled(function: Callable[Parameters, Result]) -> Callable[Parameters, Result]:
    """Run a figure function inside `figure_style` (the decorator of every figure function)."""

    @functools.wraps(function)
    def draw(*args: Parameters.args, **kwargs: Parameters.kwargs) -> Result:
        with figure_style():
            return function(*args, **kwargs)

    return draw


def panel_grid(count: int, columns: int) -> tuple[int, int]:
    """(rows, columns) for `count` panels: `columns` clamped to 1 … `MAX_COLUMNS` and `count`."""
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if count < 1:
        raise ValueError(f"need at least one panel, got {count}")
    shown = min(columns, MAX_COLUMNS, count)
    return math.ceil(count / shown), shown


def column_width(width: float) -> float:
    """A requested figure width in inches, clamped to the column (`COLUMN_WIDTH`)."""
    return min(width, COLUMN_WIDTH)


def characters_per_line(width: float, fontsize: float = FONT_SIZE) -> int:
    """About how many characters of `fontsize` points fit on `width` inches."""
    return max(12, int(width * 72 / (CHARACTER_WIDTH * fontsize)))


def wrap(text: str, width: float, fontsize: float = FONT_SIZE) -> str:
    """`text` wrapped to `width` inches at `fontsize` points; its own line breaks are kept."""
    limit = characters_per_line(width, fontsize)
    return "\n".join(textwrap.fill(line, limit) for line in text.split("\n"))


def legend_below(figure: Figure, handles: dict, columns: int) -> None:
    """One legend for all panels, under the axes (never over the data): label → handle."""
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(columns, len(handles)),
        fontsize=FONT_SIZE,
    )


def caption(figure: Figure | SubFigure, text: str, fontsize: float = FONT_SIZE) -> None:
    """`text` as the figure's title, wrapped to the figure's width."""
    width = figure.get_figure(root=True).get_figwidth()
    figure.suptitle(wrap(text, width - 0.2, fontsize), fontsize=fontsize)


def is_signed(*maps: np.ndarray) -> bool:
    """True when any map has a negative value beyond float noise (1e-6 of its largest `|value|`)."""
    for values in maps:
        magnitude = float(np.nanmax(np.abs(values))) if values.size else 0.0
        if magnitude > 0 and float(np.nanmin(values)) < -1e-6 * magnitude:
            return True
    return False


def colour_map(signed: bool) -> str:
    """The diverging map for signed values, the sequential one for non-negative values."""
    return DIVERGING_CMAP if signed else SEQUENTIAL_CMAP


def with_missing(cmap: str | Colormap) -> Colormap:
    """`cmap` drawing NaN cells in `MISSING_COLOUR` (opaque grey), never in a value's colour."""
    base = colormaps[cmap] if isinstance(cmap, str) else cmap
    return base.with_extremes(bad=MISSING_COLOUR)


def hatch_missing(ax: Axes, values: np.ndarray) -> int:
    """Hatch the NaN cells of a matrix drawn with imshow on `ax`; returns how many there are."""
    rows, columns = np.nonzero(np.isnan(values))
    for row, column in zip(rows, columns, strict=True):
        ax.add_patch(
            Rectangle(
                (column - 0.5, row - 0.5),
                1.0,
                1.0,
                facecolor=MISSING_COLOUR,
                edgecolor="0.35",
                hatch=MISSING_HATCH,
                linewidth=0.0,
            )
        )
    return int(rows.size)


def missing_handle(label: str) -> Patch:
    """The legend entry of hatched grey cells."""
    return Patch(facecolor=MISSING_COLOUR, edgecolor="0.35", hatch=MISSING_HATCH, label=label)


def grid_size(rows: int, columns: int, text: str = "") -> tuple[float, float]:
    """(width, height) in inches of a figure of `rows` × `columns` image panels
    (`PANEL_WIDTH` each, at least two panels wide) with the caption `text` and a colour bar."""
    width = max(PANEL_WIDTH * columns, 2 * PANEL_WIDTH)
    lines = wrap(text, width - 0.2).count("\n") + 1 if text else 0
    return width, (PANEL_WIDTH + 0.65) * rows + 0.75 + 0.17 * lines


def axes_size(ax: Axes) -> tuple[float, float]:
    """(width, height) of `ax` in inches, from its current position in the figure."""
    box = ax.get_position()
    figure = ax.get_figure(root=True)
    return box.width * figure.get_figwidth(), box.height * figure.get_figheight()


def scale_bar(
    figure: Figure | SubFigure,
    axes: Axes | list[Axes],
    signed: bool,
    label: str,
    alpha: float = 1.0,
) -> Colorbar:
    """A horizontal colour bar under `axes` for maps scaled to [-1, 1] (signed) or [0, 1]."""
    norm = Normalize(-1.0 if signed else 0.0, 1.0)
    mappable = ScalarMappable(norm=norm, cmap=colour_map(signed))
    bar = figure.colorbar(
        mappable, ax=axes, orientation="horizontal", shrink=0.6, aspect=35, alpha=alpha
    )
    bar.set_label(label, fontsize=FONT_SIZE)
    return bar
