"""Training curves and metric tables (chapters 2–4).

    plot_history(captioner.history, "Captioner A")          # loss and validation score
    plot_histories({"A": history_a, "B": history_b})        # several runs on shared axes
    print(metrics_table({"test": scores, "shifted": shifted_scores}))

Curves show the raw per-epoch values the training loop recorded (`TrainHistory`): training
loss (mean over the epoch's captions) and the validation score, with the selected (best)
epoch marked. Nothing is smoothed or rescaled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from captionlib.train import TrainHistory

CellValue = float | int | str | None
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
    loss_ax.set_ylabel(loss_name)
    score_ax.set_ylabel(score_name)
    for ax in (loss_ax, score_ax):
        ax.set_xlabel("epoch")
        ax.set_xticks(np.arange(1, epochs + 1))
        ax.grid(alpha=0.3)


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
    figure, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    _draw_curves(loss_ax, score_ax, history, None, "C0")
    _label_axes(loss_ax, score_ax, loss_name, score_name, len(history.train_loss))
    loss_ax.set_title("training loss")
    score_ax.set_title(f"{score_name} (★ = selected epoch)")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_histories(
    histories: Mapping[str, TrainHistory],
    score_name: str = "validation CIDEr-D",
    title: str | None = None,
    loss_name: str = LOSS_NAME,
) -> Figure:
    """Several runs on the same two panels (loss, validation score), one colour per run."""
    if not histories:
        raise ValueError("histories is empty: pass {name: TrainHistory}")
    for name, history in histories.items():
        _check_history(history, name)
    figure, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    for index, (name, history) in enumerate(histories.items()):
        _draw_curves(loss_ax, score_ax, history, name, f"C{index}")
    epochs = max(len(history.train_loss) for history in histories.values())
    _label_axes(loss_ax, score_ax, loss_name, score_name, epochs)
    loss_ax.set_title("training loss")
    score_ax.set_title(f"{score_name} (★ = selected epoch)")
    score_ax.legend()
    if title is not None:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def _cell(value: CellValue, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        raise ValueError(f"table cells must be numbers or strings, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    if isinstance(value, str):
        return value
    raise ValueError(f"table cells must be numbers or strings, got {type(value).__name__}")


def metrics_table(
    rows: Mapping[str, Mapping[str, CellValue]],
    columns: Sequence[str] | None = None,
    digits: int = 3,
) -> str:
    """A plain-text table: one line per row name, one column per metric.

    `columns` picks and orders the columns (default: every key, in order of first
    appearance); a row without a column shows "–". Floats get `digits` decimals.
    """
    if not rows:
        raise ValueError("rows is empty: pass {row name: {column: value}}")
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    body = [
        [name, *(_cell(row.get(column), digits) for column in columns)]
        for name, row in rows.items()
    ]
    header = ["", *columns]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line: Sequence[str]) -> str:
        first = line[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *(render(line) for line in body)])
