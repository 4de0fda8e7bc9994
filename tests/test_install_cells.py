"""Every chapter installs captionlib in Colab from the repository named in _config.yml.

The launch buttons of the built book take the same `repository.url`, so a fork changes one
line of _config.yml and every chapter follows (the test then names the chapters to update).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"]


def install_cell(url: str) -> str:
    return (
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:  # Colab only: install the book\'s library\n'
        f'    !pip install -q "captionlib @ git+{url}"'
    )


def test_repository_url_is_a_github_repository() -> None:
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository_url())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_from_the_configured_repository(path: Path) -> None:
    url = repository_url()
    cells = json.loads(path.read_text())["cells"]
    first = next(cell for cell in cells if cell["cell_type"] == "code")
    source = "".join(first["source"])
    assert source.startswith(install_cell(url)), (
        f"{path.name}: the first code cell must start with the Colab install cell for {url}:\n"
        f"{install_cell(url)}"
    )
    for other in re.findall(r"https?://[^\s\"']+", source):
        assert other == url, f"{path.name}: install cell names {other}, _config.yml says {url}"
