"""Object hallucination metrics: CHAIR and frequent-object-word precision (chapter 10).

Two measures, both computed from the object words of generated captions:

- **Frequent-object-word precision / recall / F1** (the paper's measure, book/method.md §7
  and §8): an object category named by the generated caption of an image is a *true
  positive* when any reference caption of that image names it, else a *false positive*
  (hallucinated). Recall is over the (image, category) pairs named in the references.
- **CHAIR** (Rohrbach et al., 2018): ground truth = instance labels ∪ categories named in the
  reference captions. CHAIRi = hallucinated object mentions / all object mentions, CHAIRs =
  captions with ≥ 1 hallucinated mention / all captions.

Words are mapped to categories through a `SynonymTable`: multi-word phrases ("hot dog",
"teddy bear") matched longest first, so "hot dog" is never also a "dog"; plurals generated
by simple English rules plus irregular forms ("people", "men", "geese"). Captions are split
with the vocabulary's `tokenize`, so a mention's `position` is the index of its first word in
the decoded caption (position t ↔ caption_ids[:, t + 1], after <start>).

::

    table = shapeworld_synonyms()
    scores = hallucination_scores(captions, split, table)  # precision, recall, F1, CHAIRi, CHAIRs
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from captionlib.data.coco import CocoSplit, objects_in_image
from captionlib.data.vocab import tokenize

COCO_SYNONYMS_FILE = Path(__file__).resolve().parent.parent / "data" / "coco_synonyms.json"

IRREGULAR_PLURALS: dict[str, tuple[str, ...]] = {
    "person": ("people", "persons"),
    "man": ("men",),
    "woman": ("women",),
    "child": ("children",),
    "gentleman": ("gentlemen",),
    "policeman": ("policemen",),
    "fireman": ("firemen",),
    "businessman": ("businessmen",),
    "mouse": ("mice",),
    "goose": ("geese",),
    "ox": ("oxen",),
    "foot": ("feet",),
    "tooth": ("teeth",),
    "knife": ("knives",),
    "calf": ("calves",),
    "leaf": ("leaves",),
    "fish": ("fish", "fishes"),
    "sheep": ("sheep",),
    "deer": ("deer",),
    "cattle": ("cattle",),
    "scissors": ("scissors",),
    "skis": ("skis",),
    "luggage": ("luggage",),
    "broccoli": ("broccoli",),
}
_VOWELS = frozenset("aeiou")


def plurals(word: str) -> tuple[str, ...]:
    """Plural forms of a singular noun: irregular table first, else -es / -ies / -s."""
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return (word + "es",)
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return (word[:-1] + "ies",)
    return (word + "s",)


class Mention(NamedTuple):
    """One object mention in a caption.

    word: the words as they appear (e.g. "hot dogs"); category: the category they name;
    position: index of the first word among the caption's tokens; length: number of tokens.
    """

    word: str
    category: str
    position: int
    length: int


class SynonymTable:
    """Category → the words and phrases that name it, with plurals (chapter 10).

    `synonyms` maps each category to its singular words or phrases; the category name itself
    is always included. Plurals of a phrase's last word are added. A phrase that would name
    two categories is an error.
    """

    def __init__(self, synonyms: Mapping[str, Iterable[str]], name: str = "custom") -> None:
        if not isinstance(synonyms, Mapping) or not synonyms:
            raise ValueError("synonyms must be a non-empty mapping category -> words")
        self.name = name
        self._phrases: dict[tuple[str, ...], str] = {}
        for category, words in synonyms.items():
            if not isinstance(category, str) or not tokenize(category):
                raise ValueError(f"synonyms: category must be a non-empty string, got {category!r}")
            if isinstance(words, str):
                raise ValueError(f"synonyms[{category!r}] must be a list of words, not a string")
            for phrase in (category, *words):
                tokens = tokenize(phrase) if isinstance(phrase, str) else []
                if not tokens:
                    raise ValueError(f"synonyms[{category!r}]: bad word or phrase {phrase!r}")
                for last in (tokens[-1], *plurals(tokens[-1])):
                    self._add((*tokens[:-1], last), category)
        self.categories: tuple[str, ...] = tuple(synonyms)
        self._longest = max(len(phrase) for phrase in self._phrases)

    def _add(self, phrase: tuple[str, ...], category: str) -> None:
        known = self._phrases.setdefault(phrase, category)
        if known != category:
            raise ValueError(
                f"synonyms: {' '.join(phrase)!r} names both {known!r} and {category!r}"
            )

    @classmethod
    def from_json(cls, path: str | Path) -> SynonymTable:
        """Load {"category": ["word", "phrase", ...], ...} from a JSON file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"synonym table {path} does not exist")
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"synonym table {path} is not valid JSON: {error}") from error
        if not isinstance(payload, dict):
            raise ValueError(f"synonym table {path} must hold a JSON object category -> words")
        return cls(payload, name=path.stem)

    def __len__(self) -> int:
        return len(self.categories)

    def __contains__(self, category: object) -> bool:
        return category in self.categories

    def category_of(self, phrase: str) -> str | None:
        """The category a word or phrase names ("motorbikes" → "motorcycle"), else None."""
        return self._phrases.get(tuple(tokenize(phrase)))

    def words(self, category: str) -> list[str]:
        """Every phrase (singular and plural) that names `category`."""
        if category not in self.categories:
            raise KeyError(f"category {category!r} is not in the synonym table {self.name!r}")
        return [" ".join(p) for p, c in self._phrases.items() if c == category]

    def mentions(self, caption: str) -> list[Mention]:
        """All object mentions of a caption, left to right, longest phrase first."""
        tokens = tokenize(caption)
        found: list[Mention] = []
        position = 0
        while position < len(tokens):
            for length in range(min(self._longest, len(tokens) - position), 0, -1):
                phrase = tuple(tokens[position : position + length])
                category = self._phrases.get(phrase)
                if category is not None:
                    found.append(Mention(" ".join(phrase), category, position, length))
                    position += length
                    break
            else:
                position += 1
        return found

    def categories_in(self, caption: str) -> set[str]:
        """The set of categories a caption names."""
        return {mention.category for mention in self.mentions(caption)}


def shapeworld_synonyms() -> SynonymTable:
    """The ShapeWorld categories with the caption grammar's nouns (data.shapeworld.SYNONYMS)."""
    from captionlib.data.shapeworld import SYNONYMS

    return SynonymTable(SYNONYMS, name="shapeworld")


def coco_synonyms(path: str | Path | None = None) -> SynonymTable:
    """The 80 COCO categories with their common synonyms (shipped as data/coco_synonyms.json;
    `path` reads another table in the same format).

    Ambiguous words are kept out where they often mean something else ("bag", "glass",
    "computer"); "orange" still counts as the fruit, as in other CHAIR tables.
    """
    return SynonymTable.from_json(COCO_SYNONYMS_FILE if path is None else path)


# --- inputs -----------------------------------------------------------------------------------


def _check_captions(captions: Mapping[int, str]) -> None:
    if not isinstance(captions, Mapping) or not captions:
        raise ValueError("captions must be a non-empty mapping image id -> caption")
    for image_id, caption in captions.items():
        if not isinstance(caption, str):
            raise TypeError(f"captions[{image_id!r}] must be a str, got {type(caption).__name__}")


def reference_objects(
    references: Mapping[int, Sequence[str]], synonyms: SynonymTable
) -> dict[int, frozenset[str]]:
    """image id → the categories named in any of its reference captions."""
    out = {}
    for image_id, texts in references.items():
        if isinstance(texts, str):
            raise TypeError(f"references[{image_id!r}] must be a list of captions, not a str")
        out[image_id] = frozenset(c for text in texts for c in synonyms.categories_in(text))
    return out


def split_references(split: CocoSplit) -> dict[int, list[str]]:
    """image id → reference captions, for every image of the split (possibly empty)."""
    return dict(zip(split.image_ids, split.captions, strict=True))


def ground_truth(split: CocoSplit, synonyms: SynonymTable) -> dict[int, frozenset[str]]:
    """CHAIR's ground truth per image: instance labels ∪ categories named in its references.

    Instance labels are used when the split has an instances file; every label must be a
    category of the synonym table.
    """
    named = reference_objects(split_references(split), synonyms)
    if split.instances is None:
        return named
    truth = {}
    for image_id in split.image_ids:
        labels = objects_in_image(split, image_id)
        unknown = sorted(labels - set(synonyms.categories))
        if unknown:
            raise ValueError(
                f"instance categories {unknown} of {split.instances_file} are not in the "
                f"synonym table {synonyms.name!r}"
            )
        truth[image_id] = named[image_id] | labels
    return truth


# --- CHAIR ------------------------------------------------------------------------------------


@dataclass
class CaptionChair:
    """CHAIR details of one caption: its mentions and which of them are hallucinated."""

    caption: str
    mentions: list[Mention]
    hallucinated: list[Mention]
    ground_truth: frozenset[str]


@dataclass
class ChairResult:
    """CHAIRi, CHAIRs and their counts over a set of captions, with per-caption details."""

    CHAIRi: float
    CHAIRs: float
    mentions: int
    hallucinated_mentions: int
    captions: int
    hallucinated_captions: int
    details: dict[int, CaptionChair] = field(default_factory=dict)


def chair(
    captions: Mapping[int, str],
    ground_truth: Mapping[int, Collection[str]],
    synonyms: SynonymTable,
    unique: bool = False,
) -> ChairResult:
    """CHAIR of generated captions (image id → text) against ground_truth (image id →
    categories present).

    CHAIRi = hallucinated mentions / mentions; CHAIRs = captions with ≥ 1 hallucinated
    mention / captions. Every mention counts, repeated ones too ("a dog and another dog" is
    two mentions), as in Rohrbach et al.'s reference implementation; unique=True counts
    each category once per caption instead. CHAIRi is 0 when no caption names an object.
    """
    _check_captions(captions)
    details = {}
    mentions = hallucinated_mentions = hallucinated_captions = 0
    for image_id, caption in captions.items():
        if image_id not in ground_truth:
            raise KeyError(f"ground_truth has no entry for image id {image_id!r}")
        truth = frozenset(ground_truth[image_id])
        found = synonyms.mentions(caption)
        if unique:
            first = {m.category: m for m in reversed(found)}
            found = sorted(first.values(), key=lambda m: m.position)
        wrong = [m for m in found if m.category not in truth]
        details[image_id] = CaptionChair(caption, found, wrong, truth)
        mentions += len(found)
        hallucinated_mentions += len(wrong)
        hallucinated_captions += bool(wrong)
    return ChairResult(
        CHAIRi=hallucinated_mentions / mentions if mentions else 0.0,
        CHAIRs=hallucinated_captions / len(captions),
        mentions=mentions,
        hallucinated_mentions=hallucinated_mentions,
        captions=len(captions),
        hallucinated_captions=hallucinated_captions,
        details=details,
    )


# --- frequent-object-word precision -------------------------------------------------------------


@dataclass
class WordPrecision:
    """Frequent-object-word precision, recall and F1 with their counts.

    per_image: image id → (true-positive categories, false-positive categories).
    """

    precision: float
    recall: float
    F1: float
    true_positives: int
    false_positives: int
    reference_pairs: int
    per_image: dict[int, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)


def frequent_word_precision(
    captions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    synonyms: SynonymTable,
    categories: Collection[str] | None = None,
) -> WordPrecision:
    """The paper's frequent-object-word precision, recall and F1 (book/method.md §7, §8).

    For each image, the set of categories its generated caption names (restricted to
    `categories`, default every category of the table: ShapeWorld's ten are all frequent;
    for COCO pass the frequent ones). A category is a true positive when any reference
    caption of the image names it, else a false positive. precision = TP / (TP + FP);
    recall = TP / the number of (image, category) pairs named in the references of the
    scored images; F1 = their harmonic mean. A category counts once per image, however often
    it is repeated. Empty denominators give 0.
    """
    _check_captions(captions)
    keep = set(synonyms.categories if categories is None else categories)
    unknown = sorted(keep - set(synonyms.categories))
    if unknown:
        raise ValueError(f"categories {unknown} are not in the synonym table {synonyms.name!r}")
    missing = [image_id for image_id in captions if image_id not in references]
    if missing:
        raise KeyError(f"references has no entry for image ids {missing[:5]}")
    named = reference_objects({i: references[i] for i in captions}, synonyms)
    per_image = {}
    true_positives = false_positives = reference_pairs = 0
    for image_id, caption in captions.items():
        truth = named[image_id] & keep
        predicted = synonyms.categories_in(caption) & keep
        per_image[image_id] = (frozenset(predicted & truth), frozenset(predicted - truth))
        true_positives += len(predicted & truth)
        false_positives += len(predicted - truth)
        reference_pairs += len(truth)
    predicted_total = true_positives + false_positives
    precision = true_positives / predicted_total if predicted_total else 0.0
    recall = true_positives / reference_pairs if reference_pairs else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return WordPrecision(
        precision, recall, f1, true_positives, false_positives, reference_pairs, per_image
    )


def hallucination_scores(
    captions: Mapping[int, str], split: CocoSplit, synonyms: SynonymTable
) -> dict[str, float]:
    """Frequent-object-word precision / recall / F1 and CHAIRi / CHAIRs of captions of a split.

    Returns exactly the keys "precision", "recall", "F1", "CHAIRi", "CHAIRs" (chapters 10
    and 11). Every captioned image must belong to `split`.
    """
    _check_captions(captions)
    for image_id in captions:
        split.index_of(image_id)
    words = frequent_word_precision(captions, split_references(split), synonyms)
    result = chair(captions, ground_truth(split, synonyms), synonyms)
    return {
        "precision": words.precision,
        "recall": words.recall,
        "F1": words.F1,
        "CHAIRi": result.CHAIRi,
        "CHAIRs": result.CHAIRs,
    }
