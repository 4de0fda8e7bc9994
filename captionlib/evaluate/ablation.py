"""Does removing what an explanation points at change the prediction? Ablation (chapter 9,
book/method.md §7).

Image ablation: for a word, rank the image's patches by the explanation's summed score,
set the top `count` patches to the dataset mean and ask again: is the word still in the
re-generated caption, and how much did its teacher-forced probability drop? The paper used
8×8 patches and the top 20 on 224×224 images; on the book's 112×112 images the same share
of the image is 4×4 patches, top 20 (`PATCH`, `COUNT`). Baselines: a random ranking and the
attention map.

Word ablation: for every word at caption position ≥ 6 (position 0 is <start>), delete the
3 preceding words (never <start>) with the largest relevance, teacher-force the shortened
caption and record the drop in the word's probability; baseline: 3 random preceding words.

Both take the model as a function (`probability_fn`), so a hand-built scorer with known
evidence can check them; `captioner_probabilities` makes that function for a captioner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from captionlib.models.base import Captioner
from captionlib.models.decoding import beam_search, greedy
from captionlib.models.encoder import to_grid

PATCH = 4  # 8 px on 224 → 4 px on 112
COUNT = 20
FIRST_POSITION = 6
WORDS_REMOVED = 3
MAX_LENGTH = 20

ProbabilityFn = Callable[[Tensor, Tensor], Tensor]  # (images, caption_ids) → (N, T−1)


def patch_scores(maps: Tensor, patch: int = PATCH) -> Tensor:
    """Summed score of every patch×patch patch: maps (B, H, W) → (B, P) with P the number
    of patches in row-major order (H and W must be multiples of `patch`)."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, H, W), got {tuple(maps.shape)}")
    if patch < 1 or maps.shape[1] % patch or maps.shape[2] % patch:
        raise ValueError(f"patch {patch} must divide the map size {tuple(maps.shape[1:])}")
    summed = functional.avg_pool2d(maps.unsqueeze(1), patch) * patch * patch  # (B, 1, h, w)
    return summed.flatten(1)


def patch_ranking(maps: Tensor, patch: int = PATCH) -> Tensor:
    """Patch indices (B, P) by decreasing summed score (stable for ties)."""
    return torch.sort(patch_scores(maps, patch), dim=1, descending=True, stable=True).indices


def random_ranking(batch: int, patches: int, generator: torch.Generator) -> Tensor:
    """A random patch order per image, (B, P)."""
    return torch.stack([torch.randperm(patches, generator=generator) for _ in range(batch)])


def ablate_patches(
    images: Tensor,
    ranking: Tensor,
    patch: int = PATCH,
    count: int = COUNT,
    fill: Tensor | None = None,
) -> Tensor:
    """Set the first `count` patches of each image's ranking to `fill`.

    images: (B, 3, H, W); ranking: (B, P) patch indices (row-major); fill: (3,) the dataset
    mean in the images' space (default 0, the mean of mean/std-normalised images).
    Returns new images; the input is unchanged.
    """
    batch, _, height, width = images.shape
    columns = width // patch
    if ranking.shape[0] != batch or ranking.shape[1] != (height // patch) * columns:
        raise ValueError(
            f"ranking must be (B, P) for {patch}-px patches, got {tuple(ranking.shape)}"
        )
    if not 0 <= count <= ranking.shape[1]:
        raise ValueError(f"count must be in [0, {ranking.shape[1]}], got {count}")
    value = images.new_zeros(3) if fill is None else fill.to(images)
    chosen = torch.zeros(ranking.shape, dtype=torch.bool, device=images.device)
    chosen.scatter_(1, ranking[:, :count].to(images.device), True)  # (B, P)
    grid = chosen.view(batch, 1, height // patch, columns)
    mask = grid.repeat_interleave(patch, 2).repeat_interleave(patch, 3)  # (B, 1, h·p, w·p)
    mask = functional.pad(mask, (0, width - mask.shape[3], 0, height - mask.shape[2]))
    return torch.where(mask, value.view(1, 3, 1, 1), images)


def feature_probabilities(model: Captioner) -> ProbabilityFn:
    """(grid features (N, L, C), caption_ids (N, T)) → (N, T−1) teacher-forced probability of
    every next word (eval mode, no gradients): `captioner_probabilities` without the CNN."""

    def probabilities(features: Tensor, caption_ids: Tensor) -> Tensor:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = model(features, caption_ids).logits  # (N, T−1, V)
        finally:
            model.train(was_training)
        return logits.softmax(-1).gather(2, caption_ids[:, 1:].unsqueeze(2)).squeeze(2)

    return probabilities


def captioner_probabilities(model: Captioner, encoder: nn.Module) -> ProbabilityFn:
    """(images (N, 3, H, W), caption_ids (N, T)) → (N, T−1) teacher-forced probability of
    every next word, under the captioner in eval mode (no gradients); the captioner's mode
    is restored afterwards."""
    cnn = getattr(encoder, "features", encoder)

    from_features = feature_probabilities(model)

    def probabilities(images: Tensor, caption_ids: Tensor) -> Tensor:
        with torch.no_grad():
            return from_features(to_grid(cnn(images)), caption_ids)

    return probabilities


def captioner_captions(
    model: Captioner, encoder: nn.Module, start_id: int, end_id: int, beam_size: int = 3
) -> Callable[[Tensor], list[list[int]]]:
    """images (N, 3, H, W) → each image's new caption as token ids: beam search, or batched
    greedy decoding for beam_size=1 (much faster on a CPU)."""
    cnn = getattr(encoder, "features", encoder)

    def captions(images: Tensor) -> list[list[int]]:
        with torch.no_grad():
            grid = to_grid(cnn(images))
        if beam_size == 1:
            decoded = greedy(model, grid, start_id, end_id, MAX_LENGTH)
        else:
            decoded = beam_search(model, grid, start_id, end_id, beam_size, MAX_LENGTH)
        return [list(caption.token_ids) for caption in decoded]

    return captions


@dataclass
class ImageAblation:
    """One ablated word per row (W rows): probability before and after, the drop, and (when
    captions were re-generated) whether the word vanished from the new caption."""

    ranking: str
    before: Tensor
    after: Tensor
    disappeared: Tensor | None

    @property
    def drop(self) -> Tensor:
        """Probability drop per word (W,)."""
        return self.before - self.after


def image_ablation(
    probability_fn: ProbabilityFn,
    images: Tensor,
    caption_ids: Tensor,
    steps: Tensor,
    rankings: dict[str, Tensor],
    patch: int = PATCH,
    count: int = COUNT,
    fill: Tensor | None = None,
    caption_fn: Callable[[Tensor], list[list[int]]] | None = None,
) -> dict[str, ImageAblation]:
    """Ablate the top patches of each ranking for one word per row.

    images: (W, 3, H, W') one image per ablated word (repeat an image for several words);
    caption_ids: (W, T); steps: (W,) the step t of the ablated word (it is caption_ids[:,
    t+1]); rankings: name → (W, P) patch orders (`patch_ranking` of an explanation's
    heatmaps, `random_ranking`, …). caption_fn: when given, images are re-captioned and
    `disappeared` records whether the word's id is missing from the new caption.
    """
    rows = torch.arange(len(steps))
    words = caption_ids[rows, steps + 1]  # (W,)
    before = probability_fn(images, caption_ids)[rows, steps]
    results = {}
    for name, ranking in rankings.items():
        ablated = ablate_patches(images, ranking, patch, count, fill)
        after = probability_fn(ablated, caption_ids)[rows, steps]
        disappeared = None
        if caption_fn is not None:
            new_captions = caption_fn(ablated)
            disappeared = torch.tensor(
                [
                    int(word) not in caption
                    for word, caption in zip(words, new_captions, strict=True)
                ]
            )
        results[name] = ImageAblation(name, before, after, disappeared)
    return results


def remove_words(caption_ids: Tensor, positions: Sequence[int]) -> Tensor:
    """Delete the tokens at `positions` from one caption (T,) → (T − len(positions),)."""
    if 0 in positions:
        raise ValueError("<start> (position 0) is never removed")
    keep = torch.ones(caption_ids.shape[0], dtype=torch.bool)
    keep[list(positions)] = False
    return caption_ids[keep]


@dataclass
class WordAblation:
    """Per ablated word (W rows): the caption, its position, probability before/after."""

    ranking: str
    image_index: Tensor
    position: Tensor
    before: Tensor
    after: Tensor

    @property
    def drop(self) -> Tensor:
        """Probability drop per word (W,)."""
        return self.before - self.after


def word_ablation(
    probability_fn: ProbabilityFn,
    images: Tensor,
    caption_ids: Tensor,
    word_relevance: Tensor,
    mask: Tensor,
    generator: torch.Generator | Sequence[torch.Generator],
    first_position: int = FIRST_POSITION,
    removed: int = WORDS_REMOVED,
    baseline: bool = True,
) -> dict[str, WordAblation]:
    """Delete the `removed` most relevant preceding words of every word at position ≥
    `first_position` (and, as baseline, as many random ones) and teacher-force again.

    images: (B, 3, H, W); caption_ids: (B, T), <start> at 0; word_relevance: (B, T−1, T−1)
    from an Explanation ([b, t, i]: input word i for the word at position t + 1); mask:
    (B, T−1) True for real (non-padding) words; generator: one for the random baseline, or
    one per caption (B), so that a caption's random picks do not depend on the batch it is
    in. Returns "relevance" and (with baseline=True) "random" results.
    """
    if not isinstance(generator, torch.Generator) and len(generator) != caption_ids.shape[0]:
        raise ValueError(f"{len(generator)} generators for {caption_ids.shape[0]} captions")
    chosen: dict[str, list[Tensor]] = {"relevance": [], "random": []}
    rows: list[tuple[int, int]] = []  # (caption b, position of the word)
    for b in range(caption_ids.shape[0]):
        draw = generator if isinstance(generator, torch.Generator) else generator[b]
        for position in range(max(first_position, removed + 1), caption_ids.shape[1]):
            if not bool(mask[b, position - 1]):
                continue
            scores = word_relevance[b, position - 1, 1:position]  # inputs 1 … position−1
            order = torch.argsort(scores, descending=True, stable=True)
            chosen["relevance"].append(order[:removed] + 1)
            chosen["random"].append(torch.randperm(position - 1, generator=draw)[:removed] + 1)
            rows.append((b, position))
    table = torch.tensor(rows, dtype=torch.long).reshape(-1, 2)
    image_index, position = table[:, 0], table[:, 1]
    before = probability_fn(images, caption_ids)[image_index, position - 1]  # (W,)
    results = {}
    for name, removals in chosen.items():
        if name == "random" and not baseline:
            continue
        after = torch.zeros(len(rows), dtype=before.dtype)
        if rows:
            shorter = torch.stack(
                [
                    remove_words(caption_ids[b], positions.tolist())
                    for (b, _), positions in zip(rows, removals, strict=True)
                ]
            )  # (W, T − removed)
            probabilities = probability_fn(images[image_index], shorter)  # (W, T − removed − 1)
            after = probabilities[torch.arange(len(rows)), position - 1 - removed]
        results[name] = WordAblation(name, image_index, position, before, after)
    return results


def object_word_steps(
    words: Tensor, mask: Tensor, is_object: Callable[[int], bool]
) -> tuple[Tensor, Tensor]:
    """Where the object words are: words (B, K) explained ids and mask (B, K) → (rows,
    steps), each (W,), for `image_ablation` (images[rows], caption_ids[rows], steps)."""
    pairs = [
        (b, t)
        for b in range(words.shape[0])
        for t in range(words.shape[1])
        if bool(mask[b, t]) and is_object(int(words[b, t]))
    ]
    table = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return table[:, 0], table[:, 1]
