"""Progress bars that the reader's environment can switch off (chapter 1).

Every loop of the library that shows a bar goes through `progress_bar`. `progress=False`
hides it; `progress=True` shows it unless ``TQDM_DISABLE`` is set (to anything but "", "0"
or "false"). The library reads the variable itself: tqdm honours it only for arguments that
are not passed and only when it is imported, and its notebook bar (what `tqdm.auto` picks in
Jupyter) always passes ``disable`` on, so tqdm alone would still draw a widget. The book's
build sets ``TQDM_DISABLE=1`` so that no progress widget is stored in the executed notebooks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")


def disabled_by_environment() -> bool:
    """Whether $TQDM_DISABLE asks for no progress bars."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def progress_bar(iterable: Iterable[Item] | None = None, *, progress: bool, **options: Any) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total=`), hidden when `progress` is
    False or the environment disables tqdm (``TQDM_DISABLE=1``)."""
    if "disable" in options:
        raise TypeError("progress_bar takes progress=..., not disable=...")
    if not progress or disabled_by_environment():
        options["disable"] = True
    return tqdm(iterable, **options)
