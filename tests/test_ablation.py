"""Ablation (captionlib.evaluate.ablation) on hand-built scorers whose evidence is known."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from captionlib.evaluate.ablation import (
    ablate_patches,
    captioner_probabilities,
    feature_probabilities,
    image_ablation,
    patch_ranking,
    patch_scores,
    random_ranking,
    remove_words,
    word_ablation,
)
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.encoder import SmallVGG

SIZE, PATCH = 16, 4  # 16 patches of 4×4, row-major
EVIDENCE = (5, 10)  # the scorer only looks at these patches


def _weights() -> Tensor:
    weights = torch.zeros(3, SIZE, SIZE, dtype=torch.float64)
    for index in EVIDENCE:
        row, column = divmod(index, SIZE // PATCH)
        weights[:, row * PATCH : (row + 1) * PATCH, column * PATCH : (column + 1) * PATCH] = 0.1
    return weights


def _scorer(images: Tensor, caption_ids: Tensor) -> Tensor:
    """p(word) = sigmoid(Σ w ⊙ x) for every step of every caption: (N, T−1)."""
    logit = (images * _weights()).sum((1, 2, 3))  # (N,)
    return torch.sigmoid(logit).unsqueeze(1).expand(-1, caption_ids.shape[1] - 1)


def _images(batch: int = 2) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, SIZE, SIZE, dtype=torch.float64, generator=generator) + 0.5


def test_patch_geometry() -> None:
    maps = torch.zeros(1, SIZE, SIZE)
    maps[0, 4:8, 4:8] = 1.0  # patch 5
    maps[0, 0, 15] = 3.0  # patch 3
    scores = patch_scores(maps, PATCH)
    assert scores.shape == (1, 16)
    assert scores[0, 5] == 16.0 and scores[0, 3] == 3.0 and scores.sum() == 19.0
    assert patch_ranking(maps, PATCH)[0, :2].tolist() == [5, 3]
    ablated = ablate_patches(
        torch.ones(1, 3, SIZE, SIZE),
        torch.tensor([[5, 3] + list(range(14))]),
        PATCH,
        1,
        torch.tensor([0.0, 1.0, 2.0]),
    )
    assert ablated[0, :, 4:8, 4:8].tolist() == [[[0.0] * 4] * 4, [[1.0] * 4] * 4, [[2.0] * 4] * 4]
    assert int((ablated != 1).sum()) == 2 * 16  # channel 1 is filled with 1 = the old value
    with pytest.raises(ValueError, match="must divide"):
        patch_scores(maps, 5)
    with pytest.raises(ValueError, match="count must be"):
        ablate_patches(torch.ones(1, 3, SIZE, SIZE), torch.arange(16).unsqueeze(0), PATCH, 17)


def test_image_ablation_ranks_the_evidence_first() -> None:
    images = _images()
    caption_ids = torch.tensor([[2, 7, 8], [2, 8, 7]])
    relevance = (images * _weights()).sum(1)  # gradient × input of the linear scorer
    ranking = patch_ranking(relevance, PATCH)
    assert {tuple(sorted(row[:2].tolist())) for row in ranking} == {EVIDENCE}
    rankings = {
        "relevance": ranking,
        "random": random_ranking(2, 16, torch.Generator().manual_seed(3)),
    }

    def captions(ablated: Tensor) -> list[list[int]]:
        """Says word 7 while the evidence is there (logit > 1)."""
        logit = (ablated * _weights()).sum((1, 2, 3))
        return [[7, 8] if value > 1 else [8] for value in logit.tolist()]

    steps = torch.tensor([0, 1])  # word 7 in both captions
    results = image_ablation(
        _scorer, images, caption_ids, steps, rankings, PATCH, 2, None, captions
    )
    full = _scorer(images, caption_ids)[:, 0] - 0.5  # all evidence gone: sigmoid(0) = 0.5
    torch.testing.assert_close(results["relevance"].drop, full)
    assert results["relevance"].disappeared.tolist() == [True, True]
    assert bool((results["random"].drop < results["relevance"].drop).all())
    assert results["random"].disappeared.tolist() == [False, False]


def _prefix_scorer(images: Tensor, caption_ids: Tensor) -> Tensor:
    """p(word at step t) = sigmoid(#token 9 among caption_ids[:, :t+1] − 2): (N, T−1)."""
    counts = (caption_ids == 9).cumsum(1)[:, :-1].double()
    return torch.sigmoid(counts - 2)


def test_word_ablation_removes_the_relevant_words() -> None:
    caption_ids = torch.tensor([[2, 9, 4, 9, 4, 9, 5, 6]])  # positions 0 … 7
    steps = caption_ids.shape[1] - 1
    relevance = torch.zeros(1, steps, steps)
    relevance[0, :, [1, 3, 5]] = 1.0  # the three 9s carry the evidence
    relevance[0, :, 0] = 5.0  # <start> is never removed, however relevant
    mask = torch.ones(1, steps, dtype=torch.bool)
    generator = torch.Generator().manual_seed(1)
    images = torch.zeros(1, 3, 4, 4)
    results = word_ablation(_prefix_scorer, images, caption_ids, relevance, mask, generator)
    best = results["relevance"]
    assert best.position.tolist() == [6, 7]
    expected = torch.sigmoid(torch.tensor([1.0, 1.0], dtype=torch.float64)) - torch.sigmoid(
        torch.tensor([-2.0, -2.0], dtype=torch.float64)
    )
    torch.testing.assert_close(best.drop, expected)
    assert bool((results["random"].drop <= best.drop + 1e-12).all())
    mask[0, 6] = False  # padding is not scored
    masked = word_ablation(_prefix_scorer, images, caption_ids, relevance, mask, generator)
    assert masked["relevance"].position.tolist() == [6]


def test_remove_words() -> None:
    assert remove_words(torch.tensor([2, 5, 6, 7]), [1, 3]).tolist() == [2, 6]
    with pytest.raises(ValueError, match="start"):
        remove_words(torch.tensor([2, 5]), [0])


def test_captioner_probabilities_are_softmax_of_teacher_forced_logits() -> None:
    torch.manual_seed(0)
    model = AdaptiveAttentionCaptioner(12, 4, 6, 8, 8).eval()
    encoder = SmallVGG(channels=(2, 3, 4), convs_per_block=1, in_size=16).eval()
    images = torch.randn(1, 3, 16, 16)
    ids = torch.tensor([[2, 5, 6]])
    probabilities = captioner_probabilities(model, encoder)(images, ids)
    logits = model(encoder(images).flatten(2).transpose(1, 2), ids).logits  # (1, 2, V)
    expected = logits.softmax(-1)[0, [0, 1], [5, 6]].unsqueeze(0)
    torch.testing.assert_close(probabilities, expected.detach())


def test_per_caption_generators_baseline_switch_and_feature_probabilities() -> None:
    caption_ids = torch.tensor([[2, 9, 4, 9, 4, 9, 5, 6], [2, 4, 9, 4, 9, 9, 6, 5]])
    steps = caption_ids.shape[1] - 1
    relevance = torch.rand(2, steps, steps, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, steps, dtype=torch.bool)
    images = torch.zeros(2, 3, 4, 4)
    together = word_ablation(
        _prefix_scorer, images, caption_ids, relevance, mask,
        [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)],
    )  # fmt: skip
    for b, seed in enumerate((5, 6)):  # caption b alone, with its own generator: same picks
        alone = word_ablation(
            _prefix_scorer, images[b : b + 1], caption_ids[b : b + 1], relevance[b : b + 1],
            mask[b : b + 1], torch.Generator().manual_seed(seed),
        )  # fmt: skip
        rows = together["random"].image_index == b
        torch.testing.assert_close(together["random"].after[rows], alone["random"].after)
    without = word_ablation(
        _prefix_scorer, images, caption_ids, relevance, mask, torch.Generator(), baseline=False
    )
    assert list(without) == ["relevance"]
    torch.testing.assert_close(without["relevance"].after, together["relevance"].after)
    with pytest.raises(ValueError, match="1 generators for 2 captions"):
        word_ablation(_prefix_scorer, images, caption_ids, relevance, mask, [torch.Generator()])

    torch.manual_seed(0)
    model = AdaptiveAttentionCaptioner(12, 4, 6, 8, 8).train()
    encoder = SmallVGG(channels=(2, 3, 4), convs_per_block=1, in_size=16).eval()
    images = torch.randn(2, 3, 16, 16)
    ids = torch.tensor([[2, 5, 6], [2, 7, 8]])
    grid = encoder(images).flatten(2).transpose(1, 2)
    from_features = feature_probabilities(model)(grid, ids)
    assert model.training  # the mode is restored
    torch.testing.assert_close(
        from_features, captioner_probabilities(model.eval(), encoder)(images, ids)
    )


def test_ablate_patches_leaves_a_remainder_strip_alone() -> None:
    images = torch.ones(1, 3, 10, 9)  # 2×2 patches of 4 px; the last rows/columns are extra
    ablated = ablate_patches(images, torch.tensor([[3, 0, 1, 2]]), patch=4, count=1)
    assert ablated[0, :, 4:8, 4:8].eq(0).all()
    assert int(ablated.eq(0).sum()) == 3 * 16
