"""Diagnosing hallucinated object words from their explanations (chapter 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from captionlib.evaluate.diagnosis import (
    MODEL_METHOD,
    AucResult,
    ObjectWord,
    auc_table,
    best_statistic,
    case_candidates,
    context_share,
    diagnose,
    explanation_statistics,
    grounding_auc,
    label_object_words,
    map_statistics,
    model_statistics,
)
from captionlib.evaluate.hallucination import SynonymTable
from captionlib.explain.api import explain
from captionlib.explain.lrp import Explanation
from captionlib.explain.summaries import word_share
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.encoder import SmallVGG, to_grid
from captionlib.models.multihead import MultiHeadCaptioner
from captionlib.viz.hallucination import auc_statement, shift_statement

VOCAB, CHANNELS, GRID = 15, 6, 4


def _model() -> AdaptiveAttentionCaptioner:
    torch.manual_seed(0)
    return AdaptiveAttentionCaptioner(VOCAB, CHANNELS, 8, 12, 12).double().eval()


def _multihead() -> MultiHeadCaptioner:
    torch.manual_seed(0)
    return MultiHeadCaptioner(VOCAB, CHANNELS, 8, 12, heads=2, head_dim=4).double().eval()


def _encoder() -> SmallVGG:
    torch.manual_seed(1)
    return SmallVGG(channels=(4, 5, CHANNELS), convs_per_block=1, in_size=8 * GRID).double().eval()


def _images(count: int) -> Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(count, 3, 8 * GRID, 8 * GRID, dtype=torch.float64, generator=generator)


def test_auc_equals_hand_count() -> None:
    values = [0.9, 0.4, 0.3, 0.5, 0.2, 0.4, float("nan")]
    grounded = [True, True, False, False, False, True, False]
    # grounded {0.9, 0.4, 0.4} vs hallucinated {0.3, 0.5, 0.2}: pairs ranked right 3 + 2 + 2
    result = grounding_auc(values, grounded)
    assert (result.grounded, result.hallucinated) == (3, 3)
    assert result.auc == pytest.approx(7 / 9)
    # Hanley & McNeil at AUC 0.5, 10 + 10 words: Q1 = Q2 = 1/3,
    # variance = (0.25 + 9 · (1/3 − 1/4) · 2) / 100 = 0.0175
    assert AucResult(0.5, 10, 10).standard_error == pytest.approx(0.0175**0.5)
    tie = grounding_auc([0.4, 0.4], [True, False])
    assert tie.auc == pytest.approx(0.5)
    table = auc_table({"lrp": {"max": np.array(values), "mean": -np.array(values)}}, grounded)
    assert table["lrp"]["mean"].auc == pytest.approx(2 / 9)
    assert best_statistic(table["lrp"]) == ("max", pytest.approx(7 / 9))


def test_auc_errors_name_the_empty_class() -> None:
    with pytest.raises(ValueError, match="got 2 grounded and 0 hallucinated"):
        grounding_auc([0.1, 0.2, float("nan")], [True, True, False])
    with pytest.raises(ValueError, match="must be equal 1-D"):
        grounding_auc([0.1, 0.2], [True])


def test_map_statistics_equal_torch() -> None:
    maps = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    stats = map_statistics(maps)
    flat = maps.reshape(3, 20).double()
    torch.testing.assert_close(stats["mean"], flat.mean(1))
    torch.testing.assert_close(stats["positive_mean"], flat.clamp(min=0).sum(1) / 20)
    torch.testing.assert_close(stats["max"], flat.max(1).values)
    sorted_values = flat.sort(1).values
    # 20 values: the median interpolates halfway between the 10th and 11th smallest
    torch.testing.assert_close(stats["q50"], (sorted_values[:, 9] + sorted_values[:, 10]) / 2)
    torch.testing.assert_close(stats["q90"], torch.quantile(flat, 0.9, dim=1))
    with pytest.raises(ValueError, match="maps must be"):
        map_statistics(torch.ones(4))


def test_context_share_by_hand() -> None:
    maps = torch.tensor([[[3.0, -5.0], [1.0, 0.0]], [[-1.0, 0.0], [0.0, -2.0]]])
    objects = torch.tensor([[False, False], [True, True]]).expand(2, 2, 2)
    shares = context_share(maps, objects)
    assert shares[0].item() == pytest.approx(3 / 4)  # positive mass 3 outside, 1 on objects
    assert torch.isnan(shares[1])  # no positive relevance
    with pytest.raises(ValueError, match="differ"):
        context_share(maps, objects[:1])


def test_model_statistics_read_beta_and_probability() -> None:
    model = _model()
    features = torch.randn(2, GRID * GRID, CHANNELS, dtype=torch.float64)
    ids = torch.tensor([[2, 5, 7, 9, 3], [2, 6, 4, 3, 0]])
    stats = model_statistics(model, features, ids)
    out = model(features, ids)
    torch.testing.assert_close(stats["1-beta"], 1.0 - out.beta)
    probabilities = out.logits.softmax(-1)
    assert stats["probability"][0, 1].item() == pytest.approx(probabilities[0, 1, 7].item())
    assert stats["probability"][1, 2].item() == pytest.approx(probabilities[1, 2, 3].item())


def test_label_object_words() -> None:
    table = SynonymTable({"dog": [], "hot dog": [], "boat": ["ship"]})
    words = label_object_words(
        {4: "a ship and a hot dog", 9: "two dogs"},
        truth={4: {"boat"}, 9: {"dog"}},
        named={4: set(), 9: {"dog"}},
        synonyms=table,
    )
    assert words == [
        ObjectWord(4, 1, "ship", "boat", True, False),
        ObjectWord(4, 5, "hot dog", "hot dog", False, False),  # step of "dog", the head word
        ObjectWord(9, 1, "dogs", "dog", True, True),
    ]
    assert [word.hallucinated for word in words] == [False, True, False]
    with pytest.raises(KeyError, match="named has no entry for image id 9"):
        label_object_words({9: "a dog"}, {9: set()}, {}, table)


def test_explanation_statistics_select_words() -> None:
    generator = torch.Generator().manual_seed(3)
    heatmap = torch.randn(2, 3, 4, 4, generator=generator)
    locations = torch.randn(2, 3, 16, generator=generator)
    word_relevance = torch.randn(2, 3, 3, generator=generator).tril()
    explanation = Explanation(
        method="lrp",
        caption_ids=torch.zeros(2, 4, dtype=torch.long),
        words=torch.zeros(2, 3, dtype=torch.long),
        logits=torch.zeros(2, 3),
        mask=torch.ones(2, 3, dtype=torch.bool),
        locations=locations,
        grid_size=(4, 4),
        heatmap=heatmap,
        word_relevance=word_relevance,
    )
    rows, steps = torch.tensor([1, 0]), torch.tensor([2, 0])
    stats = explanation_statistics(explanation, rows, steps)
    assert stats["max"][0].item() == pytest.approx(heatmap[1, 2].max().item())
    expected = word_share(locations, word_relevance)
    assert stats["word_share"].tolist() == pytest.approx(
        [expected[1, 2].item(), expected[0, 0].item()]
    )
    assert "context_share" not in stats
    explanation.heatmap = None
    with pytest.raises(ValueError, match="has no heatmap"):
        explanation_statistics(explanation, rows, steps)


ALL_METHODS = ("lrp", "attention", "gradcam", "guided_gradcam", "gradient_x_input")


@pytest.mark.parametrize(
    ("kind", "methods"), [("A", ALL_METHODS), ("B", ("attnlrp", "lrp", "gradcam"))]
)
def test_diagnose_equals_explaining_full_captions(kind: str, methods: tuple[str, ...]) -> None:
    model = _model() if kind == "A" else _multihead()
    encoder = _encoder()
    images = _images(3)
    token_ids = [[5, 7, 9, 6, 8], [6, 4, 11], [12, 5, 7, 13]]
    words = [
        ObjectWord(10, 1, "x", "x", True, True),
        ObjectWord(10, 3, "y", "y", False, False),
        ObjectWord(20, 0, "x", "x", True, True),
        ObjectWord(30, 2, "y", "y", False, True),
        ObjectWord(30, 0, "x", "x", True, True),
    ]
    index = {10: 0, 20: 1, 30: 2}
    masks = {i: torch.zeros(8 * GRID, 8 * GRID, dtype=torch.bool) for i in index}
    masks[10][:8] = True
    masks[30][:, 4:20] = True
    stats = diagnose(model, encoder, images, token_ids, words, index, methods, masks, chunk_size=2)
    assert set(stats) == {MODEL_METHOD, *methods}
    assert set(stats[methods[0]]) == {
        *map_statistics(torch.ones(1, 2, 2)),
        "word_share",
        "context_share",
    }
    ids = torch.tensor([[2, *caption, *[0] * (5 - len(caption)), 3] for caption in token_ids])
    rows = torch.tensor([index[word.image_id] for word in words])
    steps = torch.tensor([word.step for word in words])
    objects = torch.stack([masks[word.image_id] for word in words])
    for method in methods:
        full = explain(model, encoder, images, ids, method=method)
        expected = explanation_statistics(full, rows, steps, objects)
        assert set(stats[method]) == set(expected)
        for name, values in expected.items():
            np.testing.assert_allclose(
                stats[method][name], values.numpy(), rtol=1e-8, atol=1e-12, err_msg=method + name
            )
    probabilities = model(to_grid(encoder(images)), ids).logits.softmax(-1)
    expected_probability = probabilities[rows, steps, ids[rows, steps + 1]]
    np.testing.assert_allclose(stats[MODEL_METHOD]["probability"], expected_probability.detach())
    if kind == "A":
        beta = model(to_grid(encoder(images)), ids).beta
        np.testing.assert_allclose(
            stats[MODEL_METHOD]["1-beta"], (1.0 - beta[rows, steps]).detach()
        )
    with pytest.raises(ValueError, match="no object words"):
        diagnose(model, encoder, images, token_ids, [], index, methods)


def test_case_candidates_order_and_filter() -> None:
    words = [
        ObjectWord(1, 1, "boat", "boat", False, False),
        ObjectWord(1, 4, "dog", "dog", True, True),
        ObjectWord(2, 2, "boat", "boat", False, False),
        ObjectWord(3, 2, "ball", "ball", False, False),
    ]
    values = np.array([0.2, 0.9, 0.7, np.nan])
    assert case_candidates(words, values, "boat") == [2, 0]
    assert case_candidates(words, values) == [2, 0]  # the NaN "ball" is left out
    assert case_candidates(words, values, hallucinated=False) == [1]
    with pytest.raises(ValueError, match="4 words but 2 values"):
        case_candidates(words, values[:2])


def test_generated_statements_follow_the_numbers() -> None:
    scores = {
        "Captioner A": {"test": {"CHAIRi": 0.051}, "shifted": {"CHAIRi": 0.388}},
        "Captioner B": {"test": {"CHAIRi": 0.101}, "shifted": {"CHAIRi": 0.099}},
    }
    assert shift_statement(scores, "CHAIRi") == (
        "Captioner A: CHAIRi rises from 0.05 (test) to 0.39 (shifted). "
        "Captioner B: CHAIRi is unchanged at 0.10."
    )
    with pytest.raises(ValueError, match="no 'CHAIRs' for split 'test'"):
        shift_statement(scores, "CHAIRs")
    tables = {
        "A": {
            "lrp": {"max": AucResult(0.80, 90, 10), "mean": AucResult(0.55, 90, 10)},
            "model": {"1-beta": AucResult(0.12, 90, 10)},
        }
    }
    error = AucResult(0.12, 90, 10).standard_error
    assert auc_statement(tables) == (
        "On A (90 grounded, 10 hallucinated words), the best separation is the model's "
        f"1 − β: AUC 0.12 ± {error:.2f} (s.e.), larger for hallucinated words."
    )
    assert "LRP's max: AUC 0.80" in auc_statement(tables, exclude=["1-beta"])
