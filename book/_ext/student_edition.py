"""The student edition: the same book with every sphinx-exercise solution left out.

The pages carry no solution, and nothing links to one: no notebook download, no copied
sources, no launch button (each would hand out the full notebook).

For lecturers who hand the book out before the exercises are due (`make book-student`).

- As a Sphinx extension (listed in _config.yml), it removes every solution, including the
  notebook cells between `solution-start` and `solution-end`, when the config value
  `student_edition` is true. (sphinx-exercise's own `hide_solutions` drops only the opening
  directive of a gated solution and leaves its cells on the page.)
- As a script, `python book/_ext/student_edition.py OUT` writes the student edition's config,
  derived from _config.yml so the two editions cannot drift apart. Paths that Jupyter Book
  resolves against the config file's folder (local extensions) are made absolute.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform

ROOT = Path(__file__).resolve().parents[2]


def student_config(config: dict) -> dict:
    """The student edition of a parsed _config.yml (a new dict; the input is unchanged)."""
    sphinx = dict(config.get("sphinx", {}))
    sphinx["config"] = {
        **sphinx.get("config", {}),
        "student_edition": True,
        # the notebooks hold the solutions: no .ipynb download, no copied sources
        "html_copy_source": False,
        "html_theme_options": {"use_download_button": False},
    }
    sphinx["local_extensions"] = {
        name: str((ROOT / path).resolve())
        for name, path in sphinx.get("local_extensions", {}).items()
    }
    return {
        **config,
        "title": f"{config['title']} (student edition)",
        "sphinx": sphinx,
        # a launch button would open the full notebook, solutions included
        "launch_buttons": {},
    }


class RemoveSolutions(SphinxTransform):
    """Drop every (merged) solution node from the page in the student edition."""

    default_priority = 20  # after sphinx-exercise merges gated solutions (priority 10)

    def apply(self, **kwargs: Any) -> None:
        if not self.config.student_edition:
            return
        from sphinx_exercise.nodes import solution_node

        for node in list(self.document.findall(solution_node)):
            node.parent.remove(node)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("student_edition", False, "env")
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(output: str) -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(student_config(config), sort_keys=False), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python book/_ext/student_edition.py OUTPUT_CONFIG")
    main(sys.argv[1])
