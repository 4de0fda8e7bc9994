"""Localisation scores (captionlib.evaluate.localization) on hand-made maps and boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from captionlib.data.coco import load_coco_split
from captionlib.evaluate.localization import (
    THRESHOLDS,
    LocalizationRecord,
    ObjectAnnotation,
    box_correctness,
    box_mask,
    correctness,
    energy_in_mask,
    image_objects,
    pointing_game,
    positive_heatmap,
    score_caption,
    score_explanation,
    summarize,
)
from captionlib.explain.lrp import Explanation

# H: 1.0 and 0.5 in the top row, 0.2 below the 1.0, 0.3 in the bottom-right corner; ΣH = 2
HEAT = torch.tensor(
    [[1.0, 0.5, 0.0, 0.0], [0.2, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3]]
)
TOP = [0, 0, 2, 1]  # x, y, w, h: the 1.0 and the 0.5
CORNER = [3, 3, 1, 1]  # the 0.3


def test_box_correctness_known_values() -> None:
    top = box_correctness(HEAT, TOP, (0.0, 0.25, 0.4, 0.9))
    np.testing.assert_allclose(top, [1.5 / 2.0, 1.5 / 1.8, 1.0, 1.0])
    corner = box_correctness(HEAT, CORNER, (0.0, 0.25, 0.4, 0.9))
    np.testing.assert_allclose(corner, [0.3 / 2.0, 0.3 / 1.8, 0.0, 0.0])
    assert THRESHOLDS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_two_boxes_of_one_category_see_the_same_map() -> None:
    original = HEAT.clone()
    # the corner box first: with the authors' in-place thresholding the top box would be
    # scored on a map already cut at τ = 0.9 (only the 1.0 left) and get 1.0 at τ = 0
    scores = correctness(HEAT, [CORNER, TOP], (0.0, 0.25, 0.4))
    np.testing.assert_allclose(scores, [0.75, 1.5 / 1.8, 1.0])
    torch.testing.assert_close(HEAT, original)
    # order of the boxes does not matter
    np.testing.assert_allclose(correctness(HEAT, [TOP, CORNER], (0.0, 0.25, 0.4)), scores)


def test_box_mask_pixel_centres() -> None:
    mask = box_mask([1, 0, 2, 2], (3, 4))
    assert mask.tolist() == [
        [False, True, True, False],
        [False, True, True, False],
        [False, False, False, False],
    ]
    with pytest.raises(ValueError, match="box must be"):
        box_mask([0, 0, -1, 2], (3, 4))


def test_positive_heatmap_mean_of_positive_parts_normalised() -> None:
    pixels = torch.zeros(3, 2, 2)
    pixels[:, 0, 0] = torch.tensor([3.0, 3.0, -9.0])  # mean of max(R, 0) = 2
    pixels[:, 1, 1] = torch.tensor([1.0, 0.0, 0.0])  # 1/3
    pixels[:, 0, 1] = torch.tensor([-5.0, -5.0, -5.0])  # 0
    torch.testing.assert_close(positive_heatmap(pixels), torch.tensor([[1.0, 0.0], [0.0, 1 / 6]]))
    torch.testing.assert_close(positive_heatmap(-torch.ones(2, 2)), torch.zeros(2, 2))
    torch.testing.assert_close(
        positive_heatmap(torch.tensor([[2.0, -1.0]])), torch.tensor([[1.0, 0.0]])
    )


def test_pointing_game_and_energy_on_known_maps() -> None:
    corner = box_mask(CORNER, (4, 4))
    top = box_mask(TOP, (4, 4))
    assert pointing_game(HEAT, top) and not pointing_game(HEAT, corner)
    assert not pointing_game(torch.zeros(4, 4), top)  # an empty map points nowhere
    assert energy_in_mask(HEAT, top) == pytest.approx(0.75)
    assert energy_in_mask(HEAT, corner) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="non-negative"):
        energy_in_mask(-HEAT, top)
    with pytest.raises(ValueError, match="differ"):
        pointing_game(HEAT, torch.ones(3, 3, dtype=torch.bool))


def test_score_caption_takes_the_best_word_and_skips_absent_objects() -> None:
    words = ["a", "ball", "and", "sphere", "cat"]
    categories = {"ball": "ball", "sphere": "ball", "cat": "cat"}
    maps = torch.zeros(5, 4, 4)
    maps[1] = HEAT.flip(0).flip(1)  # the 1.0 now in the bottom-right corner
    maps[3] = HEAT
    objects = {"ball": ObjectAnnotation(boxes=[TOP], mask=box_mask(TOP, (4, 4)))}
    (record,) = score_caption(7, maps, words, objects, categories.get, (0.0, 0.4))
    assert record.image_id == 7 and record.category == "ball"
    np.testing.assert_allclose(record.correctness, [0.75, 1.0])  # from "sphere"
    assert record.pointing and record.energy == pytest.approx(0.75)
    with pytest.raises(ValueError, match="maps must be"):
        score_caption(7, maps[:2], words, objects, categories.get)


def test_summarize_means_over_pairs() -> None:
    records = [
        LocalizationRecord(1, "ball", np.array([0.2, 0.4]), True, 0.5),
        LocalizationRecord(1, "cube", np.array([0.6, 0.8]), False, 0.1),
    ]
    summary = summarize(records, (0.0, 0.5))
    np.testing.assert_allclose(summary.correctness, [0.4, 0.6])
    np.testing.assert_allclose(summary.correctness_std, [0.2, 0.2])
    assert summary.pointing == 0.5 and summary.energy == pytest.approx(0.3)
    assert summary.pairs == 2
    with pytest.raises(ValueError, match="no \\(image, category\\)"):
        summarize([])


def test_image_objects_from_instances(tiny_coco: dict[str, Path]) -> None:
    split = load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])
    objects = image_objects(split, 3)
    assert set(objects) == {"dog", "ball"}
    assert objects["dog"].boxes == [[2, 2, 8, 8]]
    assert objects["dog"].mask.shape == (20, 24)
    assert int(objects["dog"].mask.sum()) == pytest.approx(64, abs=20)
    with pytest.raises(KeyError):
        image_objects(split, 999)


def test_score_explanation_on_a_tiny_split(tiny_coco: dict[str, Path]) -> None:
    split = load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])
    vocabulary = ["<pad>", "<start>", "a", "dog", "boat", "<end>"]
    caption_ids = torch.tensor([[1, 2, 3, 4, 5, 0]])  # a dog boat <end> <pad>
    heat = torch.zeros(1, 5, 20, 24)
    heat[0, 1, 5, 5] = 2.0  # "dog": all mass inside the dog's box [2, 2, 8, 8]
    heat[0, 1, 0, 23] = -4.0  # negative evidence is dropped by positive_heatmap
    heat[0, 2, 0, 0] = 1.0  # "boat": no boat in image 3 → not scored
    explanation = Explanation(
        method="test",
        caption_ids=caption_ids,
        words=caption_ids[:, 1:],
        logits=torch.zeros(1, 5),
        mask=caption_ids[:, 1:] != 0,
        locations=torch.zeros(1, 5, 4),
        grid_size=(2, 2),
        heatmap=heat,
    )
    categories = {"dog": "dog", "boat": "boat"}
    (record,) = score_explanation(
        explanation, [3], split, vocabulary.__getitem__, categories.get, (0.0, 0.5)
    )
    assert record.category == "dog" and record.pointing
    np.testing.assert_allclose(record.correctness, [1.0, 1.0])
    assert record.energy == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image ids"):
        score_explanation(explanation, [3, 5], split, vocabulary.__getitem__, categories.get)
