"""The static explorers of chapters 7 and 10 (captionlib.viz.explorer) respond in the built
book with no kernel: clicking a word swaps the heat maps and recolours the preceding words.
"""

from __future__ import annotations

import pytest
from conftest import open_page

EXPLORER_PAGES = ["07_lrp_for_captioners", "10_debugging_hallucinations"]

STATE = """
const block = arguments[0];
return {
    sources: [...block.querySelectorAll('img.cx-map')].map(img => img.src),
    colours: [...block.querySelectorAll('.cx-chip')]
        .map(chip => getComputedStyle(chip).backgroundColor),
    selected: [...block.querySelectorAll('button.cx-chip')]
        .findIndex(button => button.classList.contains('cx-selected')),
    current: block.querySelector('.cx-current').textContent,
};
"""


@pytest.mark.parametrize("chapter", EXPLORER_PAGES)
def test_clicking_a_word_swaps_maps_and_word_colours(driver, server, book, chapter: str) -> None:  # type: ignore[no-untyped-def]
    page = book / "notebooks" / f"{chapter}.html"
    widgets = page.read_text(encoding="utf-8").count("widget-view+json")
    assert widgets == 0, f"{widgets} stored widget outputs (a progress bar?) on the page"
    log = open_page(driver, server, book, page)
    assert [entry["message"] for entry in log if entry.get("source") == "javascript"] == []
    explorers = driver.find_elements("css selector", "div.caption-explorer")
    assert explorers, f"{chapter}: no explorer on the page"
    ids = [explorer.get_attribute("id") for explorer in explorers]
    assert len(set(ids)) == len(ids), "two explorers share an id"
    for explorer in explorers:
        block = explorer.find_element("css selector", "div.cx-image")
        buttons = block.find_elements("css selector", "button.cx-chip")
        assert len(buttons) >= 2
        before = driver.execute_script(STATE, block)
        target = len(buttons) - 1 if before["selected"] != len(buttons) - 1 else 0
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", buttons[target])
        buttons[target].click()
        after = driver.execute_script(STATE, block)
        assert after["selected"] == target
        assert after["current"] == buttons[target].text
        assert all(a != b for a, b in zip(after["sources"], before["sources"], strict=True))
        assert after["colours"] != before["colours"], "preceding-word colours did not change"
    errors = [e for e in driver.get_log("browser") if e.get("source") == "javascript"]
    assert errors == [], "JavaScript errors after clicking"
