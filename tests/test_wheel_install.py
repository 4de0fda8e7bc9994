"""A pip-installed captionlib (as in Colab, with no repository checkout) finds its configs
and keeps its data outside site-packages: build the wheel, install it into a fresh folder
and run chapter 1's data step from outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEP = """
import json, sys
import captionlib
from captionlib import steps
from captionlib.runconfig import load_run_config
from captionlib.utils import data_dir

config = load_run_config("shapeworld_tiny")  # a packaged config, found by name
data = steps.load_data(config, progress=False)
print(json.dumps({
    "module": captionlib.__file__,
    "data": str(data_dir()),
    "source": data.manifest["source"],
    "images": {name: len(split) for name, split in data.splits.items()},
}))
"""


def test_the_installed_wheel_runs_a_chapter_1_step_outside_the_repository(tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "captionlib", source / "captionlib", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(wheels), str(source)], check=True, capture_output=True)
    [wheel] = wheels.glob("captionlib-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "captionlib/configs/shapeworld_adaptive.yaml" in names
    assert "captionlib/configs/coco_adaptive.yaml" in names

    site = tmp_path / "site-packages"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    subprocess.run([*install, str(site), str(wheel)], check=True, capture_output=True)
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CAPTIONLIB_DATA", "XDG_CACHE_HOME")}
    env |= {"PYTHONPATH": str(site), "HOME": str(home), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", STEP], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["module"]).is_relative_to(site)  # the installed copy, not the checkout
    assert Path(report["data"]) == home / ".cache" / "captionlib"  # never inside site-packages
    assert Path(report["source"]).is_relative_to(home / ".cache" / "captionlib")
    assert report["images"] == {"train": 48, "val": 12, "test": 12, "shifted": 4}
    assert not list(elsewhere.iterdir())  # nothing written into the working directory
