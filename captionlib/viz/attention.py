"""Heat maps over images: attention per word and per head, the sentinel, encoder channels
(chapters 2–5).

::

    attention_grid(image, words, decoded.alpha, decoded.beta)   # captioner A: α and β
    attention_grid(image, words, decoded.alpha, heads="mean")   # captioner B: (L, H, N)
    head_grid(image, "boat", decoded.alpha[2])                   # one word, every head
    sentinel_plot(words, decoded.beta)                           # β per word
    channel_grid(image, feature_map, channels=[0, 5, 9])         # encoder channels (ch. 2)

Shown honestly (book/method.md §6): the raw g×g grid is upsampled to the image size, by default
with nearest neighbours so every grid cell stays a visible block, and never smoothed. Each
panel's colour scale (sequential: the maps are non-negative) runs from 0 to that panel's own
maximum, which the panel states and the colour bar names, so panels show *where* a map is
high, not how high it is compared with the other panels. Panels wrap at 4 per row and figures
fit the book's column (`captionlib.viz.style`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as functional
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from captionlib.data.coco import denormalize
from captionlib.viz.style import (
    FONT_SIZE,
    PANEL_WIDTH,
    SEQUENTIAL_CMAP,
    TITLE_SIZE,
    caption,
    column_width,
    grid_size,
    panel_grid,
    scale_bar,
    styled,
    wrap,
)

Array = Tensor | np.ndarray
UPSAMPLE_MODES = ("nearest", "bilinear")
OVERLAY_CMAP = SEQUENTIAL_CMAP
OVERLAY_OPACITY = 0.55
SCALE_NOTE = "colour scale per panel: 0 (dark) to that panel's max"


def as_float_array(values: Array, name: str) -> np.ndarray:
    """A tensor or array as float64 NumPy; a clear error naming `name` otherwise."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    if not isinstance(values, np.ndarray):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(values)}")
    return values.astype(np.float64)


def image_array(image: Array, normalized: bool = False) -> np.ndarray:
    """An image (3, H, W) as (H, W, 3) floats in [0, 1] for imshow.

    uint8 images are divided by 255; float images must already be in [0, 1] unless
    `normalized=True`, which undoes the ImageNet normalisation (`coco.denormalize`).
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, Tensor):
        raise ValueError(f"image must be a torch.Tensor or numpy array, got {type(image)}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W), got {tuple(image.shape)}")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        pixels = image.double() / 255.0
    elif normalized:
        pixels = denormalize(image.double())
    else:
        pixels = image.double()
        if pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(
                "float image values must lie in [0, 1]; pass normalized=True for an "
                f"ImageNet-normalised image (got range [{pixels.min():.2f}, {pixels.max():.2f}])"
            )
    return pixels.permute(1, 2, 0).numpy()


def grid_side(locations: int) -> int:
    """g for N = g·g locations; ValueError when N is not a square."""
    side = math.isqrt(locations)
    if locations < 1 or side * side != locations:
        raise ValueError(f"attention has N={locations} locations, which is not a square g×g grid")
    return side


def upsample_attention(
    alpha_grid: Array, size: int | tuple[int, int], mode: str = "nearest"
) -> np.ndarray:
    """A map over the g×g grid, (g, g) or flat (N,) in row-major order → (H, W) float64.

    `size`: H = W, or (H, W). "nearest" repeats each cell as a block (with H = W = 8·g
    cell (i, j) fills rows 8i … 8i+7 and columns 8j … 8j+7); "bilinear" interpolates
    between cell centres (align_corners=False). No smoothing beyond that.
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    grid = as_float_array(alpha_grid, "alpha_grid")
    if grid.ndim == 1:
        side = grid_side(grid.shape[0])
        grid = grid.reshape(side, side)
    if grid.ndim != 2:
        raise ValueError(f"alpha_grid must be (g, g) or (N,), got shape {grid.shape}")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    tensor = torch.from_numpy(grid)[None, None]  # (1, 1, g, g)
    if mode == "nearest":
        upsampled = functional.interpolate(tensor, size=(height, width), mode="nearest")
    else:
        upsampled = functional.interpolate(
            tensor, size=(height, width), mode="bilinear", align_corners=False
        )
    return upsampled[0, 0].numpy()  # (H, W)


def select_heads(alpha: Array, heads: str | int = "mean") -> np.ndarray:
    """Attention (L, N) or (L, H, N) → (L, N): captioner A's maps, B's mean or one head."""
    values = as_float_array(alpha, "alpha")
    if values.ndim == 2:
        if heads != "mean":
            raise ValueError(f"heads={heads!r} needs alpha of shape (L, H, N); got {values.shape}")
        return values
    if values.ndim != 3:
        raise ValueError(f"alpha must be (L, N) or (L, H, N), got shape {values.shape}")
    if heads == "mean":
        return values.mean(axis=1)
    if isinstance(heads, bool) or not isinstance(heads, int):
        raise ValueError(f'heads must be "mean" or a head index, got {heads!r}')
    if not 0 <= heads < values.shape[1]:
        raise ValueError(f"head {heads} does not exist: alpha has {values.shape[1]} heads")
    return values[:, heads]


def _panel_axes(count: int, columns: int, text: str) -> tuple[Figure, list[Axes]]:
    """A figure of `count` image panels, at most 4 per row (`panel_grid`), column wide at most,
    with room for the caption `text` and a colour bar under the panels."""
    rows, columns = panel_grid(count, columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=grid_size(rows, columns, text), squeeze=False, layout="constrained"
    )
    flat = list(axes.flatten())
    for ax in flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in flat[count:]:
        ax.set_axis_off()
    return figure, flat[:count]


def _overlay(ax: Axes, pixels: np.ndarray, heat: np.ndarray) -> None:
    """Image with a heat map on top, colour scale from 0 to the map's max."""
    ax.imshow(pixels, interpolation="nearest")
    top = float(heat.max())
    ax.imshow(
        heat,
        cmap=OVERLAY_CMAP,
        alpha=OVERLAY_OPACITY,
        vmin=0.0,
        vmax=top if top > 0 else 1.0,
        interpolation="nearest",
    )


def _finish(figure: Figure, axes: list[Axes], text: str, quantity: str) -> Figure:
    """The colour bar under the panels (`quantity` / each panel's max) and the wrapped caption."""
    scale_bar(figure, axes, False, f"{quantity} / that panel's max", alpha=OVERLAY_OPACITY)
    caption(figure, text)
    return figure


def _image_panel(ax: Axes, pixels: np.ndarray, title: str) -> None:
    ax.imshow(pixels, interpolation="nearest")
    ax.set_title(wrap(title, PANEL_WIDTH), fontsize=FONT_SIZE)


@styled
def attention_grid(
    image: Array,
    words: Sequence[str],
    alpha: Array,
    beta: Array | None = None,
    heads: str | int = "mean",
    upsample: str = "nearest",
    columns: int = 4,
    normalized: bool = False,
    image_title: str = "image",
    title: str | None = None,
) -> Figure:
    """The image, then one panel per word with that step's attention over the image.

    image: (3, H, W) uint8 or float in [0, 1] (`normalized=True` for ImageNet-normalised);
    words: the L generated words; alpha: (L, N) for captioner A or (L, H, N) for captioner B
    (`heads`: "mean" over heads or one head index); beta: (L,) sentinel shares, written
    under each word, or None. Panel k shows the weights that produced word k. At most 4
    panels per row (a larger `columns` wraps at 4); `title` opens the caption.
    """
    pixels = image_array(image, normalized)
    raw = as_float_array(alpha, "alpha")  # (L, N) or (L, H, N)
    maps = select_heads(raw, heads)  # (L, N)
    if maps.shape[0] != len(words):
        raise ValueError(f"got {len(words)} words but alpha has {maps.shape[0]} steps")
    side = grid_side(maps.shape[1])
    betas = None
    if beta is not None:
        betas = as_float_array(beta, "beta")
        if betas.shape != (len(words),):
            raise ValueError(f"beta must have shape ({len(words)},), got {betas.shape}")
    if raw.ndim == 2:
        what = "α per word"
    elif heads == "mean":
        what = f"α per word, mean over {raw.shape[1]} heads"
    else:
        what = f"α per word, head {heads}"
    text = f"{what}: raw {side}×{side} grid, {upsample} upsampling, no smoothing; {SCALE_NOTE}"
    if betas is not None:
        text += "\nβ = share of the sentinel (1 − β is the share of the image; Σα = 1 − β)"
    if title is not None:
        text = f"{title}\n{text}"
    figure, axes = _panel_axes(len(words) + 1, columns, text)
    _image_panel(axes[0], pixels, image_title)
    for index, (ax, word) in enumerate(zip(axes[1:], words, strict=True)):
        heat = upsample_attention(maps[index], pixels.shape[:2], upsample)
        _overlay(ax, pixels, heat)
        ax.set_title(word, fontsize=TITLE_SIZE, fontweight="bold")
        label = f"max α = {maps[index].max():.3g}"
        if betas is not None:
            label += f"\nβ = {betas[index]:.2f}"
        ax.set_xlabel(label, fontsize=FONT_SIZE)
    return _finish(figure, axes, text, "α")


@styled
def head_grid(
    image: Array,
    word: str,
    alpha: Array,
    upsample: str = "nearest",
    columns: int = 4,
    normalized: bool = False,
) -> Figure:
    """One word's attention, head by head, then the mean over heads; alpha (H, N).

    At most 4 panels per row (a larger `columns` wraps at 4)."""
    pixels = image_array(image, normalized)
    maps = as_float_array(alpha, "alpha")
    if maps.ndim != 2:
        raise ValueError(f"alpha must be (H, N) for one word, got shape {maps.shape}")
    side = grid_side(maps.shape[1])
    panels = [*maps, maps.mean(axis=0)]
    names = [f"head {h}" for h in range(maps.shape[0])] + ["mean over heads"]
    text = (
        f'"{word}": α of each head, raw {side}×{side} grid, {upsample} upsampling, '
        f"no smoothing; {SCALE_NOTE}"
    )
    figure, axes = _panel_axes(len(panels), columns, text)
    for ax, heat_grid, name in zip(axes, panels, names, strict=True):
        _overlay(ax, pixels, upsample_attention(heat_grid, pixels.shape[:2], upsample))
        ax.set_title(name, fontsize=TITLE_SIZE)
        ax.set_xlabel(f"max α = {heat_grid.max():.3g}", fontsize=FONT_SIZE)
    return _finish(figure, axes, text, "α")


@styled
def sentinel_plot(words: Sequence[str], beta: Array, title: str | None = None) -> Figure:
    """Bar chart of the sentinel share β per generated word (captioner A), on [0, 1]."""
    betas = as_float_array(beta, "beta")
    if betas.shape != (len(words),) or not words:
        raise ValueError(
            f"beta must have shape ({len(words)},) with len(words) >= 1, got {betas.shape}"
        )
    width = column_width(max(4.0, 0.45 * len(words) + 1.5))
    figure, ax = plt.subplots(figsize=(width, 3.2), layout="constrained")
    positions = np.arange(len(words))
    ax.bar(positions, betas, color="C1")
    ax.set_xticks(positions, list(words), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("β (share of\nthe sentinel)")
    ax.grid(axis="y", alpha=0.3)
    text = title or "β per word: the share of the context vector taken from the sentinel"
    ax.set_title(wrap(text, width - 0.8, TITLE_SIZE), fontsize=TITLE_SIZE)
    return figure


@styled
def channel_grid(
    image: Array,
    feature_map: Array,
    channels: Sequence[int],
    upsample: str = "nearest",
    columns: int = 4,
    normalized: bool = False,
) -> Figure:
    """The image, then the activation map of each chosen encoder channel; F (C, g, g).

    At most 4 panels per row (a larger `columns` wraps at 4)."""
    pixels = image_array(image, normalized)
    maps = as_float_array(feature_map, "feature_map")
    if maps.ndim != 3:
        raise ValueError(f"feature_map must be (C, g, g), got shape {maps.shape}")
    if not channels:
        raise ValueError("channels is empty: pick at least one channel index")
    bad = [c for c in channels if not 0 <= c < maps.shape[0]]
    if bad:
        raise ValueError(f"channels {bad} do not exist: feature_map has {maps.shape[0]}")
    text = (
        f"Encoder activations: raw {maps.shape[1]}×{maps.shape[2]} grid, {upsample} "
        f"upsampling, no smoothing; {SCALE_NOTE}"
    )
    figure, axes = _panel_axes(len(channels) + 1, columns, text)
    _image_panel(axes[0], pixels, "image")
    for ax, channel in zip(axes[1:], channels, strict=True):
        _overlay(ax, pixels, upsample_attention(maps[channel], pixels.shape[:2], upsample))
        ax.set_title(f"channel {channel}", fontsize=TITLE_SIZE)
        ax.set_xlabel(f"max = {maps[channel].max():.2f}", fontsize=FONT_SIZE)
    return _finish(figure, axes, text, "activation")
