"""Tokeniser and vocabulary (captionlib.data.vocab)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captionlib.data.vocab import Vocabulary, tokenize

CAPTIONS = [
    "A red boat on the water.",
    "a boat, on blue water",
    "The dog's ball is red!",
    "a dog",
]


def test_tokenize_lowercases_and_strips_punctuation() -> None:
    assert tokenize("A Red-boat,  on the WATER.") == ["a", "red", "boat", "on", "the", "water"]
    assert tokenize("The dog's ball!") == ["the", "dogs", "ball"]
    assert tokenize("  ...  ") == []


def test_tokenize_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="str"):
        tokenize(["a", "list"])  # type: ignore[arg-type]


def test_build_orders_by_frequency_then_alphabet() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    # counts: a 3, boat 2, on 2, red 2, water 2, the 2, then singletons a-z
    assert vocab.words[:4] == ["<pad>", "<unk>", "<start>", "<end>"]
    assert vocab.words[4:10] == ["a", "boat", "on", "red", "the", "water"]
    assert vocab.words[10:] == ["ball", "blue", "dog", "dogs", "is"]
    assert len(vocab) == 15
    assert Vocabulary.build(reversed(CAPTIONS), min_count=1) == vocab


def test_min_count_threshold() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=2)
    assert vocab.words[4:] == ["a", "boat", "on", "red", "the", "water"]
    assert "dog" not in vocab and "boat" in vocab
    assert vocab.word_to_id("dog") == Vocabulary.UNK_ID
    assert len(Vocabulary.build(CAPTIONS, min_count=4)) == 4  # only the specials
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="min_count"):
            Vocabulary.build(CAPTIONS, min_count=bad)  # type: ignore[arg-type]


def test_special_token_ids() -> None:
    vocab = Vocabulary(["x"])
    assert [vocab.word_to_id(t) for t in vocab.SPECIALS] == [0, 1, 2, 3]
    assert (vocab.PAD_ID, vocab.UNK_ID, vocab.START_ID, vocab.END_ID) == (0, 1, 2, 3)
    assert vocab.id_to_word(4) == "x"
    with pytest.raises(IndexError):
        vocab.id_to_word(5)


def test_encode_decode_round_trip() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    ids = vocab.encode("A red boat on the water.")
    assert ids[0] == vocab.START_ID and ids[-1] == vocab.END_ID
    assert ids[1:-1] == [vocab.word_to_id(w) for w in ["a", "red", "boat", "on", "the", "water"]]
    assert vocab.decode(ids) == "a red boat on the water"
    assert vocab.decode(torch.tensor(ids + [0, 0])) == "a red boat on the water"
    assert vocab.decode(ids, strip_special=False) == "<start> a red boat on the water <end>"


def test_decode_stops_at_end_and_keeps_unknown() -> None:
    vocab = Vocabulary(["dog", "ball"])
    ids = [2, 4, 1, 5, 3, 4, 4]
    assert vocab.decode(ids) == "dog <unk> ball"
    with pytest.raises(IndexError, match="99"):
        vocab.decode([2, 99])


def test_encode_truncates_to_max_length_words() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    ids = vocab.encode("a red boat on the water", max_length=3)
    assert len(ids) == 5 and vocab.decode(ids) == "a red boat"


def test_caption_without_known_words_raises() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=2)
    with pytest.raises(ValueError, match="no known words: 'Zebras grazing'"):
        vocab.encode("Zebras grazing")
    with pytest.raises(ValueError, match="no known words"):
        vocab.encode("!!!")
    assert vocab.encode("Zebras grazing", strict=False) == [2, 1, 1, 3]
    assert vocab.encode("zebras on grass") == [2, 1, vocab.word_to_id("on"), 1, 3]


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(CAPTIONS)
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.words == vocab.words
    assert loaded != Vocabulary.build(CAPTIONS, min_count=2)
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temporary left


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Vocabulary.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "captionlib-vocabulary", "tokens": [')
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        Vocabulary.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"words": ["a"]}))
    with pytest.raises(ValueError, match="wrong.json"):
        Vocabulary.load(wrong)
    specials = tmp_path / "specials.json"
    specials.write_text(json.dumps({"format": "captionlib-vocabulary", "tokens": ["a", "b"]}))
    with pytest.raises(ValueError, match="specials.json.*special tokens"):
        Vocabulary.load(specials)
    duplicate = tmp_path / "duplicate.json"
    tokens = [*Vocabulary.SPECIALS, "a", "a"]
    duplicate.write_text(json.dumps({"format": "captionlib-vocabulary", "tokens": tokens}))
    with pytest.raises(ValueError, match="duplicate.json.*duplicate"):
        Vocabulary.load(duplicate)


def test_constructor_rejects_bad_words() -> None:
    for words in (["<pad>"], ["a", "a"], [""], [" a"]):
        with pytest.raises(ValueError):
            Vocabulary(words)
