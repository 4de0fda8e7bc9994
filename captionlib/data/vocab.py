"""Tokeniser and vocabulary: captions to word ids and back (chapter 1).

::

    vocab = Vocabulary.build(all_training_captions, min_count=5)
    ids = vocab.encode("A red boat on the water.")   # [<start>, a, red, boat, ..., <end>]
    vocab.decode(ids)                                 # "a red boat on the water"

Ids 0-3 are the special tokens `<pad>`, `<unk>`, `<start>`, `<end>`; the words follow in
order of decreasing training frequency (ties alphabetical), so building twice from the same
captions gives the same ids.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from captionlib.artifacts import atomic_write_bytes

_FORMAT = "captionlib-vocabulary"
_APOSTROPHES = re.compile(r"['\u2019`]")
_NON_WORD = re.compile(r"[^\w\s]|_")


def tokenize(text: str) -> list[str]:
    """Lowercase, strip punctuation, split on whitespace.

    Apostrophes are deleted ("dog's" -> "dogs"); every other punctuation mark separates
    words ("red-and-white" -> "red and white").
    """
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}")
    text = _APOSTROPHES.sub("", text.lower())
    return _NON_WORD.sub(" ", text).split()


class Vocabulary:
    """A fixed mapping between words and integer ids, with four special tokens."""

    PAD = "<pad>"
    UNK = "<unk>"
    START = "<start>"
    END = "<end>"
    SPECIALS = (PAD, UNK, START, END)
    PAD_ID = 0
    UNK_ID = 1
    START_ID = 2
    END_ID = 3

    def __init__(self, words: Sequence[str]) -> None:
        """`words`: the ordinary words in id order (ids start at 4, after the specials)."""
        words = list(words)
        for word in words:
            if not isinstance(word, str) or not word or word != word.strip():
                raise ValueError(f"vocabulary words must be non-empty strings, got {word!r}")
            if word in self.SPECIALS:
                raise ValueError(f"{word!r} is a special token and cannot be a vocabulary word")
        duplicates = sorted(word for word, count in Counter(words).items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate vocabulary words: {duplicates[:10]}")
        self._id_to_word: list[str] = [*self.SPECIALS, *words]
        self._word_to_id: dict[str, int] = {w: i for i, w in enumerate(self._id_to_word)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Keep the words seen at least `min_count` times; order by frequency, then a-z."""
        if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
            raise ValueError(f"min_count must be a positive int, got {min_count!r}")
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(tokenize(caption))
        for special in cls.SPECIALS:  # tokenize() cannot produce them; be explicit anyway
            counts.pop(special, None)
        kept = [word for word, count in counts.items() if count >= min_count]
        kept.sort(key=lambda word: (-counts[word], word))
        return cls(kept)

    @property
    def words(self) -> list[str]:
        """All tokens in id order, the four specials first."""
        return list(self._id_to_word)

    def __len__(self) -> int:
        return len(self._id_to_word)

    def __contains__(self, word: object) -> bool:
        return word in self._word_to_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._id_to_word == other._id_to_word

    def __repr__(self) -> str:
        preview = ", ".join(self._id_to_word[4:9])
        return f"Vocabulary({len(self)} tokens: {preview}, ...)"

    def word_to_id(self, word: str) -> int:
        """The id of `word`, or the `<unk>` id for a word outside the vocabulary."""
        return self._word_to_id.get(word, self.UNK_ID)

    def id_to_word(self, index: int) -> str:
        """The token with id `index`."""
        if not 0 <= index < len(self._id_to_word):
            raise IndexError(f"token id {index} outside the vocabulary (size {len(self)})")
        return self._id_to_word[index]

    def encode(self, text: str, max_length: int | None = None, strict: bool = True) -> list[int]:
        """`[<start>, w_1, ..., w_n, <end>]` with at most `max_length` words.

        With `strict`, a caption whose words are all unknown (or that has no words) raises
        ValueError: training on `<start> <unk> <end>` teaches nothing.
        """
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        tokens = tokenize(text)[:max_length]
        ids = [self.word_to_id(token) for token in tokens]
        if strict and all(index == self.UNK_ID for index in ids):
            raise ValueError(f"caption has no known words: {text!r}")
        return [self.START_ID, *ids, self.END_ID]

    def decode(self, ids: Sequence[int] | torch.Tensor, strip_special: bool = True) -> str:
        """The words of `ids` up to the first `<end>`.

        With `strip_special`, `<pad>`, `<start>` and `<end>` are left out (`<unk>` stays).
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects a 1-D id sequence, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        words = []
        for index in ids:
            word = self.id_to_word(int(index))
            if index == self.END_ID:
                if not strip_special:
                    words.append(word)
                break
            if strip_special and index in (self.PAD_ID, self.START_ID):
                continue
            words.append(word)
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically: no half-written file on interruption)."""
        payload = {"format": _FORMAT, "version": 1, "tokens": self._id_to_word}
        atomic_write_bytes(Path(path), json.dumps(payload, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"vocabulary file {path} is not valid JSON: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a captionlib vocabulary file (no 'format' field)")
        tokens = payload.get("tokens")
        if not isinstance(tokens, list):
            raise ValueError(f"vocabulary file {path} has no 'tokens' list")
        if tuple(tokens[:4]) != cls.SPECIALS:
            raise ValueError(
                f"vocabulary file {path} must start with the special tokens {cls.SPECIALS}, "
                f"got {tokens[:4]}"
            )
        try:
            return cls(tokens[4:])
        except ValueError as error:
            raise ValueError(f"vocabulary file {path}: {error}") from error
