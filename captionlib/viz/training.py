"""Training curves (chapters 2–4).

::

    plot_history(captioner.history, "Captioner A")          # loss and validation score
    plot_histories({"A": history_a, "B": history_b})        # several runs on shared axes

Curves show the raw per-epoch values the training loop recorded (`TrainHistory`): training
loss (mean over the epoch's captions) and the validation score, with the selected (best)
epoch marked. Nothing is smoothed or rescaled. Both panels fit the book's column.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from captionlib.train import TrainHistory
from captionlib.viz.style import COLUMN_WIDTH, FONT_SIZE, TITLE_SIZE, caption, styled, wrap

LOSS_NAME = "training loss (cross-entropy per word)"


def _check_history(history: TrainHistory, name: str) -> None:
    if not history.train_loss:
        raise ValueError(f"history {name!r} has no epochs (train_loss is empty)")
    if len(history.val_score) != len(history.train_loss):
        raise ValueError(
            f"history {name!r} has {len(history.train_loss)} training losses but "
            f"{len(history.val_score)} validation scores"
        )
    if not -1 <= history.best_epoch < len(history.train_loss):
        raise ValueError(
            f"history {name!r} has best_epoch={history.best_epoch} outside its "
            f"{len(history.train_loss)} epochs"
        )


def _draw_curves(
    loss_ax: Axes, score_ax: Axes, history: TrainHistory, label: str | None, colour: object
) -> None:
    epochs = np.arange(1, len(history.train_loss) + 1)
    loss_ax.plot(epochs, history.train_loss, "o-", color=colour, label=label)
    score_ax.plot(epochs, history.val_score, "o-", color=colour, label=label)
    if history.best_epoch >= 0:
        best = history.best_epoch
        score_ax.plot(best + 1, history.val_score[best], "*", color=colour, markersize=16, zorder=3)


def _label_axes(
    loss_ax: Axes, score_ax: Axes, loss_name: str, score_name: str, epochs: int
) -> None:
    loss_ax.set_ylabel(wrap(loss_name, 2.4))
    score_ax.set_ylabel(wrap(score_name, 2.4))
    loss_ax.set_title("training loss", fontsize=TITLE_SIZE)
    score_ax.set_title(wrap(f"{score_name} (★ = selected epoch)", 3.2, TITLE_SIZE))
    for ax in (loss_ax, score_ax):
        ax.set_xlabel("epoch")
        ax.set_xticks(np.arange(1, epochs + 1))
        ax.grid(alpha=0.3)


def _two_panels() -> tuple[Figure, Axes, Axes]:
    figure, (loss_ax, score_ax) = plt.subplots(
        1, 2, figsize=(COLUMN_WIDTH, 3.2), layout="constrained"
    )
    return figure, loss_ax, score_ax


@styled
def plot_history(
    history: TrainHistory,
    title: str,
    score_name: str = "validation CIDEr-D",
    loss_name: str = LOSS_NAME,
) -> Figure:
    """Training loss (left) and validation score (right) per epoch; ★ marks the best epoch.

    `score_name` and `loss_name` label the axes (the encoder of chapter 2 reports
    "validation mAP" and a binary cross-entropy).
    """
    _check_history(history, title)
    figure, loss_ax, score_ax = _two_panels()
    _draw_curves(loss_ax, score_ax, history, None, "C0")
    _label_axes(loss_ax, score_ax, loss_name, score_name, len(history.train_loss))
    caption(figure, title, TITLE_SIZE)
    return figure


@styled
def plot_histories(
    histories: Mapping[str, TrainHistory],
    score_name: str = "validation CIDEr-D",
    title: str | None = None,
    loss_name: str = LOSS_NAME,
) -> Figure:
    """Several runs on the same two panels (loss, validation score), one colour per run; one
    legend under the panels."""
    if not histories:
        raise ValueError("histories is empty: pass {name: TrainHistory}")
    for name, history in histories.items():
        _check_history(history, name)
    figure, loss_ax, score_ax = _two_panels()
    for index, (name, history) in enumerate(histories.items()):
        _draw_curves(loss_ax, score_ax, history, name, f"C{index}")
    epochs = max(len(history.train_loss) for history in histories.values())
    _label_axes(loss_ax, score_ax, loss_name, score_name, epochs)
    figure.legend(
        *loss_ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=min(4, len(histories)),
        fontsize=FONT_SIZE,
    )
    if title is not None:
        caption(figure, title, TITLE_SIZE)
    return figure
