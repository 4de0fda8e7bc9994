"""Tests for captionlib.explain.summaries: masks, mass, shares, occlusion (chapters 5 and 7)."""

from __future__ import annotations

import math

import pytest
import torch

from captionlib.data.coco import load_coco_split
from captionlib.explain import summaries
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.multihead import MultiHeadCaptioner


@pytest.fixture
def split(tiny_coco):
    return load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])


def test_word_class_covers_the_shapeworld_lexicon():
    assert summaries.word_class("puppy") == "object"
    assert summaries.word_class("red") == "attribute"
    assert summaries.word_class("two") == "attribute"
    assert summaries.word_class("grassy") == "scene"
    assert summaries.word_class("the") == "function"
    assert summaries.word_class("floating") == "other"
    assert summaries.word_class("<end>") == "end"


def test_cell_coverage_is_the_covered_share_of_each_cell():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True  # the whole top-left cell of a 2×2 grid
    mask[3, 3] = True  # one pixel of four in the bottom-right cell
    assert summaries.cell_coverage(mask, (2, 2)).tolist() == [1.0, 0.0, 0.0, 0.25]
    with pytest.raises(ValueError, match="does not tile"):
        summaries.cell_coverage(mask, (3, 3))


def test_mass_inside_counts_the_positive_part_only():
    scores = torch.tensor([[1.0, -2.0, 3.0, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    inside = torch.tensor([1.0, 1.0, 0.0, 0.5])
    mass = summaries.mass_inside(scores, inside)
    assert mass[0].item() == pytest.approx(0.25)
    assert math.isnan(mass[1].item())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        summaries.mass_inside(scores, torch.tensor([2.0, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="entries"):
        summaries.mass_inside(scores, torch.ones(3))


def test_sign_shares():
    positive, negative = summaries.sign_shares(torch.tensor([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0]]))
    assert positive[0].item() == pytest.approx(0.25)
    assert negative[0].item() == pytest.approx(0.75)
    assert math.isnan(positive[1].item())


def test_object_mask_unions_the_instances_of_a_category(split):
    ball = summaries.object_mask(split, 3, "ball")  # bbox [14, 12, 4, 4] in a 24×20 image
    assert ball.shape == (20, 24)
    rows, columns = ball.nonzero(as_tuple=True)
    assert columns.min() >= 14 and columns.max() <= 18
    assert rows.min() >= 12 and rows.max() <= 16
    assert 9 <= int(ball.sum()) <= 25
    assert not summaries.object_mask(split, 3, "boat").any()
    with pytest.raises(ValueError, match="unknown category"):
        summaries.object_mask(split, 3, "zebra")


def test_object_word_mass_uniform_map_gets_the_area(split):
    grid = (4, 4)  # cells of 5×6 pixels
    words = [["a", "dog", "with", "a", "ball"], ["a", "boat", "and", "a", "dog"]]
    image_ids = [3, 12]  # image 12 has a dog but no boat
    scores = torch.ones(2, 5, 16)
    records = summaries.object_word_mass(scores, words, image_ids, split, grid)
    assert [(r.caption, r.step, r.category) for r in records] == [
        (0, 1, "dog"),
        (0, 4, "ball"),
        (1, 4, "dog"),
    ]
    for record in records:
        assert record.mass == pytest.approx(record.area)
        assert 0 < record.area < 1
    far = torch.zeros(2, 5, 16)
    far[:, :, 15] = 1.0  # bottom-right cell: rows 15–19, columns 18–23, no object there
    assert all(r.mass == 0 for r in summaries.object_word_mass(far, words, image_ids, split, grid))
    table = summaries.summarize_mass({"uniform": records})
    assert table["uniform"]["words"] == 3
    assert table["uniform"]["mean mass on object"] == pytest.approx(
        table["uniform"]["mean object area"]
    )
    with pytest.raises(ValueError, match="captions"):
        summaries.object_word_mass(scores[:1], words, image_ids, split, grid)


def test_word_share_and_mean_by_class():
    locations = torch.tensor([[[1.0, -1.0], [0.0, 0.0]]])  # (B=1, K=2, N=2)
    word_relevance = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2)
    share = summaries.word_share(locations, word_relevance)
    assert share[0, 0].item() == pytest.approx(1 / 3)
    assert math.isnan(share[0, 1].item())
    values = torch.tensor([[0.2, 0.4, 0.6, 9.0], [0.8, float("nan"), 1.0, 9.0]])
    words = [["a", "dog", "the"], ["an", "ball", "puppy"]]  # column 3 lies past the words
    by_class = summaries.mean_by_class(values, words)
    assert list(by_class) == ["object", "function"]
    assert by_class["object"] == (pytest.approx(0.7), 2)
    assert by_class["function"] == (pytest.approx(1.6 / 3), 3)


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_occluded_logits_equal_the_model_on_zeroed_features(kind):
    torch.manual_seed(0)
    if kind == "adaptive":
        model = AdaptiveAttentionCaptioner(12, 5, embed_dim=6, hidden_dim=8, attention_dim=4)
    else:
        model = MultiHeadCaptioner(12, 5, embed_dim=6, hidden_dim=8, heads=2, head_dim=3)
    model.train()  # occluded_logits must switch dropout off and restore the mode
    features = torch.rand(2, 9, 5)
    captions = torch.tensor([[2, 5, 7, 4, 3], [2, 6, 3, 0, 0]])
    occlude = torch.zeros(2, 3, 9, dtype=torch.bool)
    occlude[:, 1, [0, 4]] = True
    occlude[:, 2] = True
    occlude[1, 1, 8] = True
    result = summaries.occluded_logits(model, features, captions, occlude, batch_size=4)
    assert result.logits.shape == (2, 3, 4)
    assert model.training
    model.eval()
    with torch.no_grad():
        for image in range(2):
            for row in range(3):
                grid = features[image].clone()
                grid[occlude[image, row]] = 0
                caption = captions[image]
                logits = model(grid[None], caption[None]).logits[0]  # (K, V)
                expected = logits.gather(1, caption[1:, None]).squeeze(1)
                assert torch.allclose(result.logits[image, row], expected, atol=1e-6)
                log_probs = logits.log_softmax(-1).gather(1, caption[1:, None]).squeeze(1)
                assert torch.allclose(result.log_probs[image, row], log_probs, atol=1e-6)
    assert not torch.allclose(result.logits[0, 0], result.logits[0, 2])

    cells = summaries.top_cells(torch.rand(2, 4, 9), 2)  # (B, K, N)
    effect = summaries.deletion_effect(model, features, captions, cells)
    assert effect.shape == (2, 4)
    for image in range(2):
        for step in range(4):
            own = summaries.occluded_logits(
                model,
                features[image : image + 1],
                captions[image : image + 1],
                cells[image : image + 1, step : step + 1],
            ).logits[0, 0, step]
            expected = (own - result.logits[image, 0, step]).item()
            assert effect[image, step].item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="one row per word"):
        summaries.deletion_effect(model, features, captions, cells[:, :2])
    with pytest.raises(ValueError, match="occlude must be"):
        summaries.occluded_logits(model, features, captions, occlude[:1])


def test_top_cells_and_map_correlation():
    cells = summaries.top_cells(torch.tensor([[0.1, 0.5, 0.3]]), 2)
    assert cells.tolist() == [[False, True, True]]
    with pytest.raises(ValueError, match="count"):
        summaries.top_cells(torch.ones(3), 0)
    maps = torch.tensor([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0]])
    assert summaries.map_correlation(maps[:1], 2 * maps[:1]).item() == pytest.approx(1.0)
    assert summaries.map_correlation(maps[:1], -maps[:1]).item() == pytest.approx(-1.0)
    assert math.isnan(summaries.map_correlation(maps, maps)[1].item())


def test_object_deletion_effect_zeroes_the_cells_the_object_touches(split):
    torch.manual_seed(1)
    model = MultiHeadCaptioner(12, 5, embed_dim=6, hidden_dim=8, heads=2, head_dim=3).eval()
    grid = (4, 4)
    features = torch.rand(2, 16, 5)
    captions = torch.tensor([[2, 4, 5, 6, 3], [2, 7, 8, 3, 0]])
    words = [["a", "dog", "with", "ball"], ["dog", "boat", "<end>"]]  # image 12: no boat
    image_ids = [3, 12]
    records = summaries.object_word_mass(torch.rand(2, 4, 16), words, image_ids, split, grid)
    assert [(r.caption, r.step) for r in records] == [(0, 1), (0, 3), (1, 0)]
    effect = summaries.object_deletion_effect(
        model, features, captions, records, split, image_ids, grid
    )
    for record, value in zip(records, effect, strict=True):
        mask = summaries.object_mask(split, image_ids[record.caption], record.category)
        cells = summaries.cell_coverage(mask, grid) > 0
        rows = torch.stack([torch.zeros_like(cells), cells])[None]  # (1, 2, 16)
        row = slice(record.caption, record.caption + 1)
        logits = summaries.occluded_logits(model, features[row], captions[row], rows).logits
        expected = float(logits[0, 1, record.step] - logits[0, 0, record.step])
        assert float(value) == pytest.approx(expected, abs=1e-6)
        assert expected != 0
    assert summaries.object_deletion_effect(
        model, features, captions, [], split, image_ids, grid
    ).shape == (0,)


def test_rank_correlation_is_spearman():
    first = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    second = torch.tensor([[10.0, 20.0, 35.0, 1000.0], [4.0, 3.0, 2.0, 1.0]])
    # monotone but not linear: Spearman 1 where Pearson is below 1; reversed ranks: −1
    torch.testing.assert_close(
        summaries.rank_correlation(first, second), torch.tensor([1.0, -1.0], dtype=torch.float64)
    )
    assert summaries.map_correlation(first, second)[0] < 0.9
    # one swap among 4: 1 − 6·Σd²/(n(n²−1)) = 1 − 6·2/60 = 0.8
    swapped = torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert summaries.rank_correlation(first[0], swapped).item() == pytest.approx(0.8)
