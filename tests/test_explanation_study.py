"""The chapter-9 study (captionlib.evaluate.explanation_study) against direct computations.

Tiny float64 captioners (weights drawn with a large scale so that captions vary with the
image) on a tiny CNN; every number the study reports is recomputed here through the public
explainers and the localisation / ablation functions on the full caption.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from captionlib.data.vocab import Vocabulary
from captionlib.evaluate import ablation, localization
from captionlib.evaluate.explanation_study import (
    StudyConfig,
    image_drops,
    localization_summaries,
    localization_values,
    run_study,
    study_methods,
    vanished,
    word_drops,
)
from captionlib.explain.api import captions_to_ids, explain
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.decoding import beam_search
from captionlib.models.encoder import SmallVGG, to_grid
from captionlib.models.multihead import MultiHeadCaptioner

VOCABULARY = Vocabulary.build(["a boat and a dog near a ball on the grass with a tree"])
OBJECTS = {"tree": "tree", "with": "boat", "ball": "ball", "the": "dog"}  # word → category
SIZE, IMAGES = 32, 5
CONFIG = StudyConfig(max_length=10, count=12, chunk_size=2)


def _category(word: str) -> str | None:
    return OBJECTS.get(word)


def _captioner(kind: str) -> Captioner:
    vocab = len(VOCABULARY)
    if kind == "A":
        torch.manual_seed(0)
        model: Captioner = AdaptiveAttentionCaptioner(vocab, 6, 8, 12, 12)
    else:
        torch.manual_seed(1)
        model = MultiHeadCaptioner(vocab, 6, 8, 12, heads=2, head_dim=4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.6)
    return model.double().eval()


def _encoder() -> SmallVGG:
    torch.manual_seed(1)
    return SmallVGG(channels=(4, 5, 6), convs_per_block=1, in_size=SIZE).double().eval()


def _images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(IMAGES, 3, SIZE, SIZE, dtype=torch.float64, generator=generator)


def _annotations() -> list[dict[str, localization.ObjectAnnotation]]:
    """Image b holds every category but one (so some named objects are absent)."""
    generator = torch.Generator().manual_seed(3)
    categories = sorted(set(OBJECTS.values()))
    annotations = []
    for b in range(IMAGES):
        objects = {}
        for index, category in enumerate(categories):
            if index == b % len(categories):
                continue
            x, y = (int(v) for v in torch.randint(0, SIZE - 10, (2,), generator=generator))
            boxes = [[x, y, 10, 8], [SIZE - 9 - x // 2, 2, 8, 6]][: 1 + (b + index) % 2]
            mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            for bx, by, bw, bh in boxes:
                mask[by : by + bh, bx : bx + bw] = True
            objects[category] = localization.ObjectAnnotation(boxes=boxes, mask=mask)
        annotations.append(objects)
    return annotations


def _study(kind: str, config: StudyConfig = CONFIG) -> dict:
    return run_study(
        _captioner(kind),
        _encoder(),
        _images(),
        [100 + b for b in range(IMAGES)],
        _annotations(),
        VOCABULARY,
        _category,
        config,
    )


def _own_captions(model: Captioner, encoder: SmallVGG, images: torch.Tensor) -> torch.Tensor:
    grid = to_grid(encoder.features(images))
    decoded = beam_search(model, grid, 2, 3, CONFIG.beam_size, CONFIG.max_length)
    return captions_to_ids(decoded, 2, 3, 0, CONFIG.max_length)


@pytest.fixture(scope="module", params=["A", "B"])
def study(request: pytest.FixtureRequest) -> tuple[str, dict]:
    return request.param, _study(request.param)


def test_localization_equals_direct_scores_on_the_full_caption(study: tuple[str, dict]) -> None:
    kind, result = study
    model, encoder, images = _captioner(kind), _encoder(), _images()
    caption_ids = _own_captions(model, encoder, images)
    annotations = _annotations()
    located = result["localization"]
    assert located["pairs"], "the tiny captions must name present objects"
    assert set(located["methods"]) == set(study_methods(model))
    for method in study_methods(model):
        full = explain(model, encoder, images, caption_ids, method=method)
        maps = localization.explanation_maps(full.pixels, full.heatmap)  # (B, K, H, W)
        for index, pair in enumerate(located["pairs"]):
            b = pair["image_id"] - 100
            annotation = annotations[b][pair["category"]]
            steps = [
                t
                for t in range(full.words.shape[1])
                if bool(full.mask[b, t])
                and _category(VOCABULARY.id_to_word(int(full.words[b, t]))) == pair["category"]
            ]
            expected = np.max(
                [localization.correctness(maps[b, t], annotation.boxes) for t in steps], axis=0
            )
            values = located["methods"][method]
            np.testing.assert_allclose(values["correctness"][index], expected, atol=1e-8)
            energy = max(localization.energy_in_mask(maps[b, t], annotation.mask) for t in steps)
            assert values["energy"][index] == pytest.approx(energy, abs=1e-8)
            pointing = any(localization.pointing_game(maps[b, t], annotation.mask) for t in steps)
            assert values["pointing"][index] == pointing


def test_ablations_equal_the_ablation_module_on_the_full_caption(study: tuple[str, dict]) -> None:
    kind, result = study
    model, encoder, images = _captioner(kind), _encoder(), _images()
    caption_ids = _own_captions(model, encoder, images)
    patches = result["image_ablation"]
    rows = torch.tensor([item["image_id"] - 100 for item in patches["words"]])
    steps = torch.tensor([item["step"] for item in patches["words"]])
    probability = ablation.captioner_probabilities(model, encoder)
    full = explain(model, encoder, images, caption_ids, method="lrp")
    ranking = ablation.patch_ranking(full.heatmap[rows, steps], CONFIG.patch)
    direct = ablation.image_ablation(
        probability,
        images[rows],
        caption_ids[rows],
        steps,
        {"lrp": ranking},
        CONFIG.patch,
        CONFIG.count,
    )["lrp"]
    np.testing.assert_allclose(patches["before"], direct.before.numpy(), atol=1e-10)
    np.testing.assert_allclose(patches["methods"]["lrp"]["after"], direct.after.numpy(), atol=1e-8)
    np.testing.assert_allclose(image_drops(result)["lrp"], direct.drop.numpy(), atol=1e-8)

    deleted = result["word_ablation"]
    assert deleted["rows"], "the tiny captions must reach position 6"
    generators = [
        torch.Generator().manual_seed(CONFIG.seed * 1_000_003 + 2 * b + 1) for b in range(IMAGES)
    ]
    words = ablation.word_ablation(
        probability, images, caption_ids, full.word_relevance, full.mask, generators
    )
    assert [r["image_id"] - 100 for r in deleted["rows"]] == words["relevance"].image_index.tolist()
    assert [r["position"] for r in deleted["rows"]] == words["relevance"].position.tolist()
    np.testing.assert_allclose(word_drops(result)["lrp"], words["relevance"].drop, atol=1e-8)
    np.testing.assert_allclose(word_drops(result)["random"], words["random"].drop, atol=1e-8)


def test_chunked_run_equals_unchunked_and_round_trips_json(study: tuple[str, dict]) -> None:
    kind, chunked = study
    whole = _study(kind, StudyConfig(max_length=10, count=12, chunk_size=IMAGES))
    assert json.loads(json.dumps(chunked)) == chunked
    assert chunked["config"] == whole["config"]  # chunk_size is not part of the result
    assert chunked["captions"] == whole["captions"]
    assert chunked["localization"]["pairs"] == whole["localization"]["pairs"]
    for name in ("image_ablation", "word_ablation"):
        assert chunked[name].keys() == whole[name].keys()
    assert (
        chunked["image_ablation"]["methods"]["random"]["disappeared"]
        == (whole["image_ablation"]["methods"]["random"]["disappeared"])
    )
    for measure in ("pointing", "energy", "correctness@0.5"):
        for method, values in localization_values(chunked, measure).items():
            np.testing.assert_allclose(values, localization_values(whole, measure)[method])
    for read in (image_drops, word_drops):
        for method, values in read(chunked).items():
            np.testing.assert_allclose(values, read(whole)[method], atol=1e-10)


def test_readers_summarise_the_stored_items(study: tuple[str, dict]) -> None:
    _, result = study
    summaries = localization_summaries(result)
    for method, summary in summaries.items():
        scores = np.asarray(result["localization"]["methods"][method]["correctness"])
        np.testing.assert_allclose(summary.correctness, scores.mean(0))
        assert summary.pairs == len(result["localization"]["pairs"])
        np.testing.assert_allclose(
            localization_values(result, "correctness@0.5")[method], scores[:, 5]
        )
    present = np.asarray(result["image_ablation"]["in_clean_caption"])
    for method, gone in vanished(result).items():
        stored = np.asarray(result["image_ablation"]["methods"][method]["disappeared"])
        np.testing.assert_array_equal(gone, stored[present])
    with pytest.raises(ValueError, match="not one of the thresholds"):
        localization_values(result, "correctness@0.55")


def test_bad_input() -> None:
    model, encoder, images = _captioner("A"), _encoder(), _images()
    with pytest.raises(ValueError, match="must match"):
        run_study(model, encoder, images, [1, 2], _annotations(), VOCABULARY, _category)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        run_study(model, encoder, images[:, 0], [1], [{}], VOCABULARY, _category)
    with pytest.raises(ValueError, match="chunk_size"):
        run_study(
            model, encoder, images, list(range(IMAGES)), _annotations(), VOCABULARY, _category,
            StudyConfig(chunk_size=0),
        )  # fmt: skip
