"""The built book as a reader without internet sees it (headless Chromium, localhost only).

Static checks parse every page's HTML; rendering checks open each page in the browser.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import BOOK, book_pages, open_page, soup
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.wait import WebDriverWait

PAGES = book_pages(BOOK) if BOOK.is_dir() else []
CHAPTERS = [page for page in PAGES if page.parent.name == "notebooks"]
REMOTE = re.compile(r"^(https?:)?//")
# a plain-text table printed into an output: pipe rows or an aligned "----  ----" rule
TEXT_TABLE = re.compile(r"^\s*\|.*\|\s*$|^\s*-{3,}( {2,}-{3,})+\s*$", re.MULTILINE)


def page_id(page: Path) -> str:
    return page.relative_to(BOOK).as_posix()


def test_the_book_has_every_chapter(book: Path) -> None:
    assert len(CHAPTERS) == 12, [page_id(p) for p in CHAPTERS]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_remote_scripts_or_stylesheets(page: Path) -> None:
    html = soup(page)
    remote = [tag.get("src") for tag in html.find_all("script") if REMOTE.match(tag.get("src", ""))]
    remote += [
        tag.get("href")
        for tag in html.find_all("link")
        if "stylesheet" in (tag.get("rel") or []) and REMOTE.match(tag.get("href", ""))
    ]
    assert remote == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_internal_links_resolve(page: Path) -> None:
    broken = []
    for anchor in soup(page).find_all("a", href=True):
        href = anchor["href"]
        if REMOTE.match(href) or href.startswith(("mailto:", "javascript:")):
            continue
        parts = urlsplit(href)
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not target.is_file():
            broken.append(href)
            continue
        if parts.fragment and target.suffix == ".html":
            ids = {tag.get("id") for tag in soup(target).find_all(id=True)}
            if parts.fragment not in ids:
                broken.append(href)
    assert broken == []


@pytest.mark.parametrize("page", CHAPTERS, ids=page_id)
def test_no_error_output_and_no_text_tables(page: Path) -> None:
    html = soup(page)
    outputs = html.select("div.cell_output")
    assert not html.select("div.cell_output .stderr, div.cell_output .traceback")
    text = "\n".join(output.get_text() for output in outputs)
    for marker in ("Traceback (most recent call last)", "Warning:", "Error:"):
        assert marker not in text, f"{marker!r} in an output"
    printed = "\n".join(pre.get_text() for output in outputs for pre in output.find_all("pre"))
    assert not TEXT_TABLE.search(printed), "a table printed as text: use captionlib.viz.tables"
    widgets = page.read_text(encoding="utf-8").count("widget-view+json")
    assert widgets == 0, f"{widgets} stored widget outputs (a progress bar?) on the page"


def test_results_tables_are_html_tables(book: Path) -> None:
    chapter_11 = soup(book / "notebooks" / "11_lrp_inference_finetuning.html")
    tables = chapter_11.select("div.cell_output table")
    headline = [t for t in tables if "CHAIRs" in t.get_text() and "LRP-IFT" in t.get_text()]
    assert headline, "chapter 11's before / control / LRP-IFT table is not an HTML table"
    rows = headline[0].select("tbody tr")
    assert len(rows) == 12  # 2 captioners × 2 splits × (before, control, LRP-IFT)
    for chapter, header in (
        ("03_adaptive_attention", "CIDEr-D"),
        ("04_multihead_attention", "CIDEr-D"),
        ("09_evaluating_explanations", "LRP"),
        ("10_debugging_hallucinations", "CHAIRs"),
    ):
        tables = soup(book / "notebooks" / f"{chapter}.html").select("div.cell_output table")
        assert any(header in t.get_text() for t in tables), f"{chapter}: no table with {header}"


def _rendered(driver, server, book, page):  # type: ignore[no-untyped-def]
    log = open_page(driver, server, book, page)
    errors = [entry["message"] for entry in log if entry.get("source") == "javascript"]
    return errors


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_renders_math_and_fits_the_column(driver, server, book, page: Path) -> None:
    errors = _rendered(driver, server, book, page)
    assert errors == [], "JavaScript errors on the page"
    state = driver.execute_script(
        """
        const math = document.querySelectorAll('.math');
        const typeset = document.querySelectorAll('mjx-container');
        const text = document.querySelector('main') ? document.querySelector('main').innerText
                                                    : document.body.innerText;
        const wide = [...document.querySelectorAll('div.cell_output pre')]
            .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
            .map(pre => pre.innerText.split('\\n').sort((a, b) => b.length - a.length)[0]);
        const article = document.querySelector('article') || document.body;
        const limit = article.getBoundingClientRect().right + 1;
        const overflowing = element => element.scrollWidth > element.clientWidth + 1
            || element.getBoundingClientRect().right > limit;
        const wideTables = [...document.querySelectorAll('div.cell_output table, article table')]
            .filter(table => overflowing(table.parentElement)
                || table.getBoundingClientRect().right > limit)
            .map(table => table.innerText.split('\\n')[0].slice(0, 60));
        const wideMath = [...document.querySelectorAll('mjx-container[display="true"]')]
            .filter(math => math.getBoundingClientRect().right > limit
                || math.scrollWidth > math.clientWidth + 1
                || (math.parentElement && overflowing(math.parentElement)))
            .map(math => (math.getAttribute('aria-label') || 'display math').slice(0, 60));
        const resources = performance.getEntriesByType('resource').map(e => e.name)
            .filter(name => !name.startsWith(location.origin) && !name.startsWith('data:'));
        return {math: math.length, typeset: typeset.length,
                errors: document.querySelectorAll('mjx-merror').length,
                raw: (text.match(/\\\\\\(|\\\\\\[|\\$\\$/g) || []).length,
                wide: wide, wideTables: wideTables, wideMath: wideMath,
                resources: resources};
        """
    )
    assert state["resources"] == [], "the page asked for a remote resource"
    if state["math"]:
        assert state["typeset"] >= state["math"], "math left untypeset"
        assert state["errors"] == 0, "MathJax could not typeset some math"
    assert state["raw"] == 0, "raw TeX delimiters on the page"
    assert state["wide"] == [], "output lines wider than the column"
    assert state["wideTables"] == [], "tables wider than the column"
    assert state["wideMath"] == [], "display equations wider than the column"


@pytest.mark.parametrize("page", CHAPTERS, ids=page_id)
def test_solutions_are_hidden_until_clicked(driver, server, book, page: Path) -> None:
    if not soup(page).select("div.solution"):
        pytest.fail(f"{page_id(page)} has no sphinx-exercise solution")
    open_page(driver, server, book, page)
    solution = driver.find_element("css selector", "div.solution.dropdown")
    body = solution.find_element("css selector", "section, .cell, p:not(.admonition-title)")
    assert not body.is_displayed(), "a solution is visible before its toggle is clicked"
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", solution)
    solution.find_element("css selector", ".admonition-title").click()
    try:  # the dropdown opens through the theme's JavaScript: give a loaded machine 10 s
        WebDriverWait(driver, 10).until(lambda _: body.is_displayed())
    except TimeoutException:
        pytest.fail("clicking the solution's title did not show it")


@pytest.mark.parametrize("page", CHAPTERS, ids=page_id)
def test_every_exercise_has_a_numbered_solution(page: Path) -> None:
    html = soup(page)
    exercises = html.select("div.exercise")
    solutions = html.select("div.solution")
    assert exercises, "no sphinx-exercise exercises"
    assert len(solutions) == len(exercises)
    assert all("dropdown" in s.get("class", []) for s in solutions)
    titles = [s.select_one(".admonition-title").get_text(" ", strip=True) for s in solutions]
    assert all(re.match(r"Solution to\s+Exercise \d+(\.\d+)*", t) for t in titles), titles


def test_student_edition_has_exercises_and_no_solutions(student_book: Path) -> None:
    chapters = [p for p in book_pages(student_book) if p.parent.name == "notebooks"]
    assert len(chapters) == 12
    for page in chapters:
        html = soup(page)
        assert html.select("div.exercise"), f"{page.name}: no exercises"
        assert not html.select("div.solution"), f"{page.name}: a solution in the student edition"
        assert "Solution to" not in html.get_text(), f"{page.name}: a solution title remains"
        links = [a["href"] for a in html.find_all("a", href=True)]
        handing_out = [
            h for h in links if h.split("#")[0].endswith(".ipynb") or "colab.research" in h
        ]
        assert handing_out == [], f"{page.name}: a link hands out the notebook"
    assert not list(student_book.rglob("*.ipynb")), "the student edition ships notebooks"
