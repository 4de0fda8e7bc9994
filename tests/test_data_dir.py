"""Where generated data goes: $CAPTIONLIB_DATA, the repository's data/, or a user cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from captionlib import utils


def test_environment_variable_wins_and_is_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAPTIONLIB_DATA", "relative/store")
    assert utils.data_dir() == tmp_path / "relative" / "store"
    assert (tmp_path / "relative" / "store").is_dir()


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_variable_is_an_error_not_the_current_directory(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAPTIONLIB_DATA", value)
    with pytest.raises(ValueError, match="CAPTIONLIB_DATA is set but empty"):
        utils.data_dir()
    assert list(tmp_path.iterdir()) == []


def test_a_file_is_not_a_data_folder(tmp_path, monkeypatch) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CAPTIONLIB_DATA", str(tmp_path / "file"))
    with pytest.raises(NotADirectoryError, match="not a folder"):
        utils.data_dir()


def test_checkout_uses_its_data_folder(monkeypatch) -> None:
    monkeypatch.delenv("CAPTIONLIB_DATA", raising=False)
    repository = Path(__file__).resolve().parent.parent
    assert utils.default_data_dir() == repository / "data"


def test_installed_package_uses_the_user_cache(tmp_path, monkeypatch) -> None:
    # a captionlib installed in site-packages has no pyproject.toml / _toc.yml beside it
    monkeypatch.setattr(utils, "_REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert utils.default_data_dir() == tmp_path / "cache" / "captionlib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert utils.default_data_dir() == tmp_path / "home" / ".cache" / "captionlib"
