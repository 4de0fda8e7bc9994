"""Plot helpers of chapters 2–4: training curves, tables, attention overlays."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from captionlib.train import TrainHistory  # noqa: E402
from captionlib.viz.attention import (  # noqa: E402
    attention_grid,
    channel_grid,
    head_grid,
    image_array,
    select_heads,
    sentinel_plot,
    upsample_attention,
)
from captionlib.viz.tables import metrics_table  # noqa: E402
from captionlib.viz.training import plot_histories, plot_history  # noqa: E402

GRID = 14
SIZE = 112


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(losses: list[float], scores: list[float], best: int) -> TrainHistory:
    n = len(losses)
    return TrainHistory(losses, scores, [1e-3] * n, [1.0] * n, best)


def _image() -> torch.Tensor:
    return torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8)


def _one_hot(row: int, column: int) -> torch.Tensor:
    alpha = torch.zeros(GRID * GRID)
    alpha[row * GRID + column] = 1.0
    return alpha


def _overlays(figure) -> list[AxesImage]:
    """The heat maps drawn on top of images (second image of each panel)."""
    return [ax.images[1] for ax in figure.axes if len(ax.images) == 2]


# --- upsampling ---------------------------------------------------------------------------------


def test_nearest_upsampling_puts_a_one_hot_cell_on_its_image_block() -> None:
    heat = upsample_attention(_one_hot(3, 5), SIZE, "nearest")
    assert heat.shape == (SIZE, SIZE)
    block = SIZE // GRID  # 8 pixels per cell
    expected = np.zeros((SIZE, SIZE))
    expected[3 * block : 4 * block, 5 * block : 6 * block] = 1.0
    np.testing.assert_array_equal(heat, expected)


def test_bilinear_upsampling_peaks_inside_the_block_and_stays_local() -> None:
    heat = upsample_attention(_one_hot(10, 2).reshape(GRID, GRID), SIZE, "bilinear")
    row, column = np.unravel_index(heat.argmax(), heat.shape)
    assert 80 <= row < 88 and 16 <= column < 24
    assert heat.max() <= 1.0 + 1e-12
    assert heat[:64].max() == 0.0  # nothing far away from the cell
    # interpolation keeps the total mass of a one-hot cell (block area = 64 pixels)
    assert heat.sum() == pytest.approx(64.0, rel=0.05)


def test_upsampling_rectangular_size() -> None:
    heat = upsample_attention(np.arange(4.0).reshape(2, 2), (4, 6))
    np.testing.assert_array_equal(heat[:2, :3], 0.0)
    np.testing.assert_array_equal(heat[2:, 3:], 3.0)


@pytest.mark.parametrize(
    ("alpha", "mode", "message"),
    [
        (torch.ones(195), "nearest", "not a square"),
        (torch.ones(2, 3, 4), "nearest", r"\(g, g\) or \(N,\)"),
        (torch.ones(196), "bicubic", "upsample mode"),
    ],
)
def test_upsampling_rejects_bad_input(alpha: torch.Tensor, mode: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        upsample_attention(alpha, SIZE, mode)


# --- head selection and images -----------------------------------------------------------------


def test_select_heads_mean_and_single_head() -> None:
    alpha = torch.rand(4, 8, GRID * GRID, dtype=torch.float64)
    np.testing.assert_allclose(select_heads(alpha, "mean"), alpha.mean(1).numpy())
    np.testing.assert_allclose(select_heads(alpha, 3), alpha[:, 3].numpy())
    with pytest.raises(ValueError, match="head 8 does not exist"):
        select_heads(alpha, 8)
    with pytest.raises(ValueError, match=r"needs alpha of shape \(L, H, N\)"):
        select_heads(alpha[:, 0], 2)


def test_image_array_scales_uint8_and_undoes_normalisation() -> None:
    image = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    np.testing.assert_allclose(image_array(image), 1.0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    grey = torch.full((3, 4, 4), 0.5)
    np.testing.assert_allclose(image_array((grey - mean) / std, normalized=True), 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="normalized=True"):
        image_array((torch.zeros(3, 4, 4) - mean) / std)  # black, normalised: negative values
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        image_array(torch.zeros(4, 4, 3))


# --- attention figures -------------------------------------------------------------------------


def test_attention_grid_for_captioner_a_draws_the_upsampled_maps() -> None:
    words = ["a", "red", "boat"]
    alpha = torch.stack([_one_hot(0, 0) * 0.7, _one_hot(3, 5) * 0.2, _one_hot(13, 13) * 0.9])
    beta = torch.tensor([0.3, 0.8, 0.1])
    figure = attention_grid(_image(), words, alpha, beta)
    overlays = _overlays(figure)
    assert len(overlays) == 3
    for drawn, row in zip(overlays, alpha, strict=True):
        np.testing.assert_array_equal(drawn.get_array(), upsample_attention(row, SIZE))
        assert drawn.get_clim() == pytest.approx((0.0, float(row.max())))  # per-panel scale
    labels = [ax.get_xlabel() for ax in figure.axes if len(ax.images) == 2]
    assert "β = 0.80" in labels[1]
    assert "share of the sentinel" in figure.get_suptitle()
    assert "per panel" in figure.get_suptitle()


def test_attention_grid_for_captioner_b_means_or_selects_heads() -> None:
    alpha = torch.softmax(torch.randn(2, 8, GRID * GRID, dtype=torch.float64), dim=-1)
    mean_figure = attention_grid(_image(), ["dog", "ball"], alpha, heads="mean", columns=2)
    drawn = _overlays(mean_figure)[1].get_array()
    np.testing.assert_allclose(drawn, upsample_attention(alpha[1].mean(0), SIZE))
    assert "mean over 8 heads" in mean_figure.get_suptitle()
    head_figure = attention_grid(_image(), ["dog", "ball"], alpha, heads=5, upsample="bilinear")
    drawn = _overlays(head_figure)[0].get_array()
    np.testing.assert_allclose(drawn, upsample_attention(alpha[0, 5], SIZE, "bilinear"))


def test_attention_grid_rejects_mismatched_shapes() -> None:
    alpha = torch.rand(3, GRID * GRID)
    with pytest.raises(ValueError, match="got 2 words but alpha has 3 steps"):
        attention_grid(_image(), ["a", "b"], alpha)
    with pytest.raises(ValueError, match=r"beta must have shape \(3,\)"):
        attention_grid(_image(), ["a", "b", "c"], alpha, beta=torch.rand(4))
    with pytest.raises(ValueError, match="not a square"):
        attention_grid(_image(), ["a", "b", "c"], torch.rand(3, 150))


def test_head_grid_shows_every_head_and_their_mean() -> None:
    alpha = torch.softmax(torch.randn(8, GRID * GRID, dtype=torch.float64), dim=-1)
    figure = head_grid(_image(), "boat", alpha)
    overlays = _overlays(figure)
    assert len(overlays) == 9
    np.testing.assert_allclose(overlays[4].get_array(), upsample_attention(alpha[4], SIZE))
    np.testing.assert_allclose(overlays[8].get_array(), upsample_attention(alpha.mean(0), SIZE))
    with pytest.raises(ValueError, match=r"\(H, N\)"):
        head_grid(_image(), "boat", alpha[None])


def test_sentinel_plot_bars_are_the_betas() -> None:
    beta = np.array([0.9, 0.2, 0.4])
    figure = sentinel_plot(["a", "boat", "on"], beta)
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    np.testing.assert_allclose(heights, beta)
    with pytest.raises(ValueError, match="beta must have shape"):
        sentinel_plot(["a"], beta)


def test_channel_grid_draws_the_chosen_channels() -> None:
    features = torch.rand(16, GRID, GRID)
    figure = channel_grid(_image(), features, [2, 7])
    overlays = _overlays(figure)
    np.testing.assert_allclose(overlays[1].get_array(), upsample_attention(features[7], SIZE))
    with pytest.raises(ValueError, match=r"channels \[16\] do not exist"):
        channel_grid(_image(), features, [16])


# --- training curves and tables ----------------------------------------------------------------


def test_plot_history_draws_the_recorded_values() -> None:
    history = _history([3.0, 2.0, 1.5], [0.1, 0.4, 0.3], best=1)
    figure = plot_history(history, "Captioner A")
    loss_ax, score_ax = figure.axes
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [3.0, 2.0, 1.5])
    np.testing.assert_allclose(score_ax.lines[0].get_xdata(), [1, 2, 3])
    best_marker = score_ax.lines[1]
    assert float(best_marker.get_xdata()[0]) == 2 and float(best_marker.get_ydata()[0]) == 0.4


def test_plot_histories_one_line_per_run_and_bad_histories() -> None:
    runs = {"A": _history([2.0, 1.0], [0.2, 0.3], 1), "B": _history([2.5], [0.1], 0)}
    figure = plot_histories(runs)
    assert len(figure.axes[0].lines) == 2
    with pytest.raises(ValueError, match="has no epochs"):
        plot_history(TrainHistory(), "empty")
    with pytest.raises(ValueError, match="2 training losses but 1 validation"):
        plot_history(_history([2.0, 1.0], [0.2], 0), "broken")
    with pytest.raises(ValueError, match="histories is empty"):
        plot_histories({})


def test_metrics_table_formats_and_aligns() -> None:
    table = metrics_table(
        {"test": {"BLEU-4": 0.41234, "CIDEr": 1.5}, "shifted": {"CIDEr": 0.25, "n": 500}},
        digits=2,
    )
    lines = str(table).splitlines()
    assert lines[0].split() == ["BLEU-4", "CIDEr", "n"]
    assert lines[2].split() == ["test", "0.41", "1.50", "–"]
    assert lines[3].split() == ["shifted", "–", "0.25", "500"]
    assert len({len(line) for line in lines[:2]}) == 1
    assert table.to_markdown().splitlines() == [
        "|   | BLEU-4 | CIDEr | n |",
        "|:---|---:|---:|---:|",
        "| test | 0.41 | 1.50 | – |",
        "| shifted | – | 0.25 | 500 |",
    ]
    assert table._repr_markdown_() == table.to_markdown()
    with pytest.raises(ValueError, match="rows is empty"):
        metrics_table({})
