"""Can an explanation tell a hallucinated object word from a grounded one? (chapter 10)

For every object word of the generated captions (book/method.md §7):

1. label it grounded or hallucinated (`label_object_words`: present = in the image's ground
   truth; also recorded: named in a reference caption, the paper's label);
2. summarise its explanation with a few numbers (`map_statistics`: mean, positive mean, max
   and quantiles of the pixel map; `word_share`: share of relevance from preceding words;
   `context_share`: share of positive pixel relevance outside every object; and, from the
   model itself, the word's probability and captioner A's visual share 1 − β);
3. score each number by ROC-AUC for separating grounded from hallucinated words
   (`auc_table`; grounded is the positive class, so AUC < 0.5 means hallucinated words get
   the larger values).

`diagnose` does 1–2 for a whole split in chunks. Two things keep it cheap: every caption is
cut after its last object word (the explanation of word t depends only on words ≤ t), and
`selected_statistics` explains the object words only (`captionlib.explain.api.explain_words`:
the decoder's backward for every step, cheap, but only the object words' relevance or
gradients through the CNN, the expensive part); the tests hold the numbers equal to
`captionlib.explain.api.explain` on every step.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from captionlib.data.coco import CocoSplit
from captionlib.data.vocab import Vocabulary
from captionlib.evaluate.hallucination import SynonymTable
from captionlib.explain.api import Explanation, WordExplanations, explain_words
from captionlib.explain.selected import SELECTED_GRADIENT_METHODS
from captionlib.explain.summaries import mass_inside, word_share
from captionlib.models.base import Captioner
from captionlib.models.encoder import to_grid
from captionlib.progress import progress_bar

QUANTILES = {"q50": 0.5, "q90": 0.9, "q99": 0.99}
MAP_STATISTICS = ("mean", "positive_mean", "max", *QUANTILES)
MODEL_METHOD = "model"  # statistics read from the model itself, not from an explanation


@dataclass(frozen=True)
class ObjectWord:
    """One object word of a generated caption.

    image_id; step: index of the word in the caption's tokens (= the explanation's step; the
    last word of a phrase such as "hot dog"); word, category; present: the category is in
    the image's ground truth (instances ∪ references); in_references: a reference caption
    names it (the paper's true positive).
    """

    image_id: int
    step: int
    word: str
    category: str
    present: bool
    in_references: bool

    @property
    def hallucinated(self) -> bool:
        """Named but absent from the image's ground truth."""
        return not self.present


def label_object_words(
    captions: Mapping[int, str],
    truth: Mapping[int, Collection[str]],
    named: Mapping[int, Collection[str]],
    synonyms: SynonymTable,
) -> list[ObjectWord]:
    """Every object mention of the captions, labelled (image id order, then position).

    truth: image id → categories present (e.g. `hallucination.ground_truth`); named: image
    id → categories named in its references (`hallucination.reference_objects`).
    """
    words = []
    for image_id, caption in captions.items():
        for field_name, table in (("truth", truth), ("named", named)):
            if image_id not in table:
                raise KeyError(f"{field_name} has no entry for image id {image_id!r}")
        for mention in synonyms.mentions(caption):
            words.append(
                ObjectWord(
                    image_id=image_id,
                    step=mention.position + mention.length - 1,
                    word=mention.word,
                    category=mention.category,
                    present=mention.category in truth[image_id],
                    in_references=mention.category in named[image_id],
                )
            )
    return words


# --- statistics ---------------------------------------------------------------------------------


def map_statistics(maps: Tensor) -> dict[str, Tensor]:
    """Statistics of relevance maps (W, H, W') → name → (W,) float64: mean, positive_mean
    (mean of max(R, 0)), max and the QUANTILES of the map's values."""
    if maps.dim() < 2:
        raise ValueError(f"maps must be (..., H, W), got shape {tuple(maps.shape)}")
    flat = maps.detach().flatten(-2).to(torch.float64)  # (W, M)
    levels = torch.tensor(list(QUANTILES.values()), dtype=torch.float64)
    quantiles = torch.quantile(flat, levels, dim=-1)  # (Q, W)
    return {
        "mean": flat.mean(-1),
        "positive_mean": flat.clamp(min=0).mean(-1),
        "max": flat.amax(-1),
        **{name: quantiles[index] for index, name in enumerate(QUANTILES)},
    }


def context_share(maps: Tensor, objects: Tensor) -> Tensor:
    """Share of each map's positive relevance outside every object: maps (W, H, W'), objects
    (W, H, W') bool (the union of the image's instance masks) → (W,); NaN without positive
    relevance. "boat" hallucinated on water scores near 1: its evidence is the water."""
    if maps.shape != objects.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and objects {tuple(objects.shape)} differ")
    outside = (~objects.bool()).flatten(-2)
    return mass_inside(maps.detach().flatten(-2), outside)


@torch.no_grad()
def model_statistics(model: Captioner, features: Tensor, caption_ids: Tensor) -> dict[str, Tensor]:
    """The model's own numbers per word, teacher-forced: "probability" of the word and, for
    captioner A, "1-beta" (the visual share, 1 − sentinel gate), each (B, K)."""
    was_training = model.training
    model.eval()
    out = model(features, caption_ids)
    model.train(was_training)
    words = caption_ids[:, 1:]
    probabilities = out.logits.log_softmax(-1).gather(2, words.unsqueeze(2)).squeeze(2).exp()
    stats = {"probability": probabilities.double()}
    if out.beta is not None:
        stats["1-beta"] = (1.0 - out.beta).double()
    return stats


def word_statistics(words: WordExplanations, objects: Tensor | None = None) -> dict[str, Tensor]:
    """Statistics of one method's explanations of W selected words → name → (W,).

    The pixel-map statistics of the heatmaps; "word_share" when the method has word
    relevance; "context_share" with objects (W, H, W') (the union of each word's image's
    masks).
    """
    stats = map_statistics(words.heatmaps)
    if words.word_relevance is not None:
        stats["word_share"] = word_share(
            words.locations.unsqueeze(1), words.word_relevance.unsqueeze(1)
        ).squeeze(1)  # (W,)
    if objects is not None:
        stats["context_share"] = context_share(words.heatmaps, objects)
    return stats


def explanation_statistics(
    explanation: Explanation, rows: Tensor, steps: Tensor, objects: Tensor | None = None
) -> dict[str, Tensor]:
    """`word_statistics` of the words rows, steps (W,) of an explanation of every word.

    It needs `heatmap`; "word_share" needs `word_relevance`; "context_share" needs objects
    (W, H, W') (the union of each word's image's masks).
    """
    return word_statistics(WordExplanations.gathered(explanation, rows, steps), objects)


# --- the whole split --------------------------------------------------------------------------


def object_masks(split: CocoSplit, image_id: int) -> Tensor:
    """Union of every instance mask of an image, (H, W) bool."""
    if split.instances is None:
        raise ValueError(f"split {split.captions_file} was loaded without an instances file")
    split.index_of(image_id)
    info = split.instances.imgs[image_id]
    mask = torch.zeros(info["height"], info["width"], dtype=torch.bool)
    for annotation in split.instances.imgToAnns[image_id]:
        mask |= torch.from_numpy(split.instances.annToMask(annotation).astype(bool))
    return mask


def selected_statistics(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    ids: Tensor,
    rows: Tensor,
    steps: Tensor,
    methods: Sequence[str],
    objects: Tensor | None = None,
) -> dict[str, dict[str, Tensor]]:
    """`word_statistics` of the words (rows, steps) (W,) of B captions ids (B, T) for every
    method, plus MODEL_METHOD's probability (and 1-beta).

    The explanations come from `explain_words`: LRP, AttnLRP and the methods in
    SELECTED_GRADIENT_METHODS push only the selected words' relevance (or gradient) through
    the CNN, the expensive part; their numbers equal those of `explain` (the tests hold them
    equal). Other methods run `explain` on every step.
    """
    cnn = getattr(encoder, "features", encoder)
    with torch.no_grad():
        grid = to_grid(cnn(images))  # (B, N, C)
    found = {
        MODEL_METHOD: {
            name: values[rows, steps] for name, values in model_statistics(model, grid, ids).items()
        }
    }
    explained = explain_words(model, encoder, images, ids, rows, steps, methods)
    # the columns in the order earlier builds stored them: the selected gradient methods first
    for method in sorted(explained, key=lambda name: name not in SELECTED_GRADIENT_METHODS):
        found[method] = word_statistics(explained[method], objects)
    return found


def diagnose(
    model: Captioner,
    encoder: nn.Module,
    images: Tensor,
    token_ids: Sequence[Sequence[int]],
    words: Sequence[ObjectWord],
    image_index: Mapping[int, int],
    methods: Sequence[str],
    masks: Mapping[int, Tensor] | None = None,
    chunk_size: int = 50,
    progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Statistics of every object word's explanation, per method: method → statistic →
    (len(words),) float64 (plus MODEL_METHOD → probability, 1-beta).

    images: (num_images, 3, H, W) normalised; token_ids[i]: the decoded word ids of image
    index i (no <start>/<end>); image_index: image id → index into images and token_ids;
    masks: image id → object mask (H, W) for "context_share". Captions are cut after their
    last object word and explained chunk_size images at a time.
    """
    if not words:
        raise ValueError("no object words to diagnose")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    by_image: dict[int, list[int]] = {}
    for position, word in enumerate(words):
        by_image.setdefault(word.image_id, []).append(position)
    order = sorted(by_image, key=lambda i: max(words[p].step for p in by_image[i]))
    columns: dict[str, dict[str, list[tuple[int, float]]]] = {}
    chunks = [order[start : start + chunk_size] for start in range(0, len(order), chunk_size)]
    for chunk in progress_bar(chunks, desc="diagnosis", progress=progress):
        rows, steps, targets = [], [], []
        for row, image_id in enumerate(chunk):
            for position in by_image[image_id]:
                rows.append(row)
                steps.append(words[position].step)
                targets.append(position)
        length = max(steps) + 1
        ids = torch.full((len(chunk), length + 1), Vocabulary.PAD_ID, dtype=torch.long)
        ids[:, 0] = Vocabulary.START_ID
        for row, image_id in enumerate(chunk):
            caption = list(token_ids[image_index[image_id]])[:length]
            ids[row, 1 : len(caption) + 1] = torch.tensor(caption, dtype=torch.long)
        batch = images[[image_index[i] for i in chunk]]
        objects = None
        if masks is not None:
            objects = torch.stack([masks[chunk[r]] for r in rows])  # (W, H, W')
        found = selected_statistics(
            model, encoder, batch, ids, torch.tensor(rows), torch.tensor(steps), methods, objects
        )
        for method, stats in found.items():
            for name, values in stats.items():
                column = columns.setdefault(method, {}).setdefault(name, [])
                column.extend(zip(targets, values.tolist(), strict=True))
    result: dict[str, dict[str, np.ndarray]] = {}
    for method, stats in columns.items():
        result[method] = {}
        for name, pairs in stats.items():
            values = np.full(len(words), np.nan)
            for position, value in pairs:
                values[position] = value
            result[method][name] = values
    return result


# --- ROC-AUC ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AucResult:
    """ROC-AUC of one statistic for separating grounded (positive) from hallucinated words,
    with the numbers of words used (words with a NaN statistic are left out)."""

    auc: float
    grounded: int
    hallucinated: int

    @property
    def standard_error(self) -> float:
        """Hanley & McNeil's (1982) standard error of the AUC for these class sizes."""
        a, n1, n2 = self.auc, self.grounded, self.hallucinated
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        variance = a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)
        return float(np.sqrt(max(variance, 0.0) / (n1 * n2)))


def grounding_auc(values: Sequence[float] | np.ndarray, grounded: Sequence[bool]) -> AucResult:
    """ROC-AUC of `values` (higher = more grounded) against the labels `grounded`."""
    scores = np.asarray(values, dtype=np.float64)
    labels = np.asarray(grounded, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"values {scores.shape} and grounded {labels.shape} must be equal 1-D")
    keep = ~np.isnan(scores)
    scores, labels = scores[keep], labels[keep]
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"ROC-AUC needs grounded and hallucinated words; got {positives} grounded and "
            f"{negatives} hallucinated"
        )
    return AucResult(float(roc_auc_score(labels, scores)), positives, negatives)


def auc_table(
    statistics: Mapping[str, Mapping[str, np.ndarray]], grounded: Sequence[bool]
) -> dict[str, dict[str, AucResult]]:
    """method → statistic → AucResult, for every column of `diagnose`'s output."""
    return {
        method: {name: grounding_auc(values, grounded) for name, values in stats.items()}
        for method, stats in statistics.items()
    }


def best_statistic(table: Mapping[str, AucResult]) -> tuple[str, float]:
    """The statistic whose AUC is furthest from chance, and its AUC (one method's row)."""
    if not table:
        raise ValueError("empty AUC table")
    name = max(table, key=lambda key: abs(table[key].auc - 0.5))
    return name, table[name].auc


def case_candidates(
    words: Sequence[ObjectWord],
    values: np.ndarray,
    category: str | None = None,
    hallucinated: bool = True,
) -> list[int]:
    """Indices of the words to show as case studies: hallucinated (or grounded) words of
    `category` (any when None) with a defined value, largest value first."""
    if len(words) != len(values):
        raise ValueError(f"got {len(words)} words but {len(values)} values")
    chosen = [
        index
        for index, word in enumerate(words)
        if word.hallucinated == hallucinated
        and (category is None or word.category == category)
        and not np.isnan(values[index])
    ]
    return sorted(chosen, key=lambda index: -values[index])
