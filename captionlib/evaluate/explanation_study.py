"""Every explanation method measured on a whole split: localisation and ablation (chapter 9).

::

    result = run_study(model, encoder, images, image_ids, annotations, vocabulary, category)

captions every image with the model's own beam search, explains its words with every method
(attention, LRP, AttnLRP for captioner B, and the gradient family of chapter 8) and measures
(book/method.md §7):

- localisation of every object word naming a category present in the image
  (`captionlib.evaluate.localization`): correctness per τ, pointing game, energy in the mask,
  one value per (image, category) pair and method;
- image ablation of every object word (`captionlib.evaluate.ablation`): its probability
  before and after setting the `count` highest-ranked patches to the dataset mean, per
  method and for a random ranking, and whether it vanished from the re-generated caption;
- word ablation of every word at position ≥ 6: the drop in its probability after deleting
  the 3 preceding words with the largest relevance, per method with word relevance, and
  after deleting 3 random ones.

The result is a plain JSON-serialisable dict that keeps every per-item value, so a chapter
can show means and spread; `localization_summaries`, `image_drops`, `vanished`,
`word_drops` read it back. Images run in chunks (memory stays bounded) and, to keep the
cost down, only the object words are explained down to the pixels
(`captionlib.explain.api.explain_words` with trim=True: the gradient methods on each
caption's prefix up to its last object word, the decoder being causal) and word relevance
comes from the decoder stage alone (`captionlib.explain.api.explain_word_relevance`).
Random choices use one generator per image seeded from (seed, image position), so a chunked
run equals an unchunked one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from captionlib.data.vocab import Vocabulary
from captionlib.evaluate import ablation, localization
from captionlib.evaluate.localization import LocalizationSummary, ObjectAnnotation
from captionlib.explain.api import (
    GRADIENT_METHODS,
    captions_to_ids,
    encode,
    explain_word_relevance,
    explain_words,
)
from captionlib.models.base import Captioner
from captionlib.models.decoding import beam_search, greedy
from captionlib.models.encoder import to_grid
from captionlib.models.multihead import MultiHeadCaptioner
from captionlib.progress import progress_bar

STUDY_VERSION = 1
WORD_METHODS = ("lrp", "attnlrp", "gradient", "gradient_x_input")
WordCategory = Callable[[str], str | None]


@dataclass(frozen=True)
class StudyConfig:
    """How the study captions, ablates and draws (chapter 9).

    beam_size / max_length: the model's own captions; patch / count: image ablation (the
    `count` highest-ranked patch×patch patches set to the fill); recaption_beam: the decoder
    that re-captions ablated images (1: greedy, batched and much faster on a CPU; whether the
    word was in the clean image's caption under the same decoder is recorded too);
    seed: the random baselines; chunk_size: images per chunk (does not change the result).
    """

    beam_size: int = 3
    max_length: int = 16
    patch: int = ablation.PATCH
    count: int = ablation.COUNT
    recaption_beam: int = 1
    seed: int = 0
    chunk_size: int = 50

    def key(self) -> dict[str, Any]:
        """The settings that change the result (everything but chunk_size), with the version."""
        settings = asdict(self)
        del settings["chunk_size"]
        return {**settings, "version": STUDY_VERSION}


def study_methods(model: Captioner) -> tuple[str, ...]:
    """The pixel methods measured for `model`: AttnLRP only for the multi-head captioner."""
    lrp = ("lrp", "attnlrp") if isinstance(model, MultiHeadCaptioner) else ("lrp",)
    return ("attention", *lrp, *GRADIENT_METHODS)


def _generator(seed: int, index: int, purpose: int) -> torch.Generator:
    """One generator per (image position, purpose): 0 patch rankings, 1 word deletions."""
    return torch.Generator().manual_seed(seed * 1_000_003 + 2 * index + purpose)


def _object_words(
    words: Tensor, mask: Tensor, vocabulary: Vocabulary, word_category: WordCategory
) -> list[tuple[int, int, str, str]]:
    """(caption b, step t, word, category) of every word naming one category."""
    found = []
    for b in range(words.shape[0]):
        for t in range(words.shape[1]):
            if bool(mask[b, t]):
                word = vocabulary.id_to_word(int(words[b, t]))
                category = word_category(word)
                if category is not None:
                    found.append((b, t, word, category))
    return found


def _localization(
    image_ids: Sequence[int],
    objects: Sequence[tuple[int, int, str, str]],
    maps: Mapping[str, Tensor],
    annotations: Sequence[Mapping[str, ObjectAnnotation]],
    word_category: WordCategory,
) -> dict[str, Any]:
    """Per (image, category) pair and method: correctness per τ, pointing, energy."""
    pairs: list[dict[str, Any]] = []
    values: dict[str, dict[str, list[Any]]] = {
        m: {"correctness": [], "pointing": [], "energy": []} for m in maps
    }
    for b, image_id in enumerate(image_ids):
        rows = [row for row, item in enumerate(objects) if item[0] == b]
        if not rows:
            continue
        words = [objects[row][2] for row in rows]
        records_by_method = {
            method: localization.score_caption(
                int(image_id), scores[rows].cpu(), words, annotations[b], word_category
            )
            for method, scores in maps.items()
        }
        for method, records in records_by_method.items():
            for record in records:
                values[method]["correctness"].append([float(v) for v in record.correctness])
                values[method]["pointing"].append(bool(record.pointing))
                values[method]["energy"].append(float(record.energy))
        first = next(iter(records_by_method.values()))
        pairs += [{"image_id": int(image_id), "category": r.category} for r in first]
    return {"thresholds": list(localization.THRESHOLDS), "pairs": pairs, "methods": values}


def _decode(model: Captioner, grid: Tensor, beam: int, max_length: int) -> list[list[int]]:
    start, end = Vocabulary.START_ID, Vocabulary.END_ID
    if beam == 1:
        decoded = greedy(model, grid, start, end, max_length)
    else:
        decoded = beam_search(model, grid, start, end, beam, max_length)
    return [list(caption.token_ids) for caption in decoded]


def _image_ablation(
    model: Captioner,
    cnn: nn.Module,
    images: Tensor,
    caption_ids: Tensor,
    grid: Tensor,
    objects: Sequence[tuple[int, int, str, str]],
    heat: Mapping[str, Tensor],
    positions: Sequence[int],
    config: StudyConfig,
) -> dict[str, Any]:
    """Before/after probability of every object word per ranking, and whether it vanished."""
    rows = torch.tensor([b for b, _, _, _ in objects], dtype=torch.long)
    steps = torch.tensor([t for _, t, _, _ in objects], dtype=torch.long)
    words = caption_ids[rows, steps + 1].tolist()
    probability = ablation.feature_probabilities(model)
    prefixes = caption_ids[rows, : int(steps.max()) + 2]  # up to the last object word
    before = probability(grid[rows], prefixes)[torch.arange(len(rows)), steps]
    clean = _decode(model, grid[rows], config.recaption_beam, config.max_length)
    rankings = {m: ablation.patch_ranking(h, config.patch) for m, h in heat.items()}
    patches = next(iter(rankings.values())).shape[1]
    draws: dict[int, torch.Generator] = {}
    random_rows = []
    for b in rows.tolist():
        draw = draws.setdefault(b, _generator(config.seed, positions[b], 0))
        random_rows.append(torch.randperm(patches, generator=draw))
    rankings["random"] = torch.stack(random_rows)
    methods: dict[str, dict[str, list[Any]]] = {}
    for method, ranking in rankings.items():
        ablated = ablation.ablate_patches(images[rows], ranking, config.patch, config.count)
        with torch.no_grad():
            ablated_grid = to_grid(cnn(ablated))
        after = probability(ablated_grid, prefixes)[torch.arange(len(rows)), steps]
        captions = _decode(model, ablated_grid, config.recaption_beam, config.max_length)
        methods[method] = {
            "after": after.tolist(),
            "disappeared": [w not in c for w, c in zip(words, captions, strict=True)],
        }
    return {
        "words": [
            {"image_id": None, "step": t, "word": word, "category": category}
            for _, t, word, category in objects
        ],
        "before": before.tolist(),
        "in_clean_caption": [w in c for w, c in zip(words, clean, strict=True)],
        "methods": methods,
    }


def _word_ablation(
    model: Captioner,
    grid: Tensor,
    caption_ids: Tensor,
    mask: Tensor,
    relevance: Mapping[str, Tensor],
    positions: Sequence[int],
    config: StudyConfig,
) -> dict[str, Any]:
    """Drop of every word at position ≥ 6 after deleting its top-3 / random-3 preceding words;
    relevance: method → word relevance (B, T−1, T−1)."""
    probability = ablation.feature_probabilities(model)
    outcome: dict[str, Any] = {"methods": {}}
    for index, (method, scores) in enumerate(relevance.items()):
        draws = [_generator(config.seed, p, 1) for p in positions]
        result = ablation.word_ablation(
            probability, grid, caption_ids, scores, mask, draws, baseline=index == 0
        )
        outcome["methods"][method] = {"after": result["relevance"].after.tolist()}
        if index == 0:  # the random deletions do not depend on the method
            outcome["random"] = {"after": result["random"].after.tolist()}
            rows = zip(result["relevance"].image_index, result["relevance"].position, strict=True)
            outcome["rows"] = [{"caption": int(b), "position": int(p)} for b, p in rows]
            outcome["before"] = result["relevance"].before.tolist()
    return outcome


def _study_chunk(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    image_ids: Sequence[int],
    annotations: Sequence[Mapping[str, ObjectAnnotation]],
    positions: Sequence[int],
    vocabulary: Vocabulary,
    word_category: WordCategory,
    config: StudyConfig,
) -> dict[str, Any]:
    """The whole protocol on one chunk of normalised images (B, 3, H, W); `positions` are the
    images' indices in the full run (they seed the random baselines)."""
    cnn = getattr(encoder, "features", encoder)
    grid = encode(model, encoder, images)  # (B, N, C)
    decoded = beam_search(
        model, grid, Vocabulary.START_ID, Vocabulary.END_ID, config.beam_size, config.max_length
    )
    caption_ids = captions_to_ids(
        decoded, Vocabulary.START_ID, Vocabulary.END_ID, Vocabulary.PAD_ID, config.max_length
    )
    words, mask = caption_ids[:, 1:], caption_ids[:, 1:] != Vocabulary.PAD_ID
    methods = study_methods(model)
    objects = _object_words(words, mask, vocabulary, word_category)
    rows, steps = [b for b, _, _, _ in objects], [t for _, t, _, _ in objects]
    word_relevance = explain_word_relevance(
        model, grid, caption_ids, [m for m in WORD_METHODS if m in methods]
    )
    result: dict[str, Any] = {
        "image_ids": [int(i) for i in image_ids],
        "captions": [vocabulary.decode(row.tolist()) for row in caption_ids],
        "image_ablation": None,
    }
    if objects:
        explained = explain_words(
            model,
            encoder,
            images,
            caption_ids,
            torch.tensor(rows),
            torch.tensor(steps),
            methods,
            trim=True,
        )
        heat = {m: found.heatmaps for m, found in explained.items()}  # (W, H, W') each
        scored = {
            m: localization.explanation_maps(found.pixels, found.heatmaps)
            for m, found in explained.items()
        }
        result["localization"] = _localization(
            image_ids, objects, scored, annotations, word_category
        )
        patches = _image_ablation(
            model, cnn, images, caption_ids, grid, objects, heat, positions, config
        )
        for item, b in zip(patches["words"], rows, strict=True):
            item["image_id"] = int(image_ids[b])
        result["image_ablation"] = patches
    else:
        result["localization"] = _localization(image_ids, [], {}, annotations, word_category)
    words_result = _word_ablation(model, grid, caption_ids, mask, word_relevance, positions, config)
    for row in words_result.get("rows", []):
        row["image_id"] = int(image_ids[row.pop("caption")])
    result["word_ablation"] = words_result
    return result


def _merge(parts: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Concatenate the chunks' lists (same keys, same order)."""
    word_methods = [m for m in WORD_METHODS if m in methods]
    merged: dict[str, Any] = {
        "image_ids": [i for p in parts for i in p["image_ids"]],
        "captions": [c for p in parts for c in p["captions"]],
        "localization": {
            "thresholds": list(localization.THRESHOLDS),
            "pairs": [x for p in parts for x in p["localization"]["pairs"]],
            "methods": {
                m: {
                    key: [
                        x
                        for p in parts
                        for x in p["localization"]["methods"].get(m, {}).get(key, [])
                    ]
                    for key in ("correctness", "pointing", "energy")
                }
                for m in methods
            },
        },
    }
    ablated = [p["image_ablation"] for p in parts if p["image_ablation"] is not None]
    merged["image_ablation"] = {
        "words": [x for p in ablated for x in p["words"]],
        "before": [x for p in ablated for x in p["before"]],
        "in_clean_caption": [x for p in ablated for x in p["in_clean_caption"]],
        "methods": {
            m: {
                key: [x for p in ablated for x in p["methods"][m][key]]
                for key in ("after", "disappeared")
            }
            for m in [*methods, "random"]
        },
    }  # fmt: skip
    deleted = [p["word_ablation"] for p in parts if "rows" in p["word_ablation"]]
    merged["word_ablation"] = {
        "rows": [x for p in deleted for x in p["rows"]],
        "before": [x for p in deleted for x in p["before"]],
        "methods": {
            m: {"after": [x for p in deleted for x in p["methods"][m]["after"]]}
            for m in word_methods
        },
        "random": {"after": [x for p in deleted for x in p["random"]["after"]]},
    }
    return merged


def run_study(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    image_ids: Sequence[int],
    annotations: Sequence[Mapping[str, ObjectAnnotation]],
    vocabulary: Vocabulary,
    word_category: WordCategory,
    config: StudyConfig | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Localisation and ablation of every method on B images, chunk by chunk (chapter 9).

    images: (B, 3, H, W), normalised as the encoder expects, or raw (e.g. uint8) with
    `prepare` normalising a chunk; image_ids: the B images' ids; annotations: per image,
    category → its boxes and mask (`localization.image_objects`); word_category: word → the
    category it names, or None. Returns a JSON-serialisable dict: "config", "methods",
    "image_ids", "captions", and per-item values under "localization" (pairs; per method
    correctness (P, len(thresholds)), pointing (P,), energy (P,)), "image_ablation" (one
    entry per object word: before, in_clean_caption; per ranking incl. "random": after,
    disappeared) and "word_ablation" (rows, before; per method and "random": after).
    """
    config = config or StudyConfig()
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if not len(image_ids) == len(annotations) == images.shape[0]:
        raise ValueError(
            f"{images.shape[0]} images, {len(image_ids)} image ids and "
            f"{len(annotations)} annotations must match"
        )
    if config.chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {config.chunk_size}")
    parameter = next(model.parameters())
    methods = study_methods(model)
    parts = []
    bar = progress_bar(total=images.shape[0], desc="explanation study", progress=progress)
    for start in range(0, images.shape[0], config.chunk_size):
        indices = list(range(start, min(start + config.chunk_size, images.shape[0])))
        chunk = images[indices]
        chunk = prepare(chunk) if prepare is not None else chunk
        chunk = chunk.to(device=parameter.device, dtype=parameter.dtype)
        parts.append(
            _study_chunk(
                model,
                encoder,
                chunk,
                [image_ids[i] for i in indices],
                [annotations[i] for i in indices],
                indices,
                vocabulary,
                word_category,
                config,
            )
        )
        bar.update(len(indices))
    bar.close()
    return {"config": config.key(), "methods": list(methods), **_merge(parts, methods)}


# --- reading a result back ------------------------------------------------------------------------


def localization_summaries(result: Mapping[str, Any]) -> dict[str, LocalizationSummary]:
    """method → `LocalizationSummary` (means and standard deviations over the pairs)."""
    located = result["localization"]
    summaries = {}
    for method, values in located["methods"].items():
        records = [
            localization.LocalizationRecord(
                image_id=pair["image_id"],
                category=pair["category"],
                correctness=np.asarray(correct),
                pointing=pointing,
                energy=energy,
            )
            for pair, correct, pointing, energy in zip(
                located["pairs"],
                values["correctness"],
                values["pointing"],
                values["energy"],
                strict=True,
            )
        ]
        summaries[method] = localization.summarize(records, located["thresholds"])
    return summaries


def localization_values(result: Mapping[str, Any], measure: str) -> dict[str, np.ndarray]:
    """method → per-pair values (P,) of "pointing", "energy" or "correctness@τ" (e.g.
    "correctness@0.5")."""
    located = result["localization"]
    values = {}
    for method, scores in located["methods"].items():
        if measure in ("pointing", "energy"):
            values[method] = np.asarray(scores[measure], dtype=np.float64)
        elif measure.startswith("correctness@"):
            tau = float(measure.split("@", 1)[1])
            thresholds = [round(t, 6) for t in located["thresholds"]]
            if round(tau, 6) not in thresholds:
                raise ValueError(f"τ={tau} is not one of the thresholds {thresholds}")
            column = thresholds.index(round(tau, 6))
            values[method] = np.asarray(scores["correctness"], dtype=np.float64)[:, column]
        else:
            raise ValueError(f"unknown measure {measure!r}: pointing, energy or correctness@τ")
    return values


def image_drops(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """ranking → probability drop per object word (W,), "random" included."""
    patches = result["image_ablation"]
    before = np.asarray(patches["before"], dtype=np.float64)
    return {
        m: before - np.asarray(v["after"], dtype=np.float64) for m, v in patches["methods"].items()
    }


def vanished(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """ranking → 0/1 per object word that the re-generated caption of the clean image
    contains: 1 where the ablated image's caption no longer does."""
    patches = result["image_ablation"]
    present = np.asarray(patches["in_clean_caption"], dtype=bool)
    return {
        m: np.asarray(v["disappeared"], dtype=np.float64)[present]
        for m, v in patches["methods"].items()
    }


def word_drops(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """method → probability drop per word at position ≥ 6 after deleting its top-3 preceding
    words; "random": after deleting 3 random ones."""
    deleted = result["word_ablation"]
    before = np.asarray(deleted["before"], dtype=np.float64)
    drops = {
        m: before - np.asarray(v["after"], dtype=np.float64) for m, v in deleted["methods"].items()
    }
    drops["random"] = before - np.asarray(deleted["random"]["after"], dtype=np.float64)
    return drops
