"""Explaining only what a study reads: selected words, or word relevance alone (chapters 9, 10).

A study of object words needs the pixel maps of a few words per caption, not of all of
them; a word-ablation study needs every word's word relevance but no pixel map. The
expensive part of an explanation is the CNN backward, once per explained word, so these
schedules run the decoder's stage for every step and the CNN's only for what is read.
`captionlib.explain.api.explain_words` and `explain_word_relevance` validate a request and
call them; the tests hold their numbers equal to `explain` at the selected words.

Two schedules explain selected words:

- `batch_schedule` (chapter 10's diagnosis; `lrp_selected`, `gradients_selected`): one
  decoder backward for every step of the captions as given, the CNN's backward only for the
  selected words;
- `trimmed_schedule` (chapter 9's study; `lrp_trimmed`, `gradients_trimmed`): LRP's decoder
  stage on each caption without its padding (captions of equal length together) and the
  CNN's stage for the selected words; the gradient methods explain every word of each
  caption's prefix up to its last selected word (captions with equal prefixes together, the
  plain methods sharing one backward and the guided ones another).

`every_word_relevance` gives every word's word relevance from the decoder alone, each
caption without its padding (chapter 9's word ablation).

Both schedules give `explain`'s numbers up to rounding; each is kept as its chapter
computed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from captionlib.explain.cnn import explain_cnn, hooked_forward, propagate
from captionlib.explain.gradients import (
    GRADIENT_METHODS,
    explain_gradient_family,
    gradcam_maps,
    gradient_word_relevance,
    guided_relus,
)
from captionlib.explain.lrp import (
    Explanation,
    decoder_relevance,
    explained_logits,
    explaining,
    word_seeds,
)
from captionlib.models.base import Captioner
from captionlib.models.encoder import to_grid

LRP_METHODS = {"lrp": "constant", "attnlrp": "attnlrp"}  # method → attention rule
SELECTED_GRADIENT_METHODS = ("gradcam", "guided_gradcam", "gradient_x_input")
WORD_RELEVANCE_METHODS = ("lrp", "attnlrp", "gradient", "gradient_x_input")


@dataclass
class WordExplanations:
    """One method's explanations of W selected words (row, step) of B captions.

    heatmaps: (W, H, W') the words' heatmaps (`Explanation.heatmap` at the words);
    locations: (W, N) one score per grid location; word_relevance: (W, K) the relevance of
    each input word, or None (attention); pixels: (W, 3, H, W') the signed relevance per
    colour channel, or None where the method has none (Grad-CAM, attention).
    """

    heatmaps: Tensor
    locations: Tensor
    word_relevance: Tensor | None = None
    pixels: Tensor | None = None

    @classmethod
    def gathered(cls, explanation: Explanation, rows: Tensor, steps: Tensor) -> WordExplanations:
        """The words (rows, steps) (W,) of an explanation of every word (chapter 10)."""
        if explanation.heatmap is None:
            raise ValueError(f"explanation {explanation.method!r} has no heatmap (give images)")
        relevance = explanation.word_relevance
        return cls(
            heatmaps=explanation.heatmap[rows, steps],
            locations=explanation.locations[rows, steps],
            word_relevance=None if relevance is None else relevance[rows, steps],
            pixels=None if explanation.pixels is None else explanation.pixels[rows, steps],
        )


def word_slots(rows: Tensor) -> Tensor:
    """rows (W,) → slots (W,): each word's place among its caption's selected words."""
    slots = torch.zeros_like(rows)
    seen: dict[int, int] = {}
    for index, row in enumerate(rows.tolist()):
        slots[index] = seen.get(row, 0)
        seen[row] = int(slots[index]) + 1
    return slots


def _scatter(values: Tensor, rows: Tensor, steps: Tensor, slots: Tensor, batch: int) -> Tensor:
    """values (B, K, ...) at the selected (row, step) → (B, S, ...) at (row, slot), zeros
    elsewhere: each image's selected words side by side, S = its most selected words."""
    out = values.new_zeros(batch, int(slots.max()) + 1, *values.shape[2:])
    out[rows, slots] = values[rows, steps]
    return out


# --- the batch schedule (chapter 10) -------------------------------------------------------------


def lrp_selected(
    model: Captioner,
    cnn: nn.Module,
    images: Tensor,
    ids: Tensor,
    selection: tuple[Tensor, Tensor, Tensor],
    attention: str,
) -> WordExplanations:
    """LRP (`explain_lrp` defaults) of the selected words (rows, steps, slots) only: stage 1
    for every step (one decoder backward), stage 2 (the CNN) only for the selected steps
    (chapter 10)."""
    rows, steps, slots = selection
    with explaining(model, cnn), hooked_forward(cnn, images) as (pixels, feature_map):
        decoder = decoder_relevance(model, to_grid(feature_map), ids, attention=attention)
        batch = decoder.features.shape[0]
        grid_maps = decoder.features.transpose(2, 3).unflatten(3, feature_map.shape[2:])
        chosen = _scatter(grid_maps, rows, steps, slots, batch)  # (B, S, C, h, w)
        relevance = propagate(pixels, feature_map, chosen)  # (B, S, 3, H, W)
    selected = relevance[rows, slots]  # (W, 3, H, W')
    return WordExplanations(
        heatmaps=selected.sum(1),
        locations=decoder.features.sum(3)[rows, steps],
        word_relevance=decoder.words[rows, steps],
        pixels=selected,
    )


def gradients_selected(
    model: Captioner,
    cnn: nn.Module,
    images: Tensor,
    ids: Tensor,
    selection: tuple[Tensor, Tensor, Tensor],
    methods: Sequence[str],
) -> dict[str, WordExplanations]:
    """Grad-CAM, guided Grad-CAM and gradient × input (`explain_gradients` defaults: true
    gradients, nearest upsampling) of the selected words (rows, steps, slots) only: ∂y/∂F
    and ∂y/∂E(w) for every step (one decoder backward), the CNN's (guided) backward only
    for the selected steps (chapter 10)."""
    rows, steps, slots = selection
    image_size = (images.shape[2], images.shape[3])
    with explaining(model, cnn), torch.enable_grad():
        pixels = images.detach().requires_grad_()
        embeddings = model.embedding(ids[:, :-1]).detach().requires_grad_()  # (B, K, E)
        feature_map = cnn(pixels)  # (B, C, h, w)
        logits = model(to_grid(feature_map), ids, embeddings=embeddings).logits
        explained = explained_logits(logits, ids)  # (B, K)
        grad_map, grad_words = torch.autograd.grad(
            explained,
            (feature_map, embeddings),
            word_seeds(explained),
            is_grads_batched=True,
            retain_graph=True,
        )  # (K, B, C, h, w), (K, B, K, E)
        grad_map, grad_words = grad_map.transpose(0, 1), grad_words.transpose(0, 1)
        chosen = _scatter(grad_map, rows, steps, slots, images.shape[0]).transpose(0, 1)
        pixel_grads = {}
        if "gradient_x_input" in methods:
            (plain,) = torch.autograd.grad(feature_map, pixels, chosen, is_grads_batched=True)
            pixel_grads["plain"] = plain.transpose(0, 1)[rows, slots]  # (W, 3, H, W')
        if "guided_gradcam" in methods:
            with guided_relus(cnn):
                guided_map = cnn(pixels)
            (guided,) = torch.autograd.grad(guided_map, pixels, chosen, is_grads_batched=True)
            pixel_grads["guided"] = guided.transpose(0, 1)[rows, slots]
    selected_map = grad_map[rows, steps]  # (W, C, h, w)
    own_map = feature_map.detach()[rows]  # (W, C, h, w)
    words = grad_words[rows, steps]  # (W, K, E)
    cam = gradcam_maps(own_map, selected_map.unsqueeze(1)).squeeze(1).clamp(min=0)  # (W, h, w)
    upsampled = functional.interpolate(cam.unsqueeze(1), size=image_size, mode="nearest")
    out = {}
    for method in methods:
        if method == "gradcam":
            out[method] = WordExplanations(upsampled.squeeze(1), cam.flatten(1), words.sum(-1))
        elif method == "guided_gradcam":
            guided_pixels = pixel_grads["guided"] * upsampled  # (W, 3, H, W')
            out[method] = WordExplanations(
                guided_pixels.sum(1), cam.flatten(1), words.sum(-1), guided_pixels
            )
        elif method == "gradient_x_input":
            input_pixels = pixel_grads["plain"] * pixels.detach()[rows]  # (W, 3, H, W')
            locations = (selected_map * own_map).sum(1).flatten(1)
            relevance = (words * embeddings.detach()[rows]).sum(-1)
            out[method] = WordExplanations(input_pixels.sum(1), locations, relevance, input_pixels)
        else:
            raise ValueError(f"no selected-word path for gradient method {method!r}")
    return out


# --- the trimmed schedule (chapter 9) ------------------------------------------------------------


def caption_lengths(caption_ids: Tensor, pad_id: int) -> list[int]:
    """Tokens per caption, <start> included and padding left out: caption_ids (B, T) → B ints."""
    return ((caption_ids[:, 1:] != pad_id).sum(1) + 1).tolist()


def length_groups(lengths: Sequence[int]) -> dict[int, list[int]]:
    """length → the captions (indices) of that length, shortest first."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(length, []).append(index)
    return dict(sorted(groups.items()))


def lrp_trimmed(
    model: Captioner,
    cnn: nn.Module,
    images: Tensor,
    grid: Tensor,
    grid_size: tuple[int, int],
    caption_ids: Tensor,
    lengths: Sequence[int],
    selection: Sequence[tuple[int, int]],
    attention: str,
) -> WordExplanations:
    """LRP of one rule ("constant" or "attnlrp") as `explain_lrp` computes it, at lower cost:
    stage 1 once per caption (trimmed to its length, captions of equal length together),
    stage 2 only for the selected words (b, t) (chapter 9). grid: the images' features
    (B, N, C) on a grid of grid_size; lengths: `caption_lengths`."""
    batch, steps = caption_ids.shape[0], caption_ids.shape[1] - 1
    words = grid.new_zeros(batch, steps, steps)
    channels = grid.shape[2]
    feature_relevance = grid.new_zeros(len(selection), channels, *grid_size)  # (W, C, h, w)
    locations = grid.new_zeros(len(selection), grid.shape[1])  # (W, N)
    rows_of: dict[int, list[tuple[int, int]]] = {}
    for row, (b, t) in enumerate(selection):
        rows_of.setdefault(b, []).append((row, t))
    with explaining(model):
        for length, captions in length_groups(lengths).items():
            relevance = decoder_relevance(
                model, grid[captions], caption_ids[captions, :length], attention=attention
            )
            words[captions, : length - 1, : length - 1] = relevance.words.detach()
            for g, b in enumerate(captions):
                for row, t in rows_of.get(b, []):
                    located = relevance.features[g, t].detach()  # (N, C)
                    feature_relevance[row] = located.transpose(0, 1).reshape(channels, *grid_size)
                    locations[row] = located.sum(1)
    explained = sorted(rows_of)
    most = max(len(rows) for rows in rows_of.values())
    seeds = grid.new_zeros(len(explained), most, channels, *grid_size)  # (B', K', C, h, w)
    for i, b in enumerate(explained):
        for k, (row, _) in enumerate(rows_of[b]):
            seeds[i, k] = feature_relevance[row]
    pixels = explain_cnn(cnn, images[explained], seeds)  # (B', K', 3, H, W)
    object_pixels = images.new_zeros(len(selection), *images.shape[1:])  # (W, 3, H, W')
    for i, b in enumerate(explained):
        for k, (row, _) in enumerate(rows_of[b]):
            object_pixels[row] = pixels[i, k].detach()
    rows = torch.tensor([b for b, _ in selection], dtype=torch.long)
    chosen = torch.tensor([t for _, t in selection], dtype=torch.long)
    return WordExplanations(
        heatmaps=object_pixels.sum(1),
        locations=locations,
        word_relevance=words[rows, chosen],
        pixels=object_pixels,
    )


def gradients_trimmed(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    caption_ids: Tensor,
    selection: Sequence[tuple[int, int]],
    methods: Sequence[str],
) -> dict[str, WordExplanations]:
    """Gradient methods of the selected words (b, t) from `explain_gradient_family`, run on
    each caption's prefix up to its last selected word (captions with equal prefix lengths
    together) (chapter 9)."""
    last: dict[int, int] = {}
    for b, t in selection:
        last[b] = max(last.get(b, 0), t)
    row_of = {(b, t): row for row, (b, t) in enumerate(selection)}
    size = images.shape[2:]
    steps = caption_ids.shape[1] - 1
    heat = {m: images.new_zeros(len(selection), *size) for m in methods}  # (W, H, W')
    pixels_shape = (len(selection), *images.shape[1:])  # (W, 3, H, W')
    pixels: dict[str, Tensor] = {}  # method → (W, 3, H, W'), for methods with pixels
    locations: dict[str, Tensor] = {}  # method → (W, N)
    words = {m: images.new_zeros(len(selection), steps) for m in methods}
    captions_of = length_groups([last.get(b, -1) for b in range(caption_ids.shape[0])])
    for step, captions in captions_of.items():
        if step < 0:
            continue  # captions without selected words
        ids = caption_ids[captions, : step + 2]  # <start> … the last selected word
        explained = explain_gradient_family(
            model, ids, images=images[captions], encoder=encoder, methods=methods
        )
        for method, result in explained.items():
            if method not in locations:
                locations[method] = images.new_zeros(len(selection), result.locations.shape[2])
                if result.pixels is not None:
                    pixels[method] = images.new_zeros(pixels_shape)
            for g, b in enumerate(captions):
                for t in range(step + 1):
                    if (b, t) in row_of:
                        row = row_of[b, t]
                        heat[method][row] = result.heatmap[g, t].detach()  # type: ignore[index]
                        if method in pixels:
                            pixels[method][row] = result.pixels[g, t].detach()  # type: ignore[index]
                        locations[method][row] = result.locations[g, t].detach()
                        words[method][row, : step + 1] = result.word_relevance[g, t].detach()  # type: ignore[index]
    return {m: WordExplanations(heat[m], locations[m], words[m], pixels.get(m)) for m in methods}


# --- the two schedules ---------------------------------------------------------------------------


def batch_schedule(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    caption_ids: Tensor,
    rows: Tensor,
    steps: Tensor,
    methods: Sequence[str],
) -> dict[str, WordExplanations]:
    """The batch schedule of the words rows, steps (W,) for the methods that have one (LRP,
    AttnLRP and SELECTED_GRADIENT_METHODS); other methods are left out (chapter 10)."""
    cnn = getattr(encoder, "features", encoder)
    selection = (rows, steps, word_slots(rows))
    found: dict[str, WordExplanations] = {}
    gradient = [method for method in methods if method in SELECTED_GRADIENT_METHODS]
    if gradient:
        found |= gradients_selected(model, cnn, images, caption_ids, selection, gradient)
    for method in methods:
        if method in LRP_METHODS:
            found[method] = lrp_selected(
                model, cnn, images, caption_ids, selection, LRP_METHODS[method]
            )
    return found


def trimmed_schedule(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    caption_ids: Tensor,
    rows: Tensor,
    steps: Tensor,
    methods: Sequence[str],
    pad_id: int,
) -> dict[str, WordExplanations]:
    """The trimmed schedule of the words rows, steps (W,) for the methods that have one (LRP,
    AttnLRP and every gradient method); other methods are left out (chapter 9)."""
    cnn = getattr(encoder, "features", encoder)
    selection = list(zip(rows.tolist(), steps.tolist(), strict=True))
    found: dict[str, WordExplanations] = {}
    gradient = [method for method in methods if method in GRADIENT_METHODS]
    with explaining(model, encoder):
        if any(method in LRP_METHODS for method in methods):
            with torch.no_grad():
                feature_map = cnn(images)  # (B, C, h, w)
            grid_size = (feature_map.shape[2], feature_map.shape[3])
            grid, lengths = to_grid(feature_map), caption_lengths(caption_ids, pad_id)
            for method in methods:
                if method in LRP_METHODS:
                    found[method] = lrp_trimmed(
                        model,
                        cnn,
                        images,
                        grid,
                        grid_size,
                        caption_ids,
                        lengths,
                        selection,
                        LRP_METHODS[method],
                    )
        if gradient:
            found |= gradients_trimmed(model, encoder, images, caption_ids, selection, gradient)
    return found


# --- word relevance alone (chapter 9) ------------------------------------------------------------


def every_word_relevance(
    model: Captioner, features: Tensor, caption_ids: Tensor, methods: Sequence[str], pad_id: int
) -> dict[str, Tensor]:
    """Word relevance of every word of B captions from the decoder alone, each caption
    without its padding (captions of equal length together) (chapter 9).

    features: (B, N, C); caption_ids: (B, T); methods: from WORD_RELEVANCE_METHODS. Returns
    method → (B, T−1, T−1) as `Explanation.word_relevance`, 0 beyond a caption's length.
    """
    batch, steps = caption_ids.shape[0], caption_ids.shape[1] - 1
    groups = length_groups(caption_lengths(caption_ids, pad_id))
    out: dict[str, Tensor] = {}
    for method in methods:
        if method not in LRP_METHODS:
            continue
        words = features.new_zeros(batch, steps, steps)
        with explaining(model):
            for length, captions in groups.items():
                relevance = decoder_relevance(
                    model,
                    features[captions],
                    caption_ids[captions, :length],
                    attention=LRP_METHODS[method],
                )
                words[captions, : length - 1, : length - 1] = relevance.words.detach()
        out[method] = words
    gradient = [m for m in methods if m not in LRP_METHODS]
    if gradient:
        found = {m: features.new_zeros(batch, steps, steps) for m in gradient}
        for length, captions in groups.items():
            trimmed = gradient_word_relevance(
                model, features[captions], caption_ids[captions, :length]
            )
            for method in gradient:
                found[method][captions, : length - 1, : length - 1] = trimmed[method]
        out |= found
    return {method: out[method] for method in methods}
