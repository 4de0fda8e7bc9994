"""Every figure of captionlib.viz fits the book's column (issue 11; captionlib.viz.style).

The book shows a figure at about 740 px (7.5 inches at 100 dpi). Each public figure function
is drawn on small synthetic inputs and checked: at most 7.5 inches wide (the figure and what
``bbox_inches="tight"`` saves), every text at 9 pt or more, at most 4 image panels per row,
legends outside the axes, sequential colour maps for non-negative maps and diverging ones
symmetric around their centre for signed maps, and NaN cells in a colour no value has, named
in a legend or note.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import colors  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from captionlib.data.shapeworld import BIAS_FIELDS, CATEGORIES, GROUNDS, ShapeWorldConfig  # noqa: E402
from captionlib.data.shapeworld import generate as generate_shapeworld  # noqa: E402
from captionlib.evaluate.diagnosis import AucResult, ObjectWord  # noqa: E402
from captionlib.evaluate.localization import LocalizationSummary  # noqa: E402
from captionlib.finetune import FinetuneHistory  # noqa: E402
from captionlib.train import TrainHistory  # noqa: E402
from captionlib.viz import (  # noqa: E402
    attention,
    evaluation,
    finetune,
    hallucination,
    relevance,
    scenes,
    training,
)
from captionlib.viz.style import FONT_SIZE, MAX_COLUMNS, MAX_WIDTH, figure_style, panel_grid  # noqa: E402

MODULES = (attention, relevance, evaluation, hallucination, finetune, scenes, training)
SEQUENTIAL = {"inferno", "viridis", "magma", "plasma", "cividis", "gray", "Greys"}
DIVERGING = {"bwr", "RdBu_r", "RdBu", "coolwarm", "seismic"}
MIN_FONT = 9.0
MIN_MISSING_DISTANCE = 0.15  # RGB distance of the NaN colour from every colour of the map
SIZE = 112
WORDS = "a red boat floats on the blue water near a small dog".split()  # noqa: SIM905
METHODS = ("lrp", "attention", "gradcam", "gradient", "gradient_x_input", "guided_backprop")


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _image() -> torch.Tensor:
    return torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=_generator())


def _signed(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=_generator())


def _non_negative(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, generator=_generator())


def _word_relevance(length: int) -> torch.Tensor:
    return torch.tril(_signed(length, length))


def _summary(level: float) -> LocalizationSummary:
    return LocalizationSummary(
        thresholds=tuple(round(0.1 * i, 1) for i in range(10)),
        correctness=np.linspace(level, 1.0, 10),
        correctness_std=np.full(10, 0.2),
        pointing=level,
        energy=level,
        pairs=20,
    )


SETTINGS = [f"captioner {k}, {split}" for k in "AB" for split in ("test", "shifted")]


def _aucs() -> dict[str, dict[str, AucResult]]:
    values = np.linspace(0.1, 0.9, 8)
    statistics = ("mean", "max", "q90", "word_share")
    table = {
        method: {s: AucResult(float(values[(i + j) % 8]), 30, 12) for j, s in enumerate(statistics)}
        for i, method in enumerate(("lrp", "attention", "gradcam"))
    }
    table["attention"]["1-beta"] = AucResult(0.7, 30, 12)  # the others have no β: NaN cells
    return table


def _bias_stats(fraction: float, missing_ground: str | None = None) -> dict[str, object]:
    table = {
        g: {c: (np.nan if g == missing_ground else fraction) for c in CATEGORIES} for g in GROUNDS
    }
    rates = {name: fraction for name in BIAS_FIELDS}
    return {"n_images": 50, "rates": rates, "category_given_ground": table}


def _history(best: int = 2) -> TrainHistory:
    return TrainHistory([3.0, 2.0, 1.5, 1.4], [0.1, 0.4, 0.5, 0.45], [1e-3] * 4, [1.0] * 4, best)


def _finetune_history(extra: float) -> FinetuneHistory:
    plain = list(np.linspace(2.0, 1.0, 30))
    return FinetuneHistory(loss=[p + extra for p in plain], cross_entropy=plain)


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ShapeWorldConfig(n_train=2, n_val=0, n_test=0, n_shifted=5)
    return generate_shapeworld(config, tmp_path_factory.mktemp("scenes"), workers=1)


def _scenes(folder: Path) -> Figure:
    images = json.loads((folder / "instances_shifted.json").read_text())["images"]
    return scenes.show_scenes(folder, "shifted", [image["id"] for image in images])[0].figure


def _word_matrix() -> Figure:
    figure, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    relevance.word_matrix(ax, WORDS[:6], _word_relevance(6))
    return figure


# name → (draw(folder) → Figure, centre of the colour scale)
CASES: dict[str, tuple[Callable[[Path], Figure], float]] = {
    "attention_grid": (
        lambda _: attention.attention_grid(
            _image(),
            WORDS,
            torch.softmax(_signed(len(WORDS), 196), -1),
            _non_negative(len(WORDS)),
            columns=8,
            title="captioner A — attention",
        ),
        0.0,
    ),
    "head_grid": (
        lambda _: attention.head_grid(_image(), "boat", torch.softmax(_signed(8, 196), -1)),
        0.0,
    ),
    "sentinel_plot": (lambda _: attention.sentinel_plot(WORDS, _non_negative(len(WORDS))), 0.0),
    "channel_grid": (
        lambda _: attention.channel_grid(_image(), _non_negative(16, 14, 14), [1, 4, 9, 12, 15]),
        0.0,
    ),
    "heatmap": (lambda _: relevance.heatmap(_signed(3, SIZE, SIZE)).figure, 0.0),
    "relevance_grid": (
        lambda _: relevance.relevance_grid(
            _image(), WORDS, _signed(len(WORDS), SIZE, SIZE), columns=8
        ),
        0.0,
    ),
    "word_relevance_strip": (
        lambda _: relevance.word_relevance_strip(WORDS, _word_relevance(len(WORDS))),
        0.0,
    ),
    "static_explorer": (
        lambda _: relevance.static_explorer(
            _image(), WORDS, _signed(len(WORDS), SIZE, SIZE), _word_relevance(len(WORDS))
        ),
        0.0,
    ),
    "word_explanation": (
        lambda _: relevance.word_explanation(
            _image(), WORDS, _signed(len(WORDS), SIZE, SIZE), 5, _word_relevance(len(WORDS))
        ),
        0.0,
    ),
    "word_matrix": (lambda _: _word_matrix(), 0.0),
    "method_panels": (
        lambda _: evaluation.method_panels(
            _image(),
            {
                m: (
                    _non_negative(SIZE, SIZE)
                    if m in ("attention", "gradcam")
                    else _signed(SIZE, SIZE)
                )
                for m in METHODS
            },
            image_title="word: boat",
        ),
        0.0,
    ),
    "word_relevance_panels": (
        lambda _: evaluation.word_relevance_panels(
            WORDS[:8], {m: _word_relevance(8) for m in ("gradient", "gradient_x_input", "lrp")}
        ),
        0.0,
    ),
    "correctness_curves": (
        lambda _: evaluation.correctness_curves(
            {s: {m: _summary(0.1 * i) for i, m in enumerate(METHODS)} for s in SETTINGS}
        ),
        0.0,
    ),
    "drop_boxplots": (
        lambda _: evaluation.drop_boxplots(
            {s: {m: _signed(20) for m in (*METHODS, "random")} for s in SETTINGS}
        ),
        0.0,
    ),
    "hallucination_counts": (
        lambda _: hallucination.hallucination_counts(
            {
                s: [ObjectWord(1, 0, c, c, k % 3 == 0, False) for k, c in enumerate(CATEGORIES * 3)]
                for s in SETTINGS
            }
        ),
        0.0,
    ),
    "auc_heatmap": (
        lambda _: hallucination.auc_heatmap(
            _aucs(),
            "captioner A (adaptive attention), shifted split: ROC-AUC, grounded vs hallucinated "
            "(34 vs 12 words; grounded = positive class)",
        ),
        0.5,
    ),
    "case_study": (
        lambda _: hallucination.case_study(
            _image(),
            WORDS[:5],
            _signed(5, SIZE, SIZE),
            2,
            _word_relevance(5),
            'captioner A (adaptive attention), shifted: "boat" is hallucinated (in the image: '
            "dog, tree)",
            np.pad(np.ones((20, 30)), ((40, 52), (30, 52))),
        ),
        0.0,
    ),
    "weight_panels": (
        lambda _: finetune.weight_panels(
            WORDS,
            (2 * _non_negative(len(WORDS), 64), 2 * _non_negative(len(WORDS), 64)),
            image=_image(),
            image_title="shifted image 4012\na red boat floats on the blue water near a dog",
        ),
        1.0,  # weights in [0, 2]: 1 leaves a feature unchanged
    ),
    "loss_curves": (
        lambda _: finetune.loss_curves(
            {
                name: {"control": [_finetune_history(0.0)], "lrp": [_finetune_history(1.0)]}
                for name in ("captioner A (adaptive)", "captioner B (multi-head)")
            }
        ),
        0.0,
    ),
    "show_scenes": (_scenes, 0.0),
    "plot_cooccurrence": (
        lambda _: scenes.plot_cooccurrence(_bias_stats(0.3), _bias_stats(0.7, "snow")),
        0.0,
    ),
    "plot_caption_statistics": (
        lambda _: scenes.plot_caption_statistics(
            [" ".join(WORDS[: 3 + k % 8]) for k in range(60)], top=40
        ),
        0.0,
    ),
    "plot_history": (
        lambda _: training.plot_history(
            _history(),
            "Encoder pretraining (multi-label classification of the 10 categories)",
            score_name="validation mAP",
            loss_name="training loss (binary cross-entropy)",
        ),
        0.0,
    ),
    "plot_histories": (
        lambda _: training.plot_histories(
            {"A: adaptive": _history(), "B: multi-head": _history(1)}, title="Training both"
        ),
        0.0,
    ),
}

# non-negative inputs: every colour-mapped image must be sequential, starting at 0
NON_NEGATIVE_CASES: dict[str, Callable[[], Figure]] = {
    "heatmap": lambda: relevance.heatmap(_non_negative(SIZE, SIZE), quantity="α").figure,
    "relevance_grid": lambda: relevance.relevance_grid(
        _image(), WORDS, _non_negative(len(WORDS), SIZE, SIZE)
    ),
    "word_explanation": lambda: relevance.word_explanation(
        _image(), WORDS, _non_negative(len(WORDS), SIZE, SIZE), 3
    ),
    "method_panels": lambda: evaluation.method_panels(
        _image(), {"attention": _non_negative(SIZE, SIZE), "gradcam": _non_negative(14, 14)}
    ),
    "attention_grid": lambda: attention.attention_grid(
        _image(), WORDS[:3], torch.softmax(_signed(3, 8, 196), -1), heads="mean"
    ),
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def public_figure_functions() -> set[str]:
    """Public functions of the figure modules that draw a figure (return a Figure or an image;
    `show_scenes` returns its axes; `relevance.explorer` wraps `word_explanation`)."""
    names = {"show_scenes"}
    for module in MODULES:
        for name, function in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(function):
                continue
            if function.__module__ != module.__name__:
                continue
            if inspect.signature(function).return_annotation in ("Figure", "AxesImage"):
                names.add(name)
    return names


def _all_axes(figure: Figure) -> list[Axes]:
    return list(dict.fromkeys(figure.findobj(Axes)))


def _mapped_images(figure: Figure) -> list[AxesImage]:
    """Colour-mapped images (not RGB photographs) of the visible axes."""
    return [
        image
        for ax in _all_axes(figure)
        if ax.get_visible()
        for image in ax.images
        if np.ndim(image.get_array()) == 2
    ]


def check_width(figure: Figure) -> None:
    renderer = figure.canvas.get_renderer()
    assert figure.get_figwidth() <= MAX_WIDTH
    assert figure.get_tightbbox(renderer).width <= MAX_WIDTH  # what bbox "tight" saves


def check_fonts(figure: Figure) -> None:
    small = [
        (text.get_text()[:30], text.get_fontsize())
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip() and text.get_fontsize() < MIN_FONT
    ]
    assert small == []


def check_rows(figure: Figure) -> None:
    renderer = figure.canvas.get_renderer()
    rows: dict[int, int] = {}
    for ax in _all_axes(figure):
        if ax.get_visible() and ax.images:
            row = round(ax.get_window_extent(renderer).y0 / 20)
            rows[row] = rows.get(row, 0) + 1
    assert all(count <= MAX_COLUMNS for count in rows.values()), rows


def check_legends(figure: Figure) -> None:
    renderer = figure.canvas.get_renderer()
    legends = [*figure.legends, *(ax.get_legend() for ax in _all_axes(figure))]
    axes = [ax for ax in _all_axes(figure) if ax.get_visible()]
    for legend in legends:
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        inside = [ax for ax in axes if box.overlaps(ax.get_window_extent(renderer))]
        assert inside == [], "a legend covers an axes"


def check_colour_maps(figure: Figure, centre: float) -> None:
    for image in _mapped_images(figure):
        name = image.get_cmap().name
        low, high = image.get_clim()
        values = np.ma.masked_invalid(image.get_array()).compressed()
        assert name in SEQUENTIAL | DIVERGING, f"colour map {name!r}"
        if values.min() < centre < values.max():
            assert name in DIVERGING, f"signed values drawn with {name!r}"
        if name in DIVERGING:
            assert low + high == pytest.approx(2 * centre), "diverging map not symmetric"
        else:
            assert values.min() >= centre and low == pytest.approx(centre)


def check_missing(figure: Figure) -> None:
    texts = " ".join(text.get_text() for text in figure.findobj(Text)).lower()
    hatched = [
        handle
        for legend in figure.findobj(Legend)
        for handle in legend.legend_handles
        if getattr(handle, "get_hatch", lambda: None)()
    ]
    for image in _mapped_images(figure):
        if not np.ma.getmaskarray(np.ma.masked_invalid(image.get_array())).any():
            continue
        cmap = image.get_cmap()
        bad = colors.to_rgba(cmap.get_bad())
        assert bad[3] == 1.0, "NaN cells are transparent (white like a value)"
        palette = cmap(np.linspace(0.0, 1.0, 256))[:, :3]
        distance = np.sqrt(((palette - np.array(bad[:3])) ** 2).sum(axis=1)).min()
        assert distance >= MIN_MISSING_DISTANCE, "NaN cells look like a value"
        assert hatched or "grey" in texts, "NaN cells are not named"


@pytest.mark.parametrize("name", sorted(CASES))
def test_figure_fits_the_column(name: str, scene_folder: Path) -> None:
    draw, centre = CASES[name]
    figure = draw(scene_folder)
    figure.canvas.draw()
    check_width(figure)
    check_fonts(figure)
    check_rows(figure)
    check_legends(figure)
    check_colour_maps(figure, centre)
    check_missing(figure)


@pytest.mark.parametrize("name", sorted(NON_NEGATIVE_CASES))
def test_non_negative_maps_are_sequential_from_zero(name: str) -> None:
    figure = NON_NEGATIVE_CASES[name]()
    figure.canvas.draw()
    images = _mapped_images(figure)
    assert images
    for image in images:
        assert image.get_cmap().name in SEQUENTIAL
        assert image.get_clim()[0] == 0.0
    check_fonts(figure)


def test_every_public_figure_function_is_checked() -> None:
    assert public_figure_functions() == set(CASES)


def test_nan_cells_are_hatched_and_named() -> None:
    figure = hallucination.auc_heatmap(_aucs(), "AUC")
    ax = figure.axes[0]
    hatched = [patch for patch in ax.patches if patch.get_hatch()]
    assert len(hatched) == 2  # LRP and Grad-CAM have no 1 − β
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["not measured for this method"]


def test_columns_wrap_at_four() -> None:
    assert panel_grid(9, 8) == (3, 4)
    assert panel_grid(3, 8) == (1, 3)
    assert panel_grid(5, 2) == (3, 2)
    with pytest.raises(ValueError, match="columns must be >= 1"):
        panel_grid(3, 0)
    figure = attention.attention_grid(_image(), WORDS[:7], torch.softmax(_signed(7, 196), -1))
    grid = figure.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (2, 4)


def test_method_ids_get_their_display_names() -> None:
    figure = evaluation.method_panels(
        _image(), {m: _signed(SIZE, SIZE) for m in ("gradient_x_input", "guided_gradcam")}
    )
    titles = [ax.get_title() for ax in figure.axes[1:3]]
    assert titles == ["gradient × input", "guided Grad-CAM"]


def test_style_is_not_left_behind() -> None:
    before = dict(matplotlib.rcParams)
    relevance.relevance_grid(_image(), WORDS[:2], _signed(2, SIZE, SIZE))
    assert dict(matplotlib.rcParams) == before


def test_the_checks_catch_a_figure_that_breaks_the_rules() -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12.0, 3.0))
    left.plot([0, 1], [0, 1], label="a curve")
    left.legend(loc="center")  # on the data
    left.set_title("small", fontsize=7)
    values = np.array([[-1.0, 0.5], [np.nan, 1.0]])
    right.imshow(values, cmap=colors.ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, 9))))
    figure.canvas.draw()
    for check in (check_width, check_fonts, check_legends, check_missing):
        with pytest.raises(AssertionError):
            check(figure)
    with pytest.raises(AssertionError):
        check_colour_maps(figure, 0.0)
    wide, axes = plt.subplots(1, 5, figsize=(7.0, 2.0))
    for ax in axes:
        ax.imshow(np.ones((2, 2)), cmap="gray")
    wide.canvas.draw()
    with pytest.raises(AssertionError):
        check_rows(wide)


def test_a_setting_changed_while_a_figure_is_drawn_is_kept() -> None:
    # a notebook's first figure turns interactive mode on (the inline backend is chosen then);
    # the style must not switch it off again, or the chapter's later figures are not shown
    interactive = matplotlib.is_interactive()
    try:
        with figure_style():
            matplotlib.interactive(True)
            assert matplotlib.rcParams["font.size"] == FONT_SIZE
        assert matplotlib.is_interactive()
    finally:
        matplotlib.interactive(interactive)
