"""Fixtures for the browser tests: the built book served on localhost, opened in headless
Chromium that cannot reach any other host (a reader with no internet).

Run after `make book` (and `make book-student`); `make test` does all three in order.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[2]
# another build can be tested by pointing these variables at its html/ folder
BOOK = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))
STUDENT = Path(os.environ.get("STUDENT_BOOK_HTML", ROOT / "student" / "_build" / "html"))
SKIP_FOLDERS = {"_static", "_sources", "_images", "jupyter_execute", "_sphinx_design_static"}
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}


def built(folder: Path, command: str) -> Path:
    if not (folder / "index.html").is_file():
        pytest.fail(f"no built book at {folder}: run `{command}` first", pytrace=False)
    return folder


def book_pages(folder: Path) -> list[Path]:
    """Every content page of a built book (not the search and index pages)."""
    pages = []
    for path in sorted(folder.rglob("*.html")):
        relative = path.relative_to(folder)
        if relative.parts[0] in SKIP_FOLDERS or relative.name in SKIP_PAGES:
            continue
        pages.append(path)
    return pages


@functools.cache
def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@pytest.fixture(scope="session")
def book() -> Path:
    return built(BOOK, "make book")


@pytest.fixture(scope="session")
def student_book() -> Path:
    return built(STUDENT, "make book-student")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="session")
def server(book: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def _executable(name: str, variable: str) -> str:
    found = os.environ.get(variable) or shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} not found (set {variable} or install Debian's chromium and "
            "chromium-driver: `make browser-tests` does)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def driver() -> Iterator[object]:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium", "CHROMIUM")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # no host but localhost resolves: the page must work with no internet
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(_executable("chromedriver", "CHROMEDRIVER"))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(60)
    browser.set_script_timeout(60)
    yield browser
    browser.quit()


def open_page(driver: object, server: str, book: Path, page: Path) -> list[dict]:
    """Load `page`, wait until MathJax (if the page has math) has typeset it; return the
    browser log entries of this page load."""
    driver.get_log("browser")  # type: ignore[attr-defined]  # drop earlier pages' entries
    driver.get(f"{server}/{page.relative_to(book).as_posix()}")  # type: ignore[attr-defined]
    driver.execute_async_script(  # type: ignore[attr-defined]
        """
        const done = arguments[arguments.length - 1];
        const ready = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise.then(() => done(true), () => done(false))
            : done(true);
        if (document.readyState === "complete") ready();
        else window.addEventListener("load", ready);
        """
    )
    return driver.get_log("browser")  # type: ignore[attr-defined]
