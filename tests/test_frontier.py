"""The caution frontier and the comparison of a method's points with it (chapter 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captionlib.data.vocab import Vocabulary
from captionlib.evaluate.frontier import (
    caution_sweep,
    compare_to_frontier,
    object_word_ids,
    pareto_frontier,
)
from captionlib.generate import caption_features
from tests.test_decoding import real_features, real_model

# a hand-made caution curve: recall 0.2 → CHAIR 0.1, 0.6 → 0.3, 1.0 → 0.5 (and a dominated point)
CURVE_RECALL = [1.0, 0.6, 0.2, 0.5]
CURVE_CHAIR = [0.5, 0.3, 0.1, 0.35]


def test_pareto_frontier_drops_dominated_points_and_sorts_by_recall() -> None:
    front = pareto_frontier(CURVE_RECALL, CURVE_CHAIR)
    assert front.recall.tolist() == [0.2, 0.6, 1.0]
    assert front.chair.tolist() == [0.1, 0.3, 0.5]
    # a point with both higher recall and lower CHAIR removes the others
    assert pareto_frontier([0.5, 0.9, 0.7], [0.4, 0.2, 0.3]).recall.tolist() == [0.9]
    # equal recall: only the lower CHAIR is on the front
    assert pareto_frontier([0.5, 0.5], [0.3, 0.2]).chair.tolist() == [0.2]


def test_frontier_interpolates_and_clamps() -> None:
    front = pareto_frontier(CURVE_RECALL, CURVE_CHAIR)
    assert front.chair_at(0.4) == pytest.approx(0.2)
    assert front.chair_at(0.8) == pytest.approx(0.4)
    assert front.chair_at(1.2) == pytest.approx(0.5) and not front.covers(1.2)
    assert front.covers(0.2) and front.covers(1.0)


def test_points_above_on_and_below_the_curve() -> None:
    fronts = [pareto_frontier(CURVE_RECALL, CURVE_CHAIR)] * 3
    # at recall 0.4 the curve's CHAIR is 0.2
    above = compare_to_frontier([(0.4, 0.10), (0.41, 0.11), (0.39, 0.09)], fronts)
    on = compare_to_frontier([(0.4, 0.19), (0.4, 0.22), (0.4, 0.20)], fronts)
    below = compare_to_frontier([(0.4, 0.30), (0.4, 0.31), (0.4, 0.29)], fronts)
    assert (above.verdict, on.verdict, below.verdict) == ("above", "on", "below")
    assert above.frontier_chair[0] == pytest.approx(0.2, abs=1e-9)
    assert above.gap[0] == pytest.approx(0.1, abs=1e-9)
    assert below.gap[0] == pytest.approx(-0.1, abs=1e-9)
    assert on.chair == pytest.approx(
        (np.mean([0.19, 0.22, 0.20]), np.std([0.19, 0.22, 0.20], ddof=1))
    )
    assert above.covered
    # a wide seed spread turns a lower mean into "on"
    spread = compare_to_frontier([(0.4, 0.05), (0.4, 0.30), (0.4, 0.10)], fronts)
    assert spread.verdict == "on"


def test_each_seed_is_compared_with_its_own_frontier() -> None:
    low = pareto_frontier([0.2, 1.0], [0.0, 0.4])  # CHAIR 0.2 at recall 0.6
    high = pareto_frontier([0.2, 1.0], [0.2, 0.6])  # CHAIR 0.4 at recall 0.6
    result = compare_to_frontier([(0.6, 0.25), (0.6, 0.45)], [low, high])
    assert result.frontier_chair[0] == pytest.approx(0.3)
    assert result.gap == pytest.approx((-0.05, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="frontiers"):
        compare_to_frontier([(0.6, 0.2)], [low, high])
    with pytest.raises(ValueError, match="NaN"):
        pareto_frontier([0.1, float("nan")], [0.1, 0.2])


def test_object_word_ids() -> None:
    vocabulary = Vocabulary(["a", "boat", "boats", "red", "tree"])
    categories = {"boat": "boat", "boats": "boat", "tree": "tree"}
    ids = object_word_ids(vocabulary, categories.get)
    assert [vocabulary.id_to_word(i) for i in ids] == ["boat", "boats", "tree"]


def test_caution_sweep_starts_at_plain_beam_search_and_names_fewer_words() -> None:
    model = real_model("multihead")
    with torch.no_grad():  # captions that run on (this test decodes with the vocabulary's ids)
        model.output.bias[[Vocabulary.UNK_ID, Vocabulary.END_ID]] -= 1.0
    features = torch.cat([real_features(), real_features().flip(0)])
    vocabulary = Vocabulary([f"w{i}" for i in range(model.vocab_size - 4)])
    word_ids = (6, 7)  # "w2", "w3"
    image_ids = list(range(features.shape[0]))

    def count(captions: dict[int, str]) -> dict[str, float]:
        words = [word for text in captions.values() for word in text.split()]
        return {"named": float(sum(vocabulary.word_to_id(word) in word_ids for word in words))}

    points = caution_sweep(
        model, features, image_ids, vocabulary, word_ids, count, (0.0, 2.0, 1e4), 3, 6
    )
    plain = caption_features(model, features, image_ids, vocabulary, 3, 6)
    assert points[0] == {"penalty": 0.0, **count(plain)}
    assert points[0]["named"] > 0 and points[-1]["named"] == 0
    assert points[1]["named"] <= points[0]["named"]
    with pytest.raises(ValueError, match="word_ids"):
        caution_sweep(model, features, image_ids, vocabulary, (), count)
