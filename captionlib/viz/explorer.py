"""A word → explanation explorer that works in the static book, no kernel needed
(chapters 7 and 10)::

    content = explorer_content(model, encoder, pixels, vocab, titles, captioner="A")
    display(explorer_html(content))   # self-contained HTML with a few lines of inline JS
    live_explorer(content)            # the ipywidgets word selector, in live kernels only

`explorer_content` explains every word of each image's caption (the captioner's own beam-3
caption, or given caption ids) through `captionlib.explain.api.explain`, once per method.
`explorer_html` pre-renders every (word, method) heat map as a small PNG data URI and shows
the caption's words as buttons; clicking a word swaps the panels and colours the preceding
words by their LRP relevance. The page needs no script, stylesheet or request of its own.

Normalisation (stated under the panels): signed maps (LRP) use the diverging map `bwr`
scaled to ± the 99.5th percentile of `|R|` of that panel (beyond: saturated); non-negative
maps (attention, Grad-CAM) use the sequential map `viridis` from 0 to the panel's maximum.
Each map is drawn over a grey copy of the image with opacity ∝ `|value|`. Preceding-word
relevance is divided by `max_i |r_i|` of the explained word (book/method.md §5).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from IPython.display import HTML
from matplotlib import colormaps
from PIL import Image
from torch import Tensor, nn

from captionlib.data.coco import denormalize
from captionlib.data.vocab import Vocabulary
from captionlib.explain.api import METHODS as REGISTERED
from captionlib.explain.api import explain, explained_words
from captionlib.models.base import Captioner
from captionlib.viz.relevance import (
    DEFAULT_PERCENTILE,
    RELEVANCE_CMAP,
    START_TOKEN,
    explorer,
    input_words,
    normalize_symmetric,
    row_normalize,
)

METHODS = ("lrp", "attention", "gradcam")
METHOD_NAMES = {"lrp": "LRP", "attnlrp": "AttnLRP", "attention": "attention", "gradcam": "Grad-CAM"}
NON_NEGATIVE = ("attention", "gradcam")  # every other method's maps are signed
SEQUENTIAL_CMAP = "viridis"
LEVELS = 65  # colour levels per map; odd, so that 0 of a signed map is the middle level
_COUNTER = itertools.count()


@dataclass(frozen=True)
class ExplainedImage:
    """One image of an explorer: its caption's explained words (<end> included) and maps.

    image: (H, W, 3) floats in [0, 1]; maps: method → (L, H, W) raw heat maps (the
    Explanation's `heatmap`); word_relevance: (L, L) LRP relevance, [t, i] for input word i
    (<start> first) of explained word t.
    """

    title: str
    image: np.ndarray
    words: tuple[str, ...]
    maps: dict[str, np.ndarray]
    word_relevance: np.ndarray


@dataclass(frozen=True)
class ExplorerContent:
    """What `explorer_html` shows: one captioner, its methods and its explained images."""

    captioner: str
    methods: tuple[str, ...]
    images: tuple[ExplainedImage, ...]
    percentile: float = DEFAULT_PERCENTILE


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(methods)
    if not chosen:
        raise ValueError("methods must name at least one explanation method")
    unknown = [m for m in chosen if m not in REGISTERED]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; registered: {sorted(REGISTERED)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"methods must not repeat, got {list(chosen)}")
    return chosen


def explorer_content(
    model: Captioner,
    encoder: nn.Module,
    pixels: Tensor,
    vocabulary: Vocabulary,
    titles: Sequence[str],
    captioner: str,
    methods: Sequence[str] = METHODS,
    caption_ids: Tensor | None = None,
) -> ExplorerContent:
    """Explain every word of B captions with each method, for `explorer_html` (chapters 7, 10).

    pixels: (B, 3, H, W) the model's ImageNet-normalised input; titles: one line per image;
    captioner: its name in the explorer's heading. caption_ids: (B, T) captions to explain
    (<start> first); None explains the captioner's own beam-3 caption. LRP always runs
    (it gives the preceding words' relevance); `methods` are the panels, in order.
    """
    chosen = _check_methods(methods)
    if not isinstance(pixels, Tensor) or pixels.dim() != 4 or pixels.shape[1] != 3:
        shape = tuple(pixels.shape) if isinstance(pixels, Tensor) else type(pixels).__name__
        raise ValueError(f"pixels must be a (B, 3, H, W) tensor, got {shape}")
    if len(titles) != pixels.shape[0]:
        raise ValueError(f"titles has {len(titles)} entries for {pixels.shape[0]} images")
    if not isinstance(captioner, str) or not captioner.strip():
        raise ValueError(f"captioner must be a non-empty name, got {captioner!r}")
    lrp = explain(model, encoder, pixels, caption_ids, method="lrp")
    results = {"lrp": lrp}
    for method in chosen:
        if method not in results:
            results[method] = explain(model, encoder, pixels, lrp.caption_ids, method=method)
    images = []
    for row, title in enumerate(titles):
        words = tuple(explained_words(lrp, vocabulary, row))
        length = len(words)
        maps = {}
        for method in chosen:
            heatmap = results[method].heatmap
            if heatmap is None:
                raise ValueError(f"methods: {method!r} gives no pixel heat map")
            maps[method] = heatmap[row, :length].detach().cpu().double().numpy()
        relevance = lrp.word_relevance[row, :length, :length]  # type: ignore[index]
        image = denormalize(pixels[row].detach().cpu().double()).permute(1, 2, 0).numpy()
        images.append(
            ExplainedImage(
                title=title,
                image=image,
                words=words,
                maps=maps,
                word_relevance=relevance.detach().cpu().double().numpy(),
            )
        )
    return ExplorerContent(captioner=captioner, methods=chosen, images=tuple(images))


# --- drawing ---------------------------------------------------------------------------------


def normalized_map(
    values: np.ndarray, method: str, percentile: float = DEFAULT_PERCENTILE
) -> tuple[np.ndarray, float]:
    """A map scaled for display, and its scale: signed maps → [-1, 1] by ± the percentile of
    `|values|` (`relevance.normalize_symmetric`), non-negative maps → [0, 1] by their max."""
    if method not in NON_NEGATIVE:
        return normalize_symmetric(values, percentile)
    if values.min() < 0:
        raise ValueError(f"{method} maps must be non-negative, got a minimum of {values.min():.3g}")
    peak = float(values.max())
    if peak == 0:
        return np.zeros_like(values), 0.0
    return values / peak, peak


def levels(normalized: np.ndarray, signed: bool) -> np.ndarray:
    """Palette indices 0 … LEVELS − 1 of a normalised map ([-1, 1] signed, else [0, 1])."""
    position = (normalized + 1.0) / 2.0 if signed else normalized
    return np.rint(position * (LEVELS - 1)).astype(np.uint8)


def _png(image: Image.Image, **options: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True, **options)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def map_png(normalized: np.ndarray, signed: bool) -> str:
    """A normalised map as a palette PNG data URI: colour from `bwr` (signed) or `viridis`,
    opacity ∝ `|value|`, one palette entry per level."""
    position = np.linspace(0.0, 1.0, LEVELS)
    colours = colormaps[RELEVANCE_CMAP if signed else SEQUENTIAL_CMAP](position)[:, :3]
    opacity = np.abs(2.0 * position - 1.0) if signed else position
    image = Image.fromarray(levels(normalized, signed), mode="P")
    image.putpalette(np.rint(colours * 255).astype(np.uint8).flatten().tolist())
    return _png(image, transparency=bytes(np.rint(opacity * 255).astype(np.uint8).tolist()))


def image_png(image: np.ndarray, grey: bool = False) -> str:
    """(H, W, 3) floats in [0, 1] as a PNG data URI; grey=True gives the lightened grey copy
    the maps are drawn over (as in `relevance.relevance_grid`)."""
    if grey:
        values = 0.35 + 0.65 * image.mean(axis=2)
        return _png(Image.fromarray(np.rint(values * 255).astype(np.uint8), mode="L"))
    return _png(Image.fromarray(np.rint(image * 255).astype(np.uint8), mode="RGB"))


def scale_text(scale: float, method: str, percentile: float = DEFAULT_PERCENTILE) -> str:
    """The scale printed under a panel."""
    if scale == 0:
        return "0 everywhere"
    if method in NON_NEGATIVE:
        return f"0 to {scale:.2g} (max)"
    return f"± {scale:.2g} ({percentile:g}th pct.)"


def word_colours(relevance: np.ndarray) -> list[dict[str, Any]]:
    """Background and text colour of each preceding word from `r / max_i |r_i|` in [-1, 1]."""
    rgba = colormaps[RELEVANCE_CMAP]((relevance + 1.0) / 2.0)
    return [
        {
            "background": "#{:02x}{:02x}{:02x}".format(*np.rint(colour[:3] * 255).astype(int)),
            "text": "#ffffff" if abs(value) > 0.6 else "#000000",
            "value": round(float(value), 3),
        }
        for colour, value in zip(rgba, relevance, strict=True)
    ]


def normalisation_note(content: ExplorerContent) -> str:
    """The caption line under the panels: how every map and word colour is normalised."""
    signed = [METHOD_NAMES.get(m, m) for m in content.methods if m not in NON_NEGATIVE]
    positive = [METHOD_NAMES.get(m, m) for m in content.methods if m in NON_NEGATIVE]
    parts = []
    if signed:
        parts.append(
            f"{', '.join(signed)}: red supports, blue opposes the word, each panel scaled to "
            f"± its {content.percentile:g}th percentile of |R| (beyond: saturated)"
        )
    if positive:
        parts.append(f"{', '.join(positive)}: each panel from 0 to its own maximum")
    return (
        "; ".join(parts) + ". Maps over a grey copy of the image, opacity ∝ |value|; the "
        "scale is under each panel. Preceding words are coloured by LRP relevance "
        "r_i / max_i |r_i| of the selected word (red supports, blue opposes)."
    )


def _word_data(item: ExplainedImage, content: ExplorerContent) -> list[dict[str, Any]]:
    """Per explained word: every method's panel (src, scale) and the preceding words' colours."""
    preceding = row_normalize(item.word_relevance)  # (L, L)
    words = []
    for t, word in enumerate(item.words):
        panels = {}
        for method in content.methods:
            normalized, scale = normalized_map(item.maps[method][t], method, content.percentile)
            panels[method] = {
                "src": map_png(normalized, method not in NON_NEGATIVE),
                "scale": scale_text(scale, method, content.percentile),
            }
        words.append(
            {"word": word, "maps": panels, "preceding": word_colours(preceding[t, : t + 1])}
        )
    return words


def _check_content(content: ExplorerContent, selected: Sequence[int] | None) -> list[int]:
    if not isinstance(content, ExplorerContent):
        raise ValueError(f"content must be an ExplorerContent, got {type(content).__name__}")
    if not content.images:
        raise ValueError("content has no images")
    for index, item in enumerate(content.images):
        length = len(item.words)
        if length == 0:
            raise ValueError(f"images[{index}] has no explained words")
        if item.word_relevance.shape != (length, length):
            raise ValueError(
                f"images[{index}].word_relevance is {item.word_relevance.shape}, "
                f"expected ({length}, {length})"
            )
        for method in content.methods:
            shape = item.maps[method].shape if method in item.maps else None
            if shape is None or shape != (length, *item.image.shape[:2]):
                raise ValueError(
                    f"images[{index}].maps[{method!r}] is {shape}, expected "
                    f"({length}, {item.image.shape[0]}, {item.image.shape[1]})"
                )
    chosen = [0] * len(content.images) if selected is None else list(selected)
    if len(chosen) != len(content.images):
        raise ValueError(f"selected has {len(chosen)} entries for {len(content.images)} images")
    for index, (word, item) in enumerate(zip(chosen, content.images, strict=True)):
        if not 0 <= word < len(item.words):
            raise ValueError(
                f"selected[{index}] = {word} is out of range for {len(item.words)} words"
            )
    return chosen


_STYLE = """
#{id} {{font-size: 0.85rem; line-height: 1.35; margin: 0.5rem 0 1rem 0}}
#{id} .cx-image {{border-top: 1px solid #ccc; padding: 0.4rem 0}}
#{id} .cx-title {{margin: 0.2rem 0; font-weight: 600}}
#{id} .cx-words {{display: flex; flex-wrap: wrap; gap: 3px; margin: 0.3rem 0}}
#{id} .cx-chip {{font: inherit; padding: 1px 6px; border: 1px solid #999; border-radius: 3px;
  background: #f4f4f4; color: #000; cursor: default}}
#{id} button.cx-chip {{cursor: pointer}}
#{id} .cx-chip.cx-selected {{outline: 2px solid #000; font-weight: 700}}
#{id} .cx-panels {{display: flex; flex-wrap: wrap; gap: 6px}}
#{id} figure {{margin: 0; width: 140px}}
#{id} .cx-frame {{width: 140px; height: 140px; background-size: 100% 100%;
  image-rendering: pixelated}}
#{id} .cx-frame img {{display: block; width: 140px; height: 140px; margin: 0;
  image-rendering: pixelated}}
#{id} figcaption {{font-size: 0.75rem; text-align: center}}
#{id} .cx-note {{font-size: 0.75rem; color: #444; margin: 0.3rem 0 0 0}}
"""

_SCRIPT = """
(function () {
  var root = document.getElementById("%(id)s");
  var data = JSON.parse(document.getElementById("%(id)s-data").textContent);
  root.querySelectorAll(".cx-image").forEach(function (block, index) {
    var words = data[index];
    var chips = block.querySelectorAll(".cx-chip");
    function show(t) {
      var word = words[t];
      block.querySelectorAll("img.cx-map").forEach(function (img) {
        var panel = word.maps[img.dataset.method];
        img.src = panel.src;
        img.alt = img.dataset.name + " map of '" + word.word + "'";
        img.parentNode.parentNode.querySelector(".cx-scale").textContent = panel.scale;
      });
      chips.forEach(function (chip, i) {
        var colour = i <= t ? word.preceding[i] : null;
        chip.style.background = colour ? colour.background : "";
        chip.style.color = colour ? colour.text : "";
        chip.title = colour ? "r / max |r| = " + colour.value : "";
        chip.classList.toggle("cx-selected", i === t + 1);
      });
      block.querySelector(".cx-current").textContent = word.word;
    }
    block.querySelectorAll("button.cx-chip").forEach(function (button) {
      button.addEventListener("click", function () { show(Number(button.dataset.word)); });
    });
  });
})();
"""


def _chip(label: str, colour: dict[str, Any] | None, selected: bool, word: int | None) -> str:
    style = ""
    title = ""
    if colour is not None:
        style = f' style="background: {colour["background"]}; color: {colour["text"]}"'
        title = f' title="r / max |r| = {colour["value"]}"'
    classes = "cx-chip cx-selected" if selected else "cx-chip"
    text = html.escape(label)
    if word is None:
        return f'<span class="{classes}"{style}{title}>{text}</span>'
    button = f'<button type="button" class="{classes}" data-word="{word}"'
    return f"{button}{style}{title}>{text}</button>"


def _image_block(
    index: int, item: ExplainedImage, words: list[dict[str, Any]], t: int, content: ExplorerContent
) -> str:
    """The static HTML of one image, showing word t (the script swaps it on a click)."""
    word = words[t]
    labels = input_words(list(item.words), START_TOKEN)
    chips = [
        _chip(
            label,
            word["preceding"][i] if i <= t else None,
            i == t + 1,
            None if i == 0 else i - 1,
        )
        for i, label in enumerate([*labels, item.words[-1]])
    ]
    figures = [
        f'<figure><div class="cx-frame"><img src="{image_png(item.image)}" alt="the image"></div>'
        "<figcaption>image</figcaption></figure>"
    ]
    for method in content.methods:
        name = html.escape(METHOD_NAMES.get(method, method))
        panel = word["maps"][method]
        figures.append(
            f'<figure><div class="cx-frame cx-bg-{index}"><img class="cx-map" '
            f'data-method="{method}" data-name="{name}" src="{panel["src"]}" '
            f"alt=\"{name} map of '{html.escape(word['word'])}'\"></div>"
            f'<figcaption>{name}<br><span class="cx-scale">{html.escape(panel["scale"])}'
            "</span></figcaption></figure>"
        )
    return (
        '<div class="cx-image">'
        f'<p class="cx-title">{html.escape(item.title)}</p>'
        f'<div class="cx-words">{"".join(chips)}</div>'
        f'<div class="cx-panels">{"".join(figures)}</div>'
        '<p class="cx-note">Explained word: <b class="cx-current">'
        f"{html.escape(word['word'])}</b>. {html.escape(normalisation_note(content))}</p>"
        "</div>"
    )


def explorer_html(content: ExplorerContent, selected: Sequence[int] | None = None) -> HTML:
    """The explorer as one self-contained HTML block (chapters 7 and 10).

    Per image: the caption's words as buttons (with <start> before them), the image and one
    heat map per method for the selected word, and a caption line stating the normalisation.
    Clicking a word shows its maps and colours the preceding words by their LRP relevance.
    Every map is an inline PNG data URI; ids are unique per explorer, so several explorers
    can share a page. selected: the word shown first per image (default: the first word).
    """
    chosen = _check_content(content, selected)
    data = [_word_data(item, content) for item in content.images]
    payload = json.dumps(data, separators=(",", ":"))
    embedded = payload.replace("</", "<\\/")  # a "</script>" inside would end the block
    digest = hashlib.sha1(payload.encode("utf-8")).hexdigest()[:10]
    element = f"cx-{digest}-{next(_COUNTER)}"
    backgrounds = "".join(
        f"#{element} .cx-bg-{i} {{background-image: url({image_png(item.image, grey=True)})}}\n"
        for i, item in enumerate(content.images)
    )
    blocks = "".join(
        _image_block(i, item, words, t, content)
        for i, (item, words, t) in enumerate(zip(content.images, data, chosen, strict=True))
    )
    text = (
        f"<style>{_STYLE.format(id=element)}{backgrounds}</style>"
        f'<div class="caption-explorer" id="{element}">'
        f'<p class="cx-title">{html.escape(content.captioner)}: click a word of a caption to '
        "see its explanations</p>"
        f"{blocks}</div>"
        f'<script type="application/json" id="{element}-data">'
        f"{embedded}</script>"
        f"<script>{_SCRIPT % {'id': element}}</script>"
    )
    return HTML(text)


# --- live kernels ----------------------------------------------------------------------------


def live_kernel() -> bool:
    """True in a kernel a person drives: JupyterLab / Notebook (their server sets
    JPY_SESSION_NAME), VS Code or Colab. False in a book build (nbclient) and plain Python."""
    if "google.colab" in sys.modules:
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    return bool(os.environ.get("JPY_SESSION_NAME")) or "__vsc_ipynb_file__" in shell.user_ns


def live_explorer(content: ExplorerContent, image: int = 0, live: bool | None = None) -> Any:
    """The ipywidgets word selector of `viz.relevance.explorer` (LRP maps and preceding
    words) for one image of `content`, or None unless in a live kernel (`live_kernel()`; pass
    `live` to decide), so that a built book holds no widget output (chapter 7)."""
    _check_content(content, None)
    if not 0 <= image < len(content.images):
        raise ValueError(f"image = {image} is out of range for {len(content.images)} images")
    item = content.images[image]
    if "lrp" not in content.methods:
        raise ValueError("live_explorer shows LRP maps: content.methods has no 'lrp'")
    if not (live_kernel() if live is None else live):
        return None
    pixels = np.ascontiguousarray(item.image.transpose(2, 0, 1))  # (3, H, W) in [0, 1]
    return explorer(pixels, list(item.words), item.maps["lrp"], item.word_relevance)
