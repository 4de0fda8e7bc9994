"""The static word → explanation explorer (captionlib.viz.explorer, chapters 7 and 10).

Tiny float64 captioners on a tiny CNN (32×32 images, a 4×4 grid). The HTML is parsed back:
one button per explained word, one PNG per (word, method) of the image's size, and each
PNG's palette indices are the explain() map of that word, normalised as the caption line
states, recomputed here with numpy.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from bs4 import BeautifulSoup
from PIL import Image

from captionlib.data.vocab import Vocabulary
from captionlib.explain.api import explain, explained_words
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.encoder import SmallVGG
from captionlib.models.multihead import MultiHeadCaptioner
from captionlib.viz.explorer import (
    LEVELS,
    METHODS,
    ExplorerContent,
    explorer_content,
    explorer_html,
    live_explorer,
    live_kernel,
)

WORDS = ["a", "dog", "ball", "boat", "on", "the", "water", "red", "<b>big</b>", "with", "sand"]
VOCAB = Vocabulary(WORDS)
CHANNELS, GRID, SIZE = 6, 4, 32


def _captioner(kind: str) -> Captioner:
    torch.manual_seed(0)
    if kind == "A":
        model: Captioner = AdaptiveAttentionCaptioner(len(VOCAB), CHANNELS, 8, 12, 12)
    else:
        model = MultiHeadCaptioner(len(VOCAB), CHANNELS, 8, 12, heads=2, head_dim=4)
    return model.double().eval()


def _encoder() -> SmallVGG:
    torch.manual_seed(1)
    return SmallVGG(channels=(4, 5, CHANNELS), convs_per_block=1, in_size=SIZE).double().eval()


def _pixels(batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(batch, 3, SIZE, SIZE, dtype=torch.float64, generator=generator)


def _caption_ids() -> torch.Tensor:
    """Two captions: "a dog with a ball <end>" and "the <b>big</b> boat <end>" + padding."""
    rows = [["a", "dog", "with", "a", "ball"], ["the", "<b>big</b>", "boat"]]
    ids = [[VOCAB.START_ID, *(VOCAB.word_to_id(w) for w in row), VOCAB.END_ID] for row in rows]
    width = max(len(row) for row in ids)
    return torch.tensor([row + [VOCAB.PAD_ID] * (width - len(row)) for row in ids])


@pytest.fixture(scope="module", params=["A", "B"])
def setup(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    model, encoder, pixels, ids = _captioner(request.param), _encoder(), _pixels(), _caption_ids()
    content = explorer_content(
        model,
        encoder,
        pixels,
        VOCAB,
        ["first <image>", "second"],
        f"captioner {request.param}",
        caption_ids=ids,
    )
    return model, encoder, pixels, ids, content


def _parse(content: ExplorerContent, selected: list[int] | None = None):  # type: ignore[no-untyped-def]
    soup = BeautifulSoup(explorer_html(content, selected).data, "html.parser")
    root = soup.select_one("div.caption-explorer")
    data = json.loads(soup.find("script", id=f"{root['id']}-data").string.replace("<\\/", "</"))
    return soup, root, data


def _png(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    image.load()
    assert image.format == "PNG"
    return image


def test_one_button_per_caption_word(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, _, _, content = setup
    _, root, _ = _parse(content)
    blocks = root.select("div.cx-image")
    expected = [["a", "dog", "with", "a", "ball", "<end>"], ["the", "<b>big</b>", "boat", "<end>"]]
    assert len(blocks) == 2
    for block, words in zip(blocks, expected, strict=True):
        buttons = block.select("button.cx-chip")
        assert [b.get_text() for b in buttons] == words  # escaped in the HTML, text again here
        assert [int(b["data-word"]) for b in buttons] == list(range(len(words)))
        assert block.select("span.cx-chip")[0].get_text() == "<start>"
    assert root.select_one("p.cx-title").get_text().startswith(content.captioner)
    assert blocks[0].select_one("p.cx-title").get_text() == "first <image>"


def test_one_png_per_word_and_method_of_the_image_size(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, _, _, content = setup
    soup, root, data = _parse(content)
    for block, words, item in zip(root.select("div.cx-image"), data, content.images, strict=True):
        assert len(words) == len(item.words)
        for word in words:
            assert sorted(word["maps"]) == sorted(METHODS)
            for panel in word["maps"].values():
                image = _png(panel["src"])
                assert image.size == (SIZE, SIZE) and image.mode == "P"
        shown = block.select("img.cx-map")
        assert [img["data-method"] for img in shown] == list(METHODS)
        assert [img["src"] for img in shown] == [words[0]["maps"][m]["src"] for m in METHODS]
        assert _png(block.select("img")[0]["src"]).size == (SIZE, SIZE)
    style = soup.find("style").string
    assert style.count("url(data:image/png;base64,") == len(content.images)  # grey copies


def _expected_levels(heatmap: np.ndarray, method: str) -> tuple[np.ndarray, float]:
    """The normalisation the caption line states, written out with numpy."""
    if method == "lrp":
        scale = float(np.percentile(np.abs(heatmap), 99.5))
        scaled = np.clip(heatmap / scale, -1, 1)
        return np.rint((scaled + 1) / 2 * (LEVELS - 1)), scale
    scale = float(heatmap.max())
    if scale == 0:  # e.g. a Grad-CAM map that the ReLU zeroed everywhere
        return np.zeros_like(heatmap), scale
    return np.rint(heatmap / scale * (LEVELS - 1)), scale


def test_each_panel_is_the_explain_map_normalised_as_stated(setup) -> None:  # type: ignore[no-untyped-def]
    model, encoder, pixels, ids, content = setup
    _, root, data = _parse(content)
    note = root.select_one("p.cx-note").get_text()
    assert "99.5th percentile of |R|" in note and "from 0 to its own maximum" in note
    for method in METHODS:
        heatmaps = explain(model, encoder, pixels, ids, method=method).heatmap.numpy()
        assert (heatmaps.max(axis=(2, 3)) > 0).sum() >= 3  # not a test of empty maps
        for row, words in enumerate(data):
            for t, word in enumerate(words):
                expected, scale = _expected_levels(heatmaps[row, t], method)
                image = _png(word["maps"][method]["src"])
                assert np.array_equal(np.asarray(image), expected.astype(np.uint8))
                assert f"{scale:.2g}" in word["maps"][method]["scale"]
    # the palette: the top level of a signed map is opaque red, its middle level transparent
    image = _png(data[0][0]["maps"]["lrp"]["src"])
    palette = np.asarray(image.getpalette()[: 3 * LEVELS]).reshape(LEVELS, 3)
    alpha = image.info["transparency"]
    assert tuple(palette[-1]) == (255, 0, 0) and alpha[-1] == 255
    assert alpha[LEVELS // 2] == 0 and tuple(palette[0]) == (0, 0, 255)


def test_preceding_words_are_coloured_by_lrp_word_relevance(setup) -> None:  # type: ignore[no-untyped-def]
    model, encoder, pixels, ids, content = setup
    _, root, data = _parse(content, selected=[2, 1])
    relevance = explain(model, encoder, pixels, ids, method="lrp").word_relevance.numpy()
    for row, words in enumerate(data):
        for t, word in enumerate(words):
            values = relevance[row, t, : t + 1] / np.abs(relevance[row, t, : t + 1]).max()
            assert [c["value"] for c in word["preceding"]] == list(np.round(values, 3))
    block = root.select("div.cx-image")[0]
    chips = block.select(".cx-chip")
    coloured = [chip.get("style") for chip in chips]
    assert all(coloured[:3]) and not any(coloured[3:])  # <start>, "a", "dog" for word 2
    assert "cx-selected" in chips[3]["class"]  # word 2 ("with") is chip 3
    assert block.select_one(".cx-current").get_text() == "with"


def test_own_beam_caption_and_unique_ids() -> None:
    model, encoder, pixels = _captioner("A"), _encoder(), _pixels(1)
    content = explorer_content(model, encoder, pixels, VOCAB, ["one"], "A")
    own = explain(model, encoder, pixels, method="lrp")
    assert content.images[0].words == tuple(explained_words(own, VOCAB))
    ids = [BeautifulSoup(explorer_html(content).data, "html.parser").div["id"] for _ in range(2)]
    assert ids[0] != ids[1]


def test_bad_input_names_the_field(setup) -> None:  # type: ignore[no-untyped-def]
    model, encoder, pixels, ids, content = setup
    calls = {
        "pixels": lambda: explorer_content(model, encoder, pixels[0], VOCAB, ["x"], "A"),
        "titles": lambda: explorer_content(model, encoder, pixels, VOCAB, ["x"], "A"),
        "methods": lambda: explorer_content(
            model, encoder, pixels, VOCAB, ["x", "y"], "A", methods=["lrp", "nope"]
        ),
        "captioner": lambda: explorer_content(model, encoder, pixels, VOCAB, ["x", "y"], " "),
        "selected": lambda: explorer_html(content, selected=[0, 9]),
        "content": lambda: explorer_html("not content"),  # type: ignore[arg-type]
        "image": lambda: live_explorer(content, image=5, live=False),
    }
    for field, call in calls.items():
        with pytest.raises(ValueError, match=field):
            call()


def test_live_explorer_only_in_a_live_kernel(setup) -> None:  # type: ignore[no-untyped-def]
    import ipywidgets

    _, _, _, _, content = setup
    assert live_kernel() is False  # pytest is no kernel
    assert live_explorer(content) is None
    widget = live_explorer(content, image=1, live=True)
    assert isinstance(widget, ipywidgets.VBox)
    dropdown = widget.children[0]
    assert [label for label, _ in dropdown.options] == [
        "0: the",
        "1: <b>big</b>",
        "2: boat",
        "3: <end>",
    ]
