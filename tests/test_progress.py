"""Progress bars obey the environment: the book's build (TQDM_DISABLE=1) stores no widgets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import captionlib
from captionlib.progress import progress_bar


def test_progress_true_shows_a_bar_unless_the_environment_disables_tqdm() -> None:
    # tqdm reads TQDM_* when it is imported, so each setting runs in a fresh interpreter
    probe = (
        "from captionlib.progress import progress_bar; "
        "bar = progress_bar(range(3), progress=True); "
        "print(bar.disable, list(bar))"
    )
    for value, disabled in ((None, "False"), ("1", "True")):
        env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
        if value is not None:
            env["TQDM_DISABLE"] = value
        result = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout.split() == [disabled, "[0,", "1,", "2]"]


def test_the_variable_is_read_at_call_time_and_holds_for_notebook_bars(monkeypatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(total=3, progress=True).disable is True
    for value in ("0", "false", ""):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert progress_bar(total=3, progress=True).disable is False


def test_progress_false_hides_the_bar(monkeypatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_bar(total=5, progress=False).disable is True


def test_disable_is_not_accepted() -> None:
    with pytest.raises(TypeError, match="progress="):
        progress_bar(range(3), progress=True, disable=False)


def test_no_module_creates_tqdm_bars_directly() -> None:
    package = Path(captionlib.__file__).parent
    direct = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "progress.py"
        and re.search(r"^\s*(from|import) tqdm", path.read_text(), re.M)
    ]
    assert direct == []
