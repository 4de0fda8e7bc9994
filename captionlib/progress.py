"""Progress bars that the reader's environment can switch off (chapter 1).

Every loop of the library that shows a bar goes through `progress_bar`. `progress=False`
hides it; `progress=True` shows it unless the environment says otherwise: tqdm reads
``TQDM_DISABLE=1`` (and other ``TQDM_*`` variables) only for arguments that are not passed,
so passing ``disable=False`` would override the variable. The book's build sets
``TQDM_DISABLE=1`` so that no progress widget is stored in the executed notebooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")


def progress_bar(iterable: Iterable[Item] | None = None, *, progress: bool, **options: Any) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total=`), hidden when `progress` is
    False or the environment disables tqdm (``TQDM_DISABLE=1``)."""
    if "disable" in options:
        raise TypeError("progress_bar takes progress=..., not disable=...")
    if not progress:
        options["disable"] = True
    return tqdm(iterable, **options)
