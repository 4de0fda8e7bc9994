"""Does an explanation depend on the word? `summaries.cross_word_correlation` and
`content_word_mask` on hand-made maps (chapter 8)."""

from __future__ import annotations

import math

import pytest
import torch

from captionlib.explain.summaries import content_word_mask, cross_word_correlation


def test_identical_maps_correlate_at_one() -> None:
    base = torch.tensor([[0.0, 1.0], [3.0, -2.0]])
    maps = torch.stack([base, base, 2.0 * base + 5.0]).unsqueeze(0)  # (1, 3, 2, 2)
    torch.testing.assert_close(
        cross_word_correlation(maps), torch.tensor([1.0], dtype=torch.float64)
    )


def test_orthogonal_maps_correlate_at_zero_and_opposite_ones_at_minus_one() -> None:
    first = torch.tensor([1.0, -1.0, 1.0, -1.0])  # zero mean, orthogonal to the second
    second = torch.tensor([1.0, 1.0, -1.0, -1.0])
    maps = torch.stack([torch.stack([first, second]), torch.stack([first, -first])])
    result = cross_word_correlation(maps)  # (2,)
    torch.testing.assert_close(result, torch.tensor([0.0, -1.0], dtype=torch.float64))


def test_mean_over_the_pairs_of_kept_words() -> None:
    # pairs (0, 1): 1, (0, 2): 0, (1, 2): 0 → mean 1/3; word 3 (opposite) is left out
    first = torch.tensor([1.0, -1.0, 1.0, -1.0])
    second = torch.tensor([1.0, 1.0, -1.0, -1.0])
    maps = torch.stack([first, 3.0 * first, second, -first]).unsqueeze(0)  # (1, 4, 4)
    keep = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(
        cross_word_correlation(maps, keep), torch.tensor([1 / 3], dtype=torch.float64)
    )
    everything = (1 + 0 - 1 + 0 - 1 + 0) / 6  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    torch.testing.assert_close(
        cross_word_correlation(maps), torch.tensor([everything], dtype=torch.float64)
    )


def test_constant_maps_and_single_words_give_nan() -> None:
    varying = torch.tensor([1.0, 2.0, 4.0])
    maps = torch.stack(
        [
            torch.stack([varying, torch.zeros(3), 2.0 * varying]),  # constant map left out → 1
            torch.stack([varying, torch.ones(3), torch.ones(3)]),  # one varying map → NaN
        ]
    )
    result = cross_word_correlation(maps)
    assert result[0].item() == pytest.approx(1.0)
    assert math.isnan(result[1].item())
    only_one = cross_word_correlation(maps[:1], torch.tensor([[True, False, False]]))
    assert math.isnan(only_one.item())


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"\(B, K, \.\.\.\)"):
        cross_word_correlation(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="keep must be"):
        cross_word_correlation(torch.zeros(1, 3, 4), torch.ones(1, 2, dtype=torch.bool))


def test_content_words_are_objects_attributes_and_the_scene() -> None:
    words = [["a", "red", "boat", "on", "the", "water", "<end>"], ["two", "dogs", "<end>"]]
    mask = content_word_mask(words, 8)
    assert mask[0].tolist() == [False, True, True, False, False, True, False, False]
    assert mask[1].tolist() == [True, True, False, False, False, False, False, False]
    with pytest.raises(ValueError, match="more than"):
        content_word_mask(words, 2)
