"""Batched beam search against a per-image reference, and the decoding-time options of
chapter 11: the caution knob and visual contrastive decoding (Leng et al., 2024)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as functional
from torch import Tensor

from captionlib.data.vocab import Vocabulary
from captionlib.generate import decode_features
from captionlib.models import Captioner, beam_search, greedy
from captionlib.models.decoding import (
    Caution,
    VisualContrast,
    contrast_logits,
    diffusion_noise,
    plausible_tokens,
)
from tests.test_decoding import END, START, real_features, real_model

torch.set_num_threads(1)


def reference_beam_search(
    model: Captioner, features: Tensor, beam_size: int, max_length: int
) -> list[tuple[list[int], float]]:
    """Beam search written from its definition, one image and one beam at a time: each step
    extends every live beam by every word and keeps the best `width` extensions, where
    `width` starts at the beam size and loses one for every beam that emitted <end> (those
    become candidates); the best candidate wins (the live beams if nothing ended)."""
    model.eval()
    results = []
    with torch.no_grad():
        for image in range(features.shape[0]):
            memory = model.prepare(features[image : image + 1])
            beams = [(0.0, [START], model.init_state(memory))]
            candidates: list[tuple[float, list[int]]] = []
            width = beam_size
            for _ in range(max_length):
                extensions = []
                for score, words, state in beams:
                    out = model.step(model.embedding(torch.tensor([words[-1]])), state, memory)
                    log_probs = functional.log_softmax(out.logits[0], -1).double()
                    log_probs[[Vocabulary.PAD_ID, START]] = float("-inf")
                    for token in range(model.vocab_size):
                        extension = (score + float(log_probs[token]), [*words, token], out.state)
                        extensions.append(extension)
                extensions.sort(key=lambda extension: -extension[0])
                beams = []
                for score, words, state in extensions[:width]:
                    if words[-1] == END:
                        candidates.append((score, words[1:-1]))
                    else:
                        beams.append((score, words, state))
                width = len(beams)
                if not beams:
                    break
            if not candidates:
                candidates = [(score, words[1:]) for score, words, _ in beams]
            score, words = max(candidates, key=lambda candidate: candidate[0])
            results.append((words, score))
    return results


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
@pytest.mark.parametrize(("beam_size", "max_length"), [(1, 6), (2, 5), (3, 6), (4, 8), (3, 2)])
def test_batched_beam_search_equals_the_per_image_reference(
    kind: str, beam_size: int, max_length: int
) -> None:
    model = real_model(kind)
    features = torch.cat([real_features(), 2 * real_features().flip(0)])  # 8 images
    decoded = beam_search(model, features, START, END, beam_size, max_length)
    expected = reference_beam_search(model, features, beam_size, max_length)
    assert [caption.token_ids for caption in decoded] == [words for words, _ in expected]
    for caption, (_, score) in zip(decoded, expected, strict=True):
        assert caption.log_prob == pytest.approx(score, abs=1e-9)
    if beam_size > 1 and max_length > 2:  # some beams ended early, others ran on
        assert any(len(caption.token_ids) < max_length for caption in decoded)


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_zero_caution_equals_plain_beam_search_exactly(kind: str) -> None:
    model = real_model(kind)
    features = real_features()
    plain = beam_search(model, features, START, END, 3, 6)
    cautious = beam_search(model, features, START, END, 3, 6, caution=Caution((4, 5, 6), 0.0))
    for ours, theirs in zip(plain, cautious, strict=True):
        assert ours.token_ids == theirs.token_ids and ours.log_prob == theirs.log_prob
        assert torch.equal(ours.alpha, theirs.alpha)


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_a_large_caution_removes_the_penalised_words(decode: str) -> None:
    model = real_model("multihead")
    features = real_features()

    def captions(caution: Caution | None) -> list[list[int]]:
        if decode == "greedy":
            decoded = greedy(model, features, START, END, 6, caution=caution)
        else:
            decoded = beam_search(model, features, START, END, 3, 6, caution=caution)
        return [caption.token_ids for caption in decoded]

    plain = captions(None)
    used = sorted({token for ids in plain for token in ids} - {END})
    penalised = tuple(used[:2])  # the two smallest ids the plain captions use
    assert any(token in ids for ids in plain for token in penalised)
    for ids in captions(Caution(penalised, 1e4)):
        assert not set(ids) & set(penalised)
    # a moderate λ lowers how often they occur, without forbidding them
    mild = captions(Caution(penalised, 1.0))

    def count(table: list[list[int]]) -> int:
        return sum(token in penalised for ids in table for token in ids)

    assert count(mild) <= count(plain)


def test_plausibility_keeps_tokens_within_the_ratio_of_the_top_token() -> None:
    probabilities = torch.tensor([[0.5, 0.3, 0.05, 0.15], [0.1, 0.2, 0.6, 0.1]])
    logits = probabilities.log() + 3.0  # any shift: only ratios matter
    assert plausible_tokens(logits, 0.25).tolist() == [
        [True, True, False, True],
        [False, True, True, False],
    ]
    # ratios 0.6 and 0.3 of the top token: 0.29 keeps both, 0.31 only the larger
    assert plausible_tokens(logits, 0.29)[0].tolist() == [True, True, False, True]
    assert plausible_tokens(logits, 0.31)[0].tolist() == [True, True, False, False]
    assert plausible_tokens(logits, 0.7)[0].tolist() == [True, False, False, False]
    assert plausible_tokens(logits, 0.0).all()


def test_contrast_logits_values() -> None:
    logits = torch.tensor([[2.0, 1.0, -3.0]])
    distorted = torch.tensor([[1.0, 2.0, 0.0]])
    contrasted = contrast_logits(logits, distorted, alpha=1.0, beta=0.1)
    # (1 + 1)·ℓ − 1·ℓ' on tokens with p ≥ 0.1·p_max: e^(−1) ≈ 0.37 stays, e^(−5) does not
    assert contrasted[0, :2].tolist() == [3.0, 0.0]
    assert contrasted[0, 2] == float("-inf")
    assert torch.equal(contrast_logits(logits, distorted, 0.0, 0.0), logits)


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_contrastive_decoding_with_weight_zero_is_plain_decoding(kind: str) -> None:
    model = real_model(kind)
    features = real_features()
    distorted = VisualContrast(features.flip(0), alpha=0.0, beta=0.0)
    plain = beam_search(model, features, START, END, 3, 6)
    for ours, theirs in zip(
        plain, beam_search(model, features, START, END, 3, 6, contrast=distorted), strict=True
    ):
        assert ours.token_ids == theirs.token_ids and ours.log_prob == theirs.log_prob
    # the constraint never removes the top token: greedy decoding is unchanged for any β
    constrained = VisualContrast(features.flip(0), alpha=0.0, beta=0.5)
    for ours, theirs in zip(
        greedy(model, features, START, END, 6),
        greedy(model, features, START, END, 6, contrast=constrained),
        strict=True,
    ):
        assert ours.token_ids == theirs.token_ids


def test_contrastive_greedy_step_is_the_contrast_of_two_model_steps() -> None:
    model = real_model("multihead")
    features = real_features()
    distorted = 0.3 * features.roll(1, dims=1)
    decoded = greedy(model, features, START, END, 1, contrast=VisualContrast(distorted, 1.0, 0.1))
    model.eval()
    with torch.no_grad():
        words = torch.full((features.shape[0],), START)
        logits = []
        for grid in (features, distorted):
            memory = model.prepare(grid)
            logits.append(
                model.step(model.embedding(words), model.init_state(memory), memory).logits
            )
    contrasted = 2 * logits[0] - logits[1]
    contrasted[~plausible_tokens(logits[0], 0.1)] = float("-inf")
    log_probs = functional.log_softmax(contrasted, -1)  # then <pad>, <start> are banned
    log_probs[:, [Vocabulary.PAD_ID, START]] = float("-inf")
    assert [caption.token_ids[0] for caption in decoded] == log_probs.argmax(-1).tolist()
    assert decoded[0].log_prob == pytest.approx(float(log_probs[0].max()), abs=1e-9)


def test_decode_features_reads_the_distorted_features_in_the_same_batches() -> None:
    model = real_model("adaptive")
    features = torch.cat([real_features(), real_features().flip(0)])
    contrast = VisualContrast(features.roll(3, dims=0), alpha=1.0, beta=0.1)
    vocab = Vocabulary([f"w{i}" for i in range(model.vocab_size - 4)])
    chunked = decode_features(model, features, vocab, 3, 6, batch_size=3, contrast=contrast)
    start, end = Vocabulary.START_ID, Vocabulary.END_ID
    whole = beam_search(model, features, start, end, 3, 6, contrast=contrast)
    assert [caption.token_ids for caption in chunked] == [caption.token_ids for caption in whole]
    plain = beam_search(model, features, start, end, 3, 6)
    assert [c.token_ids for c in whole] != [c.token_ids for c in plain]  # the contrast acts


def test_option_errors_name_the_field() -> None:
    model = real_model("adaptive")
    features = real_features()
    with pytest.raises(ValueError, match="Caution.penalty"):
        Caution((4,), -1.0)
    with pytest.raises(ValueError, match="Caution.word_ids"):
        greedy(model, features, START, END, caution=Caution((99,), 1.0))
    with pytest.raises(ValueError, match="VisualContrast.beta"):
        VisualContrast(features, 1.0, 1.5)
    with pytest.raises(ValueError, match="VisualContrast.alpha"):
        VisualContrast(features, math.nan, 0.1)
    with pytest.raises(ValueError, match="VisualContrast.features"):
        beam_search(model, features, START, END, contrast=VisualContrast(features[:2]))


def test_diffusion_noise_keeps_the_expected_share_of_the_image() -> None:
    images = torch.rand(
        512, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert torch.allclose(diffusion_noise(images, 0), images)
    noisy = diffusion_noise(images, 500, torch.Generator().manual_seed(1))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    kept = float(torch.prod(1 - betas[:500]))
    signal, rest = 2 * images - 1, 2 * noisy - 1
    # E[x_T · x_0] = √ᾱ E[x_0²] and Var(x_T − √ᾱ x_0) = 1 − ᾱ
    assert float((rest * signal).mean() / (signal**2).mean()) == pytest.approx(
        math.sqrt(kept), abs=0.02
    )
    assert float((rest - math.sqrt(kept) * signal).var()) == pytest.approx(1 - kept, rel=0.05)
    with pytest.raises(ValueError, match="step"):
        diffusion_noise(images, 1001)
