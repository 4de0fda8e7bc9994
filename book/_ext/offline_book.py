"""Sphinx extension: the built book loads nothing from the network.

Every page must work from a local copy with no internet (a classroom behind a filter, an
archived build). This extension

- drops sphinx-thebe's scripts: the book offers no live kernel in the page (the launch
  buttons open Colab instead), and sphinx-thebe registers its configuration script twice,
  which throws "Identifier 'THEBE_JS_URL' has already been declared" on every page;
- fails the build (a warning, an error under -W) when a page still references a remote
  script or stylesheet, so a theme or extension update cannot bring a CDN back silently.

MathJax is served from the book's own static files (`mathjax_path` in _config.yml; the
Makefile copies it from the npm package into book/_static/mathjax).
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
REMOTE = ("http://", "https://", "//")


def _is_thebe(asset: Any) -> bool:
    name = str(getattr(asset, "filename", "") or "")
    body = str(getattr(asset, "attributes", {}).get("body", ""))
    return "sphinx-thebe" in name or "THEBE_JS_URL" in body or "thebe@" in name


def _filter_assets(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    scripts = context.get("script_files")
    if scripts is not None:
        scripts[:] = [script for script in scripts if not _is_thebe(script)]
    for key in ("script_files", "css_files"):
        for asset in context.get(key, []):
            name = str(getattr(asset, "filename", asset) or "")
            if name.startswith(REMOTE):
                logger.warning(
                    "page %s loads a remote %s: %s (the book must build self-contained)",
                    pagename,
                    "script" if key == "script_files" else "stylesheet",
                    name,
                    type="offline_book",
                    subtype="remote_asset",
                )


def setup(app: Sphinx) -> dict[str, Any]:
    # after sphinx's own mathjax and the theme's handlers have added their assets
    app.connect("html-page-context", _filter_assets, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
