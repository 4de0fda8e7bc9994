"""Greedy and beam search over the step() contract (book/method.md §4)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as functional
from torch import Tensor

from captionlib.models import (
    AdaptiveAttentionCaptioner,
    Captioner,
    MultiHeadCaptioner,
    StepOutput,
    beam_search,
    greedy,
    remove_bad_endings,
    reorder_state,
)
from captionlib.models.decoding import split_beam_indices

torch.set_num_threads(1)

START, END, A, B, C = range(5)


class TableCaptioner(Captioner):
    """Toy captioner: the next word's log-probabilities depend only on the current word."""

    def __init__(self, table: Tensor) -> None:
        super().__init__(vocab_size=table.shape[0], embed_dim=table.shape[0])
        with torch.no_grad():
            self.embedding.weight.copy_(torch.eye(table.shape[0]))  # one-hot words
        self.register_buffer("table", table.log())

    def prepare(self, features: Tensor) -> dict[str, Tensor]:
        return {"features": features}

    def init_state(self, memory: dict[str, Tensor]) -> tuple[Tensor, ...]:
        return (memory["features"].new_zeros(memory["features"].shape[0], 1),)

    def step(
        self, word_embedding: Tensor, state: tuple[Tensor, ...], memory: dict[str, Tensor]
    ) -> StepOutput:
        features = memory["features"]
        uniform = features.new_full(features.shape[:2], 1.0 / features.shape[1])
        return StepOutput(logits=self.table[word_embedding.argmax(-1)], state=state, alpha=uniform)

    def config(self) -> dict[str, Any]:
        return {}


def toy_model() -> TableCaptioner:
    # rows: current word; columns: probability of the next word (start, end, a, b, c)
    table = torch.tensor(
        [
            [1e-6, 0.05, 0.50, 0.40, 0.05 - 1e-6],  # after <start>
            [0.20, 0.20, 0.20, 0.20, 0.20],  # after <end> (never used)
            [1e-6, 0.30, 1e-6, 0.36, 0.34 - 2e-6],  # after a
            [1e-6, 0.90, 0.05, 1e-6, 0.05 - 2e-6],  # after b
            [1e-6, 0.50, 0.25, 0.25 - 2e-6, 1e-6],  # after c
        ],
        dtype=torch.float64,
    )
    return TableCaptioner(table)


def test_beam_search_finds_the_best_sequence_greedy_misses() -> None:
    model = toy_model()
    features = torch.zeros(1, 4, 2, dtype=torch.float64)
    greedy_caption = greedy(model, features, START, END, max_length=5)[0]
    assert greedy_caption.token_ids == [A, B]
    assert greedy_caption.log_prob == pytest.approx(math.log(0.5 * 0.36 * 0.9))
    best = beam_search(model, features, START, END, beam_size=2, max_length=5)[0]
    assert best.token_ids == [B]
    assert best.log_prob == pytest.approx(math.log(0.4 * 0.9))
    assert best.alpha.shape == (1, 4) and best.beta is None


def test_length_penalty_can_prefer_longer_captions() -> None:
    model = toy_model()
    features = torch.zeros(1, 4, 2, dtype=torch.float64)
    best = beam_search(model, features, START, END, beam_size=3, length_penalty=4.0)[0]
    assert len(best.token_ids) > 1


def test_truncated_captions_keep_their_words() -> None:
    model = toy_model()
    features = torch.zeros(1, 4, 2, dtype=torch.float64)
    assert greedy(model, features, START, END, max_length=1)[0].token_ids == [A]
    caption = beam_search(model, features, START, END, beam_size=2, max_length=1)[0]
    assert caption.token_ids == [A] and caption.log_prob == pytest.approx(math.log(0.5))


def real_model(kind: str) -> Captioner:
    """A random tiny captioner with peaked word distributions, so that beams diverge and
    some captions end after a few words (seeds picked for that)."""
    torch.manual_seed(0 if kind == "adaptive" else 3)
    if kind == "adaptive":
        model: Captioner = AdaptiveAttentionCaptioner(9, 6, 5, 8, 7)
    else:
        model = MultiHeadCaptioner(9, 6, 5, 8, heads=2, head_dim=3)
    with torch.no_grad():
        model.output.weight *= 6.0
        model.output.bias[END] += 1.0
        model.embedding.weight *= 2.0
    return model.double()


def real_features() -> Tensor:
    generator = torch.Generator().manual_seed(2)
    return 3 * torch.rand(4, 5, 6, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_beam_of_one_equals_greedy(kind: str) -> None:
    model = real_model(kind)
    features = real_features()
    for ours, theirs in zip(
        greedy(model, features, START, END, max_length=8),
        beam_search(model, features, START, END, beam_size=1, max_length=8),
        strict=True,
    ):
        assert ours.token_ids == theirs.token_ids
        assert ours.log_prob == pytest.approx(theirs.log_prob, abs=1e-12)
        torch.testing.assert_close(ours.alpha, theirs.alpha)
        if ours.beta is not None:
            torch.testing.assert_close(ours.beta, theirs.beta)


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_beam_results_match_teacher_forcing(kind: str) -> None:
    """Score, α and β of each beam caption equal a teacher-forced re-run: the beams' states
    were reordered with integer indices correctly."""
    model = real_model(kind)
    features = real_features()
    max_length = 6
    captions = beam_search(model, features, START, END, beam_size=3, max_length=max_length)
    assert model.training  # the decoder restores the mode it found
    model.eval()
    for image, caption in enumerate(captions):
        ended = len(caption.token_ids) < max_length
        ids = torch.tensor([[START, *caption.token_ids, *([END] if ended else [])]])
        with torch.no_grad():
            out = model(features[image : image + 1], ids)
        log_probs = functional.log_softmax(out.logits[0], -1)
        expected = log_probs.gather(1, ids[0, 1:, None]).sum()
        assert caption.log_prob == pytest.approx(float(expected), abs=1e-10)
        length = len(caption.token_ids)
        assert caption.alpha.shape[0] == length
        torch.testing.assert_close(caption.alpha, out.alpha[0, :length])
        if out.beta is not None:
            torch.testing.assert_close(caption.beta, out.beta[0, :length])
    assert any(len(c.token_ids) < max_length for c in captions)  # some captions ended
    greedy_captions = greedy(model, features, START, END, max_length=max_length)
    assert [c.token_ids for c in captions] != [c.token_ids for c in greedy_captions]


def test_greedy_batch_equals_one_image_at_a_time() -> None:
    model = real_model("adaptive")
    features = real_features()
    batched = greedy(model, features, START, END, max_length=7)
    for image, caption in enumerate(batched):
        alone = greedy(model, features[image : image + 1], START, END, max_length=7)[0]
        assert alone.token_ids == caption.token_ids
        assert alone.log_prob == pytest.approx(caption.log_prob, abs=1e-10)
    assert not batched[0].alpha.requires_grad


def test_split_beam_indices_are_integers() -> None:
    beams, words = split_beam_indices(torch.tensor([0, 8, 9, 26]), vocab_size=9)
    assert beams.dtype == torch.long and words.dtype == torch.long
    assert beams.tolist() == [0, 0, 1, 2] and words.tolist() == [0, 8, 0, 8]


def test_reorder_state_selects_rows_of_tuples_and_dicts() -> None:
    state = (torch.arange(3.0), torch.arange(6.0).view(3, 2))
    indices = torch.tensor([2, 2, 0])
    h, c = reorder_state(state, indices)
    assert h.tolist() == [2.0, 2.0, 0.0] and c.tolist() == [[4, 5], [4, 5], [0, 1]]
    memory = reorder_state({"values": torch.arange(3.0)}, indices)
    assert memory["values"].tolist() == [2.0, 2.0, 0.0]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["a", "boat", "on", "the"], ["a", "boat"]),
        (["a", "dog", "next", "to", "a"], ["a", "dog"]),
        (["a", "dog", "on", "grass"], ["a", "dog", "on", "grass"]),
        (["the"], []),
        ([], []),
    ],
)
def test_remove_bad_endings(words: list[str], expected: list[str]) -> None:
    assert remove_bad_endings(words) == expected


def test_remove_bad_endings_custom_list_and_no_mutation() -> None:
    words = ["a", "red", "ball"]
    assert remove_bad_endings(words, bad_endings=("ball",)) == ["a", "red"]
    assert words == ["a", "red", "ball"]


def test_decoding_argument_errors() -> None:
    model = toy_model()
    features = torch.zeros(1, 4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, features, START, END, beam_size=0)
    with pytest.raises(ValueError, match="end_id"):
        greedy(model, features, START, 99)
    with pytest.raises(ValueError, match="max_length"):
        greedy(model, features, START, END, max_length=0)
    with pytest.raises(ValueError, match="features"):
        greedy(model, features[0], START, END)


def test_pad_and_start_are_never_decoded() -> None:
    from captionlib.data.vocab import Vocabulary

    pad, start, end = Vocabulary.PAD_ID, Vocabulary.START_ID, Vocabulary.END_ID
    word = 4
    # every row prefers <pad>, then <start>, then a real word, then <end>
    table = torch.full((5, 5), 1e-3, dtype=torch.float64)
    table[:, pad], table[:, start], table[:, word], table[:, end] = 0.6, 0.3, 0.07, 0.027
    table = table / table.sum(1, keepdim=True)
    model = TableCaptioner(table)
    features = torch.zeros(2, 3, 4, dtype=torch.float64)
    for decoded in (
        greedy(model, features, start, end, max_length=4),
        beam_search(model, features, start, end, beam_size=3, max_length=4),
    ):
        for caption in decoded:
            assert pad not in caption.token_ids and start not in caption.token_ids
    first = greedy(model, features, start, end, max_length=4)[0]
    assert first.token_ids == [word] * 4
    assert first.log_prob == pytest.approx(4 * math.log(float(table[start, word])))
