"""Does the explanation depend on the word? The chapter-8 study (captionlib.explain
.word_dependence) and its figure (captionlib.viz.word_dependence), on tiny float64 models."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from test_lrp import _captioner, _encoder, _images  # noqa: E402

from captionlib.data.coco import load_coco_split  # noqa: E402
from captionlib.explain.summaries import (  # noqa: E402
    ObjectWordMass,
    content_word_mask,
    cross_word_correlation,
    object_word_mass,
    sign_shares,
)
from captionlib.explain.word_dependence import (  # noqa: E402
    WORD_DEPENDENCE_METHODS,
    WordDependence,
    content_prefix,
    pixel_explanations,
    word_dependence,
)
from captionlib.viz.style import MAX_WIDTH  # noqa: E402
from captionlib.viz.word_dependence import (  # noqa: E402
    method_word_grid,
    word_dependence_statement,
    word_dependence_table,
)

# the tiny vocabulary's ids 4 … 19 standing for words; a caption needs ≥ 2 content words
WORDS = [
    ["a", "red", "boat", "on", "the", "water", "<end>"],  # content words 1, 2, 5
    ["a", "dog", "on", "the", "grass", "<end>", "<pad>"],  # 1, 4
    ["there", "is", "a", "dog", "<end>", "<pad>", "<pad>"],  # one content word: skipped
]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _study_inputs() -> tuple[torch.Tensor, list[list[str]]]:
    generator = torch.Generator().manual_seed(9)
    ids = torch.randint(4, 20, (3, 8), generator=generator)
    ids[:, 0] = 2
    words = [[w for w in caption if w != "<pad>"] for caption in WORDS]
    return ids, words


def test_content_prefix_counts_words_up_to_the_last_content_word() -> None:
    keep = content_word_mask([row[:6] for row in WORDS], 6)
    assert content_prefix(keep).tolist() == [6, 5, 4]
    assert content_prefix(torch.zeros(1, 4, dtype=torch.bool)).tolist() == [0]


@pytest.mark.parametrize("kind", ["A", "B"])
def test_study_equals_the_correlation_of_full_caption_maps(kind: str) -> None:
    model, encoder = _captioner(kind), _encoder()
    images = _images(3)
    ids, words = _study_inputs()
    study = word_dependence(model, encoder, images, ids, words, batch_size=1)
    full = pixel_explanations(model, encoder, images, ids)
    keep = content_word_mask(words, ids.shape[1] - 1)
    for method in WORD_DEPENDENCE_METHODS:
        heatmap = full[method].heatmap
        assert heatmap is not None
        expected = cross_word_correlation(heatmap, keep)
        torch.testing.assert_close(study.correlation[method][:2], expected[:2], equal_nan=True)
        _, negative = sign_shares(heatmap.flatten(2))  # (B, K)
        for row in range(2):
            share = negative[row][keep[row]].nanmean()  # an all-zero map has no sign
            torch.testing.assert_close(study.negative[method][row], share, equal_nan=True)
        assert math.isnan(study.negative[method][2].item())
        assert math.isnan(study.correlation[method][2].item())
        assert study.mass[method] == []
    assert study.content_words.tolist() == [3, 2, 1]
    # the contrastive start changes LRP's maps
    assert not torch.allclose(
        study.correlation["lrp"][:2], study.correlation["contrastive_lrp"][:2]
    )


def test_study_checks_its_arguments() -> None:
    model, encoder = _captioner("A"), _encoder()
    ids, words = _study_inputs()
    with pytest.raises(ValueError, match="word lists"):
        word_dependence(model, encoder, _images(3), ids, words[:2])
    with pytest.raises(ValueError, match="both split and image_ids"):
        word_dependence(model, encoder, _images(3), ids, words, image_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="methods must be in"):
        pixel_explanations(model, encoder, _images(3), ids, methods=("attention",))


def test_method_word_grid_fits_the_column() -> None:
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    maps = {"lrp": torch.randn(3, 16, 16), "contrastive LRP": [torch.randn(16, 16)] * 3}
    figure = method_word_grid(image, ["dog", "ball", "grass"], maps, title="captioner A")
    assert figure.get_size_inches()[0] <= MAX_WIDTH
    panels = [ax for ax in figure.axes if ax.get_images()]
    assert len(panels) == 8  # two rows of four: the image and three words
    labels = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]
    assert labels == ["LRP", "contrastive LRP"]
    sizes = [text.get_fontsize() for text in figure.findobj(Text) if text.get_text()]
    assert min(sizes) >= 9
    with pytest.raises(ValueError, match="1 to 3 words"):
        method_word_grid(image, ["a", "b", "c", "d"], {"lrp": torch.randn(4, 16, 16)})
    with pytest.raises(ValueError, match="2 maps for 3 words"):
        method_word_grid(image, ["a", "b", "c"], {"lrp": torch.randn(2, 16, 16)})


def test_study_measures_object_words_on_their_objects(tiny_coco) -> None:  # type: ignore[no-untyped-def]
    split = load_coco_split(tiny_coco["captions"], tiny_coco["images"], tiny_coco["instances"])
    image_ids = [7, 5]  # a boat; a boat and a dog
    model, encoder = _captioner("A"), _encoder()
    images = torch.randn(2, 3, 20, 24, dtype=torch.float64)  # the tiny split's image size
    words = [["a", "red", "boat", "on", "the", "water"], ["a", "dog", "and", "a", "boat"]]
    ids = torch.randint(4, 20, (2, 7), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = 2
    study = word_dependence(model, encoder, images, ids, words, split, image_ids)
    full = pixel_explanations(model, encoder, images, ids, methods=("lrp", "gradcam"))
    for method, result in full.items():
        assert result.heatmap is not None
        expected = object_word_mass(result.heatmap.flatten(2), words, image_ids, split, (20, 24))
        found = study.mass[method]
        assert [(r.caption, r.step, r.word) for r in found] == [
            (0, 2, "boat"),
            (1, 1, "dog"),
            (1, 4, "boat"),
        ]
        assert [(r.caption, r.step) for r in expected] == [(r.caption, r.step) for r in found]
        for record, reference in zip(found, expected, strict=True):
            assert record.mass == pytest.approx(reference.mass, rel=1e-9, abs=1e-12, nan_ok=True)
            assert record.area == reference.area


def _hand_made_study(contrastive: list[float]) -> WordDependence:
    def values(numbers: list[float]) -> torch.Tensor:
        return torch.tensor(numbers, dtype=torch.float64)

    def records(masses: list[float]) -> list[ObjectWordMass]:
        return [ObjectWordMass(b, 1, "boat", "boat", m, 0.05) for b, m in enumerate(masses)]

    return WordDependence(
        correlation={
            "lrp": values([0.8, 0.9, 0.85, 0.85, math.nan]),
            "contrastive_lrp": values([*contrastive, math.nan]),
            "gradient": values([0.3, 0.4, 0.5, 0.4, math.nan]),
            "guided_backprop": values([0.45, 0.35, 0.4, 0.4, math.nan]),  # a tie
        },
        negative={
            "lrp": values([0.0] * 4 + [math.nan]),
            "contrastive_lrp": values([0.3] * 4 + [math.nan]),
            "gradient": values([0.5] * 4 + [math.nan]),
            "guided_backprop": values([0.5] * 4 + [math.nan]),
        },
        mass={
            "lrp": records([0.3, 0.4]),
            "contrastive_lrp": records([0.35, 0.45, math.nan]),
            "gradient": records([0.1, 0.2]),
            "guided_backprop": records([0.1, 0.2]),
        },
        content_words=torch.tensor([2, 3, 2, 2, 1]),
    )


def test_word_dependence_table_rows() -> None:
    table = word_dependence_table(_hand_made_study([0.0, 0.1, -0.1, 0.0]))
    assert table.columns[0] == "method" and len(table.columns) == 6
    assert [row[0] for row in table.rows] == [
        "LRP",
        "contrastive LRP",
        "gradient",
        "guided backprop",
    ]
    lrp, contrastive = table.rows[0], table.rows[1]
    assert lrp[1:] == ["0.85 ± 0.02", 4, "0.00 ± 0.00", "0.35 ± 0.05", 2]
    assert contrastive[2] == 4 and contrastive[5] == 2  # NaN correlations and masses left out


def test_word_dependence_statement_states_the_finding() -> None:
    study = _hand_made_study([0.0, 0.1, -0.1, 0.0])
    assert word_dependence_statement({"A": study, "B": study}) == (
        "On both captioners LRP's maps of different content words correlate clearly more than "
        "the plain gradient's (0.40 on A and 0.40 on B): LRP 0.85 on A and 0.85 on B. These "
        "maps hardly depend on the word. The contrastive start moves LRP's correlation from "
        "0.85 to 0.00 on A and from 0.85 to 0.00 on B: clearly below the plain gradient's. "
        "Its price is a signed map: the share of its |R| that is negative is 30% on A and 30% "
        "on B (LRP: 0% on A and 0% on B); it puts as much of its positive relevance on the "
        "named object as LRP (0.40 on A and 0.40 on B; LRP: 0.35 on A and 0.35 on B)."
    )


def test_word_dependence_statement_without_an_insensitive_method() -> None:
    study = _hand_made_study([0.35, 0.45, 0.4, 0.4])
    study.correlation["lrp"] = study.correlation["gradient"].clone()
    text = word_dependence_statement({"A": study})
    assert text.startswith(
        "No method's maps of different content words correlate clearly more than the plain "
        "gradient's on the captioner (0.40 on A)."
    )
    assert "from 0.40 to 0.40 on A: within the error of the plain gradient's." in text
    with pytest.raises(ValueError, match="lacks"):
        word_dependence_statement({"A": study}, reference="gradcam")
