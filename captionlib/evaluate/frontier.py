"""The caution frontier (chapter 11): how far does saying less go?

Any knob that makes a captioner name fewer objects lowers CHAIR and recall together. A
decoding-time knob, `captionlib.models.decoding.Caution` (the logits of the object words
lowered by λ), traces that trade-off for a trained model without any training:
`caution_sweep` decodes and scores a split for each λ. The *caution frontier* of a set of
sweep points is its Pareto front in the (recall, CHAIR) plane (no other point has at least
the recall and at most the CHAIR), joined by straight lines. `compare_to_frontier` places a
method's per-seed points against the per-seed frontiers: "above" the frontier means less
CHAIR than caution reaches at the same recall, by more than the seed spread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import Tensor

from captionlib.data.vocab import Vocabulary
from captionlib.features import MemmapFeatures
from captionlib.generate import caption_features
from captionlib.models.base import Captioner
from captionlib.models.decoding import Caution

CAUTION_PENALTIES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # λ of the book's sweep

Verdict = Literal["above", "on", "below"]


def object_word_ids(
    vocabulary: Vocabulary, category_of: Callable[[str], str | None]
) -> tuple[int, ...]:
    """The ids of the vocabulary's words that name an object category on their own (the
    words the caution knob lowers); `category_of` as `SynonymTable.category_of`."""
    return tuple(
        index
        for index in range(len(vocabulary))
        if category_of(vocabulary.id_to_word(index)) is not None
    )


def caution_sweep(
    model: Captioner,
    features: Tensor | MemmapFeatures,
    image_ids: Sequence[int],
    vocabulary: Vocabulary,
    word_ids: Sequence[int],
    score: Callable[[dict[int, str]], Mapping[str, float]],
    penalties: Sequence[float] = CAUTION_PENALTIES,
    beam_size: int = 3,
    max_length: int = 16,
) -> list[dict[str, float]]:
    """Decode the split for every λ in `penalties` (object words `word_ids` lowered by λ)
    and score its captions with `score` (image id → caption → metrics); one dict of
    metrics per λ, with the λ under "penalty". λ = 0 is plain beam search."""
    if not penalties:
        raise ValueError("penalties must hold at least one λ")
    if not word_ids:
        raise ValueError("word_ids is empty: no object word to lower")
    points = []
    for penalty in penalties:
        captions = caption_features(
            model,
            features,
            image_ids,
            vocabulary,
            beam_size,
            max_length,
            caution=Caution(tuple(word_ids), float(penalty)),
        )
        points.append({"penalty": float(penalty), **score(captions)})
    return points


@dataclass(frozen=True)
class Frontier:
    """A Pareto front in the (recall, CHAIR) plane, recall increasing (and CHAIR with it)."""

    recall: np.ndarray  # (P,)
    chair: np.ndarray  # (P,)

    def chair_at(self, recall: float) -> float:
        """The front's CHAIR at `recall`, linear between its points; beyond its ends, the
        end point's CHAIR (no caution point reaches a higher recall; see `covers`)."""
        return float(np.interp(recall, self.recall, self.chair))

    def covers(self, recall: float) -> bool:
        """Whether `recall` lies within the front's recall range."""
        return bool(self.recall[0] <= recall <= self.recall[-1])


def pareto_frontier(recall: Sequence[float], chair: Sequence[float]) -> Frontier:
    """The points of (recall, CHAIR) that no other point dominates (recall ≥ and CHAIR ≤,
    one of them strictly), sorted by recall; duplicates count once."""
    points = sorted(set(zip(map(float, recall), map(float, chair), strict=True)))
    if not points:
        raise ValueError("pareto_frontier needs at least one point")
    if any(not np.isfinite(value) for point in points for value in point):
        raise ValueError("pareto_frontier got a NaN or infinite recall or CHAIR")
    front: list[tuple[float, float]] = []
    for point_recall, point_chair in sorted(points, key=lambda p: (-p[0], p[1])):
        if not front or point_chair < front[-1][1]:
            front.append((point_recall, point_chair))  # best CHAIR among higher recalls
    front.reverse()
    return Frontier(np.array([p[0] for p in front]), np.array([p[1] for p in front]))


@dataclass(frozen=True)
class FrontierComparison:
    """A method's points against the caution frontiers, seed by seed (mean, std over
    seeds, n − 1): its recall and CHAIR, the frontier's CHAIR at the same recall, and the
    gap (frontier minus method: positive = less CHAIR than caution reaches)."""

    recall: tuple[float, float]
    chair: tuple[float, float]
    frontier_chair: tuple[float, float]
    gap: tuple[float, float]
    verdict: Verdict
    covered: bool  # every seed's recall lies within its frontier's range


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def compare_to_frontier(
    points: Sequence[tuple[float, float]], frontiers: Sequence[Frontier]
) -> FrontierComparison:
    """Place one (recall, CHAIR) point per seed against that seed's frontier.

    The verdict is "above" when the frontier's mean CHAIR at the points' recalls exceeds
    the points' mean CHAIR by more than the sum of the two standard deviations over seeds,
    "below" when it falls short by more than that, "on" otherwise (the rule of chapter 11's
    other comparisons)."""
    if len(points) != len(frontiers) or not points:
        raise ValueError(f"got {len(points)} points for {len(frontiers)} frontiers")
    on_front = [
        front.chair_at(recall) for (recall, _), front in zip(points, frontiers, strict=True)
    ]
    chair = _mean_std([point[1] for point in points])
    frontier_chair = _mean_std(on_front)
    gap = frontier_chair[0] - chair[0]
    margin = chair[1] + frontier_chair[1]
    verdict: Verdict = "on"
    if abs(gap) > margin and gap != 0:
        verdict = "above" if gap > 0 else "below"
    return FrontierComparison(
        recall=_mean_std([point[0] for point in points]),
        chair=chair,
        frontier_chair=frontier_chair,
        gap=_mean_std([front - point[1] for front, point in zip(on_front, points, strict=True)]),
        verdict=verdict,
        covered=all(front.covers(point[0]) for point, front in zip(points, frontiers, strict=True)),
    )


def seed_frontiers(
    sweeps: Mapping[str, Sequence[Sequence[Mapping[str, float]]]],
    metric: str = "CHAIRs",
) -> list[Frontier]:
    """Per seed, the caution frontier of all of that seed's sweep points.

    sweeps: checkpoint ("before", "control") → one `caution_sweep` per seed. The i-th
    frontier is the Pareto front (recall against `metric`) of the i-th sweep of every
    checkpoint together: the least `metric` that caution reaches at each recall from any
    checkpoint trained without explanations."""
    counts = {len(runs) for runs in sweeps.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"every checkpoint needs the same number (>= 1) of seeds, got {counts}")
    frontiers = []
    for seed in range(counts.pop()):
        points = [point for runs in sweeps.values() for point in runs[seed]]
        frontiers.append(
            pareto_frontier(
                [point["recall"] for point in points], [point[metric] for point in points]
            )
        )
    return frontiers
