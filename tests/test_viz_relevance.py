"""Relevance plots of chapters 6–11: normalisation numbers, figures, bad input."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from captionlib.viz import relevance as rv  # noqa: E402

SIZE = 16
WORDS = ["a", "red", "boat"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _image() -> torch.Tensor:
    return torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=_gen())


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _text(text: str) -> str:
    """Figure text with the line wrapping undone."""
    return " ".join(text.split())


def _word_relevance(length: int) -> torch.Tensor:
    return torch.tril(torch.randn(length, length, dtype=torch.float64, generator=_gen()))


# --- normalisation ------------------------------------------------------------------------------


def test_normalize_symmetric_known_numbers() -> None:
    values = np.array([-4.0, -1.0, 0.0, 2.0, 3.0])  # |x| sorted: 0 1 2 3 4, median 2
    normalized, scale = rv.normalize_symmetric(values, percentile=50)
    assert scale == 2.0
    np.testing.assert_allclose(normalized, [-1.0, -0.5, 0.0, 1.0, 1.0])
    normalized, scale = rv.normalize_symmetric(torch.tensor(values), percentile=100)
    assert scale == 4.0
    np.testing.assert_allclose(normalized, [-1.0, -0.25, 0.0, 0.5, 0.75])
    # numpy's linear interpolation: 75th percentile of 0 1 2 3 4 is 3
    assert rv.normalize_symmetric(values, percentile=75)[1] == 3.0


def test_normalize_symmetric_clips_outliers_at_the_percentile() -> None:
    values = np.concatenate([np.linspace(-1.0, 1.0, 999), [1000.0]])  # one huge pixel
    normalized, scale = rv.normalize_symmetric(values, percentile=99.5)
    assert scale == pytest.approx(np.percentile(np.abs(values), 99.5))
    assert 0.99 < scale < 1.0  # the outlier does not set the scale
    assert normalized[-1] == 1.0
    np.testing.assert_allclose(normalized[:-1], np.clip(values[:-1] / scale, -1, 1))
    assert normalized.min() == -1.0  # symmetric: −1 appears although the outlier is positive


def test_zero_and_sparse_maps() -> None:
    normalized, scale = rv.normalize_symmetric(np.zeros((4, 4)))
    assert scale == 0.0
    np.testing.assert_array_equal(normalized, np.zeros((4, 4)))
    assert not np.isnan(normalized).any()
    sparse = np.zeros(1000)
    sparse[3] = -2.0  # 99.5th percentile of |x| is 0 → the max is used
    normalized, scale = rv.normalize_symmetric(sparse)
    assert scale == 2.0 and normalized[3] == -1.0 and np.abs(normalized).sum() == 1.0


def test_normalize_symmetric_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="percentile must be in"):
        rv.normalize_symmetric(np.ones(3), percentile=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        rv.normalize_symmetric(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        rv.normalize_symmetric(np.zeros(0))
    with pytest.raises(ValueError, match="torch.Tensor or numpy array"):
        rv.normalize_symmetric([1.0, 2.0])  # type: ignore[arg-type]


def test_row_normalize_divides_each_row_by_its_max_magnitude() -> None:
    matrix = np.array([[2.0, 0.0, 0.0], [1.0, -4.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        rv.row_normalize(matrix), [[1.0, 0.0, 0.0], [0.25, -1.0, 0.0], [0.0, 0.0, 0.0]]
    )
    with pytest.raises(ValueError, match="lower-triangular"):
        rv.row_normalize(np.ones((3, 3)))
    with pytest.raises(ValueError, match="square"):
        rv.row_normalize(np.ones((3, 2)))


def test_channel_sums() -> None:
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    np.testing.assert_allclose(rv.pixel_maps(maps), maps.sum(1).numpy())
    np.testing.assert_allclose(rv.pixel_map(maps[1]), maps[1].sum(0).numpy())
    np.testing.assert_allclose(rv.pixel_maps(maps[:, 0]), maps[:, 0].numpy())
    with pytest.raises(ValueError, match=r"\(H, W\) or \(3, H, W\)"):
        rv.pixel_map(torch.ones(4, 2, 2))
    with pytest.raises(ValueError, match=r"\(L, H, W\) or \(L, 3, H, W\)"):
        rv.pixel_maps(torch.ones(2, 2))


# --- figures ----------------------------------------------------------------------------------


def test_heatmap_is_centred_and_states_its_scale() -> None:
    relevance = torch.randn(3, SIZE, SIZE, generator=_gen())
    figure, ax = plt.subplots()
    drawn = rv.heatmap(relevance, ax)
    expected_scale = np.percentile(np.abs(relevance.sum(0).numpy()), 99.5)
    low, high = drawn.get_clim()
    assert high == pytest.approx(expected_scale) and low == pytest.approx(-expected_scale)
    np.testing.assert_allclose(drawn.get_array(), relevance.sum(0).numpy(), atol=1e-6)
    assert drawn.get_cmap().name == "bwr"
    label = _text(figure.axes[-1].get_ylabel())  # the colour bar
    assert "99.5th percentile of |R|" in label and f"{expected_scale:.3g}" in label
    zero = rv.heatmap(np.zeros((4, 4)), colorbar=False)
    assert zero.get_clim() == (0.0, 1.0)  # nothing negative: the sequential scale from 0
    assert zero.axes.get_xlabel() == "map value = 0 everywhere"


def test_heatmap_of_a_non_negative_map_is_sequential_from_zero_and_named() -> None:
    alpha = torch.rand(SIZE, SIZE, generator=_gen())
    drawn = rv.heatmap(alpha, clip_percentile=95, quantity="α")
    scale = np.percentile(alpha.numpy(), 95)
    assert drawn.get_clim() == pytest.approx((0.0, scale))
    assert drawn.get_cmap().name == "inferno"
    label = _text(drawn.figure.axes[-1].get_ylabel())
    assert label == f"α; colour scale 0 … {scale:.3g} = 95th percentile (beyond: saturated)"
    forced = rv.heatmap(alpha, signed=True)
    assert forced.get_cmap().name == "bwr" and forced.get_clim()[0] < 0


def test_relevance_grid_scales_each_panel_by_its_own_percentile() -> None:
    maps = torch.randn(3, SIZE, SIZE, dtype=torch.float64, generator=_gen())
    maps[1] *= 100.0  # a much stronger word must not wash out the others
    figure = rv.relevance_grid(_image(), WORDS, maps, columns=2)
    assert isinstance(figure, Figure)
    panels = [ax for ax in figure.axes if len(ax.images) == 2]
    assert [ax.get_title() for ax in panels] == WORDS
    for ax, relevance_map in zip(panels, maps.numpy(), strict=True):
        normalized, scale = rv.normalize_symmetric(relevance_map)
        np.testing.assert_allclose(ax.images[1].get_array(), normalized)
        np.testing.assert_allclose(ax.images[1].get_alpha(), np.abs(normalized))
        assert ax.images[1].get_clim() == (-1.0, 1.0)
        assert ax.get_xlabel() == f"± {scale:.2g}"
    assert "each panel scaled to ± its 99.5th percentile of |R|" in _text(figure.get_suptitle())


def test_relevance_grid_of_non_negative_maps_is_sequential_and_wraps_at_four() -> None:
    maps = torch.rand(7, SIZE, SIZE, dtype=torch.float64, generator=_gen())  # Grad-CAM-like
    words = [f"w{k}" for k in range(7)]
    figure = rv.relevance_grid(_image(), words, maps, columns=8, title="captioner A — Grad-CAM")
    panels = [ax for ax in figure.axes if len(ax.images) == 2]
    for ax, relevance_map in zip(panels, maps.numpy(), strict=True):
        normalized, scale = rv.normalize_symmetric(relevance_map)
        assert ax.images[1].get_cmap().name == "inferno"
        assert ax.images[1].get_clim() == (0.0, 1.0)
        np.testing.assert_allclose(ax.images[1].get_alpha(), normalized)
        assert ax.get_xlabel() == f"0 … {scale:.2g}"
    grid = figure.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (2, 4)  # 8 panels, at most 4 per row
    text = _text(figure.get_suptitle())
    assert text.startswith("captioner A — Grad-CAM Non-negative pixel map per word")
    assert "from 0 to its 99.5th percentile" in text


def test_relevance_grid_without_overlay_and_with_rgb_relevance() -> None:
    maps = torch.randn(3, 3, SIZE, SIZE, generator=_gen())  # (L, 3, H, W)
    figure = rv.relevance_grid(_image(), WORDS, maps, overlay=False, clip_percentile=90)
    panels = [ax for ax in figure.axes if ax.get_title() in WORDS]
    summed = maps.sum(1).numpy()
    scale = np.percentile(np.abs(summed[2]), 90)
    assert panels[2].images[0].get_clim() == pytest.approx((-scale, scale))
    assert "90th percentile" in _text(figure.get_suptitle())


def test_relevance_grid_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="got 2 words but pixel_relevance has 3 maps"):
        rv.relevance_grid(_image(), WORDS[:2], torch.randn(3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"maps are \(8, 8\) but the image is \(16, 16\)"):
        rv.relevance_grid(_image(), WORDS, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(L, H, W\) or \(L, 3, H, W\)"):
        rv.relevance_grid(_image(), WORDS, torch.randn(3, 2, SIZE, SIZE))
    with pytest.raises(ValueError, match="columns must be >= 1"):
        rv.relevance_grid(_image(), WORDS, torch.randn(3, SIZE, SIZE), columns=0)


def test_word_relevance_strip_normalises_rows_and_leaves_the_future_empty() -> None:
    relevance = _word_relevance(3)
    figure = rv.word_relevance_strip(WORDS, relevance)
    drawn = figure.axes[0].images[0].get_array()
    expected = rv.row_normalize(relevance)
    lower = np.tril(np.ones((3, 3), dtype=bool))
    np.testing.assert_allclose(np.asarray(drawn)[lower], expected[lower])
    assert np.isnan(np.asarray(drawn)[~lower]).all()
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert ticks == ["<start>", "a", "red"]
    assert "normalised by its max_i |r_i|" in _text(figure.axes[0].get_title())


def test_word_relevance_strip_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="got 2 words but word_relevance is"):
        rv.word_relevance_strip(WORDS[:2], _word_relevance(3))
    with pytest.raises(ValueError, match="lower-triangular"):
        rv.word_relevance_strip(WORDS, torch.ones(3, 3))


def test_static_explorer_and_word_explanation_build() -> None:
    maps = torch.randn(3, SIZE, SIZE, generator=_gen())
    figure = rv.static_explorer(_image(), WORDS, maps, _word_relevance(3))
    assert "99.5th percentile" in _text(figure.get_suptitle())
    assert "max_i |r_i|" in _text(figure.get_suptitle())
    alone = rv.static_explorer(_image(), WORDS, maps)
    assert len([ax for ax in alone.axes if ax.get_title() in WORDS]) == 3
    single = rv.word_explanation(_image(), WORDS, maps, 2, _word_relevance(3))
    bars = [patch.get_width() for patch in single.axes[2].patches]
    np.testing.assert_allclose(bars, rv.row_normalize(_word_relevance(3))[2])
    with pytest.raises(ValueError, match="word index 3 out of range"):
        rv.word_explanation(_image(), WORDS, maps, 3)
    with pytest.raises(ValueError, match="got 3 words but word_relevance"):
        rv.static_explorer(_image(), WORDS, maps, _word_relevance(4))


def test_explorer_returns_a_widget_and_falls_back_without_ipywidgets(monkeypatch) -> None:
    widgets = pytest.importorskip("ipywidgets")
    maps = torch.randn(3, SIZE, SIZE, generator=_gen())
    control = rv.explorer(_image(), WORDS, maps, _word_relevance(3))
    assert isinstance(control, widgets.VBox)
    dropdown = control.children[0]
    assert [label for label, _ in dropdown.options] == ["0: a", "1: red", "2: boat"]
    dropdown.value = 2  # redraws for the chosen word without error
    with pytest.raises(ValueError, match="got 2 words"):
        rv.explorer(_image(), WORDS[:2], maps)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import now raises ImportError
    fallback = rv.explorer(_image(), WORDS, maps, _word_relevance(3))
    assert isinstance(fallback, Figure)
