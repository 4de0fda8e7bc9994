"""CHAIR and frequent-object-word precision on hand-made captions (chapter 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captionlib.data.coco import load_coco_split
from captionlib.evaluate.hallucination import (
    Mention,
    SynonymTable,
    chair,
    coco_synonyms,
    frequent_word_precision,
    ground_truth,
    hallucination_scores,
    plurals,
    shapeworld_synonyms,
)

TABLE = SynonymTable(
    {
        "dog": ["puppy"],
        "hot dog": ["hotdog"],
        "person": ["man", "woman", "child"],
        "teddy bear": [],
        "bear": [],
        "boat": ["ship"],
    }
)


def test_plural_rules() -> None:
    assert plurals("dog") == ("dogs",)
    assert plurals("bus") == ("buses",)
    assert plurals("puppy") == ("puppies",)
    assert plurals("toy") == ("toys",)
    assert plurals("knife") == ("knives",)
    assert plurals("person") == ("people", "persons")


def test_mentions_synonyms_plurals_phrases_positions() -> None:
    found = TABLE.mentions("Two men eat hot dogs, a puppy and a teddy bear watch; the bear naps.")
    assert found == [
        Mention("men", "person", 1, 1),
        Mention("hot dogs", "hot dog", 3, 2),
        Mention("puppy", "dog", 6, 1),
        Mention("teddy bear", "teddy bear", 9, 2),
        Mention("bear", "bear", 13, 1),
    ]
    assert TABLE.category_of("People") == "person"
    assert TABLE.category_of("children") == "person"
    assert TABLE.category_of("ships") == "boat"
    assert TABLE.category_of("cat") is None
    assert TABLE.categories_in("a hot dog") == {"hot dog"}


def test_conflicting_and_bad_tables_are_errors() -> None:
    with pytest.raises(ValueError, match="'cats' names both"):
        SynonymTable({"cat": [], "kitten": ["cats"]})
    with pytest.raises(ValueError, match=r"synonyms\['dog'\] must be a list"):
        SynonymTable({"dog": "puppy"})
    with pytest.raises(ValueError, match=r"synonyms\['dog'\]: bad word"):
        SynonymTable({"dog": ["puppy", "!!"]})
    with pytest.raises(ValueError, match="non-empty mapping"):
        SynonymTable({})


def test_chair_by_hand_with_repeated_mentions() -> None:
    captions = {
        1: "a dog chases another dog near a boat",  # dog, dog, boat: boat absent
        2: "a man with a hotdog",  # person ok, hot dog absent (dog present is not hot dog)
        3: "a ship on the water",  # boat ok
        4: "the water is calm",  # no mention
    }
    truth = {1: {"dog"}, 2: {"person", "dog"}, 3: {"boat"}, 4: set()}
    result = chair(captions, truth, TABLE)
    assert (result.mentions, result.hallucinated_mentions) == (6, 2)
    assert result.CHAIRi == pytest.approx(2 / 6)
    assert result.CHAIRs == pytest.approx(2 / 4)
    assert result.details[1].hallucinated == [Mention("boat", "boat", 7, 1)]
    assert result.details[2].hallucinated == [Mention("hotdog", "hot dog", 4, 1)]
    assert result.details[4].mentions == []

    unique = chair(captions, truth, TABLE, unique=True)  # "dog" twice counts once
    assert (unique.mentions, unique.hallucinated_mentions) == (5, 2)
    assert unique.CHAIRi == pytest.approx(2 / 5)
    assert unique.details[1].mentions[0] == Mention("dog", "dog", 1, 1)

    repeated = chair({1: "a boat and a boat and a dog"}, {1: {"dog"}}, TABLE)
    assert repeated.CHAIRi == pytest.approx(2 / 3)
    assert [m.position for m in repeated.details[1].hallucinated] == [1, 4]


def test_chair_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="captions must be a non-empty"):
        chair({}, {}, TABLE)
    with pytest.raises(TypeError, match=r"captions\[3\] must be a str"):
        chair({3: ["a dog"]}, {3: set()}, TABLE)
    with pytest.raises(KeyError, match="image id 9"):
        chair({9: "a dog"}, {1: set()}, TABLE)


def test_frequent_word_precision_by_hand() -> None:
    references = {
        1: ["a dog on the grass", "a puppy and a man"],  # dog, person
        2: ["a ship at sea"],  # boat
        3: ["two bears", "a bear"],  # bear
    }
    captions = {
        1: "a dog and a dog with a boat",  # TP dog (once), FP boat; person missed
        2: "a man on a boat",  # TP boat, FP person
        3: "a teddy bear",  # FP teddy bear, bear missed
    }
    scores = frequent_word_precision(captions, references, TABLE)
    assert (scores.true_positives, scores.false_positives, scores.reference_pairs) == (2, 3, 4)
    assert scores.precision == pytest.approx(2 / 5)
    assert scores.recall == pytest.approx(2 / 4)
    f1 = scores.F1
    assert f1 == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert scores.per_image[1] == (frozenset({"dog"}), frozenset({"boat"}))
    assert scores.per_image[3] == (frozenset(), frozenset({"teddy bear"}))

    only_dogs = frequent_word_precision(captions, references, TABLE, categories=["dog"])
    assert (only_dogs.precision, only_dogs.recall) == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"categories \['cat'\]"):
        frequent_word_precision(captions, references, TABLE, categories=["cat"])
    with pytest.raises(KeyError, match="references has no entry"):
        frequent_word_precision({5: "a dog"}, references, TABLE)
    with pytest.raises(TypeError, match=r"references\[1\] must be a list"):
        frequent_word_precision({1: "a dog"}, {1: "a dog"}, TABLE)
    nothing = frequent_word_precision({2: "the sea"}, references, TABLE)
    assert (nothing.precision, nothing.recall, nothing.F1) == (0.0, 0.0, 0.0)


def test_coco_table_loads_and_maps_synonyms() -> None:
    table = coco_synonyms()
    assert len(table) == 80
    assert table.category_of("motorbike") == "motorcycle"
    assert table.category_of("motor bikes") == "motorcycle"
    assert table.category_of("bike") == "bicycle"
    assert table.category_of("women") == "person"
    assert table.category_of("tv") == "tv"
    found = table.mentions("a man eats a hot dog next to a teddy bear and a dirt bike")
    assert [m.category for m in found] == ["person", "hot dog", "teddy bear", "motorcycle"]


def test_coco_table_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        coco_synonyms(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        coco_synonyms(bad)
    bad.write_text(json.dumps(["dog"]))
    with pytest.raises(ValueError, match="must hold a JSON object"):
        coco_synonyms(bad)


def test_shapeworld_table_covers_the_grammar() -> None:
    table = shapeworld_synonyms()
    assert len(table) == 10
    assert table.category_of("puppies") == "dog"
    assert table.category_of("fish") == "fish"
    assert table.category_of("women") == "person"


def test_hallucination_scores_on_a_coco_split(tiny_coco: dict[str, Path]) -> None:
    split = load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])
    table = SynonymTable({"boat": ["ship"], "dog": [], "ball": [], "person": ["man"]})
    truth = ground_truth(split, table)
    assert truth[3] == {"dog", "ball"}
    assert truth[5] == {"boat", "dog"}
    captions = {
        7: "a boat with a dog",  # references name boat: TP boat, FP dog; dog absent
        3: "a dog with a ball",  # TP dog, TP ball
        12: "a man and a dog",  # FP person, TP dog
    }
    scores = hallucination_scores(captions, split, table)
    assert list(scores) == ["precision", "recall", "F1", "CHAIRi", "CHAIRs"]
    assert scores["precision"] == pytest.approx(4 / 6)
    assert scores["recall"] == pytest.approx(4 / 4)  # pairs: 7 boat, 3 dog+ball, 12 dog
    assert scores["F1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert scores["CHAIRi"] == pytest.approx(2 / 6)
    assert scores["CHAIRs"] == pytest.approx(2 / 3)
    with pytest.raises(KeyError, match="image id 99"):
        hallucination_scores({99: "a dog"}, split, table)
    with pytest.raises(ValueError, match=r"instance categories \['ball'\]"):
        ground_truth(split, SynonymTable({"boat": [], "dog": []}))
