"""Object mentions in generated captions: the first hallucination measure (chapters 3–4).

A caption *names an absent object* when it mentions a category that has no instance in the
image. This is the simple per-caption measure the captioner chapters report on the
in-distribution and the shifted test split; chapter 10 adds CHAIR and frequent-word precision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from captionlib.data.coco import CocoSplit, objects_in_image


@dataclass
class ObjectMentionReport:
    """Counts over a set of captions.

    captions: number of captions scored; with_absent: captions naming ≥ 1 absent object;
    mentions / absent_mentions: object categories named / named but absent;
    absent_by_category: how often each category was named while absent;
    absent_words: image id → the absent categories its caption names.
    """

    captions: int
    with_absent: int
    mentions: int
    absent_mentions: int
    absent_by_category: Counter[str] = field(default_factory=Counter)
    absent_words: dict[int, set[str]] = field(default_factory=dict)

    @property
    def absent_caption_share(self) -> float:
        """Share of captions that name at least one absent object."""
        return self.with_absent / self.captions if self.captions else 0.0

    @property
    def absent_mention_share(self) -> float:
        """Share of object mentions that are absent from the image."""
        return self.absent_mentions / self.mentions if self.mentions else 0.0


def absent_object_mentions(
    predictions: Mapping[int, str],
    split: CocoSplit,
    object_words: Callable[[str], set[str]],
) -> ObjectMentionReport:
    """Score captions (image id → text) against the split's instance labels.

    object_words maps a caption to the categories it names (for ShapeWorld:
    `captionlib.data.shapeworld.object_words`).
    """
    if not predictions:
        raise ValueError("no predictions to score")
    report = ObjectMentionReport(captions=0, with_absent=0, mentions=0, absent_mentions=0)
    for image_id, caption in predictions.items():
        present = objects_in_image(split, image_id)
        named = object_words(caption)
        absent = named - present
        report.captions += 1
        report.mentions += len(named)
        report.absent_mentions += len(absent)
        if absent:
            report.with_absent += 1
            report.absent_words[image_id] = absent
            report.absent_by_category.update(absent)
    return report
