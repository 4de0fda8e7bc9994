"""LRP-inference fine-tuning (captionlib.finetune, chapter 11): weights, losses, training loop."""

from __future__ import annotations

import copy

import pytest
import torch

from captionlib.data.vocab import Vocabulary
from captionlib.finetune import (
    STOP_WORDS,
    FinetuneConfig,
    control_loss,
    finetune_captioner,
    image_caption_batches,
    lrp_ift_loss,
    lrp_ift_weights,
    stop_word_ids,
)
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.encoder import SmallVGG
from captionlib.models.multihead import MultiHeadCaptioner

VOCAB = Vocabulary(["boat", "water", "a", "on", "dog", "ball", "the", "red"])  # 12 ids
EPSILON = 0.01


def small_model(kind: str, dropout: float = 0.0):
    torch.manual_seed(0)
    if kind == "adaptive":
        model = AdaptiveAttentionCaptioner(
            len(VOCAB), feature_dim=3, embed_dim=5, hidden_dim=6, attention_dim=4, dropout=dropout
        )
    else:
        model = MultiHeadCaptioner(
            len(VOCAB), feature_dim=3, embed_dim=5, hidden_dim=6, heads=2, head_dim=3,
            dropout=dropout, attention_dropout=0.0,
        )  # fmt: skip
    return model.double()


def batch():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(3, 4, 3, generator=generator, dtype=torch.float64)  # (B, N, C)
    captions = torch.randint(4, len(VOCAB), (3, 6), generator=generator)
    captions[:, 0] = Vocabulary.START_ID
    captions[0, 4:] = torch.tensor([Vocabulary.END_ID, Vocabulary.PAD_ID])  # a padded caption
    return features, captions


def reference_weights(model, first, second, words, stop_ids, joint=False):
    """1 + R / max|R| with the ε-rule written out: output layer, then the sum x = first + second."""
    weight, bias = model.output.weight, model.output.bias  # (V, D), (V,)

    def sign(v):
        return torch.where(v >= 0, 1.0, -1.0).double()

    x = first + second  # (B, T, D)
    z = x @ weight.T + bias  # (B, T, V)
    z_k = z.gather(-1, words.unsqueeze(-1))  # (B, T, 1), the start relevance
    w_k = weight[words]  # (B, T, D)
    relevance_x = x * w_k / (z_k + EPSILON * sign(z_k)) * z_k
    share = relevance_x / (x + EPSILON * sign(x))
    relevance = (first * share, second * share)
    scales = [r.abs().amax(-1, keepdim=True) for r in relevance]
    if joint:
        scales = [torch.maximum(*scales)] * 2
    stop = torch.isin(words, stop_ids).unsqueeze(-1)
    return [
        torch.where(stop, 1.0, 1 + r / s).double() for r, s in zip(relevance, scales, strict=True)
    ]


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
@pytest.mark.parametrize("normalization", ["separate", "joint"])
def test_weights_equal_explicit_epsilon_rule(kind, normalization):
    model = small_model(kind).eval()
    features, captions = batch()
    with torch.no_grad():
        output = model(features, captions)
    first, second = output.readout
    words = torch.randint(0, len(VOCAB), captions[:, 1:].shape, generator=torch.Generator())
    words[0, :2] = torch.tensor([VOCAB.word_to_id("a"), Vocabulary.END_ID])
    words[1, 1] = VOCAB.word_to_id("boat")
    stop_ids = torch.tensor([0, 1, 2, 3, VOCAB.word_to_id("a")])
    weights = lrp_ift_weights(model, output.readout, words, stop_ids, EPSILON, normalization)
    expected = reference_weights(model, first, second, words, stop_ids, normalization == "joint")
    for got, want in zip(weights, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        assert got.shape == first.shape
        assert not got.requires_grad
    content = ~torch.isin(words, stop_ids)
    assert content.any()
    spread = torch.stack([(w - 1).abs().amax(-1) for w in weights])  # (2, B, T-1)
    assert spread[:, ~content].eq(0).all()
    if normalization == "separate":  # each term reaches 0 or 2 in its strongest dimension
        torch.testing.assert_close(spread[:, content], torch.ones_like(spread[:, content]))
    else:
        torch.testing.assert_close(spread.amax(0)[content], torch.ones(int(content.sum())).double())
    assert all(((w >= 0) & (w <= 2)).all() for w in weights)
    own = output.logits.argmax(-1)  # None: the model's own prediction (eval mode: no dropout)
    by_default = lrp_ift_weights(model, output.readout, None, stop_ids, EPSILON, normalization)
    explicit = lrp_ift_weights(model, output.readout, own, stop_ids, EPSILON, normalization)
    assert all(torch.equal(a, b) for a, b in zip(by_default, explicit, strict=True))


def test_weights_are_exactly_one_for_stop_words_and_specials():
    model = small_model("adaptive").eval()
    features, captions = batch()
    with torch.no_grad():
        output = model(features, captions)
    stop_ids = stop_word_ids(VOCAB)
    named = {VOCAB.id_to_word(int(i)) for i in stop_ids}
    assert named == {"<pad>", "<unk>", "<start>", "<end>", "a", "on", "the"}
    assert {"a", "on", "the"} <= STOP_WORDS and not {"boat", "dog", "red"} & STOP_WORDS
    cycle = stop_ids.repeat(10)[: captions[:, :-1].numel()].view(captions[:, :-1].shape)
    weights = lrp_ift_weights(model, output.readout, cycle, stop_ids)
    assert all(torch.equal(w, torch.ones_like(w)) for w in weights)
    content = torch.full_like(cycle, VOCAB.word_to_id("boat"))
    weights = lrp_ift_weights(model, output.readout, content, stop_ids)
    assert not torch.equal(weights[0], torch.ones_like(weights[0]))


def hand_cross_entropy(logits, captions):
    targets = captions[:, 1:]
    mask = targets != Vocabulary.PAD_ID
    log_p = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(log_p * mask).sum() / mask.sum()


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_loss_is_ce_of_reweighted_plus_ce_of_plain_logits(kind):
    model = small_model(kind, dropout=0.5).train()  # y has dropout, ỹ has none
    features, captions = batch()
    torch.manual_seed(3)
    output = model(features, captions)
    stop_ids = stop_word_ids(VOCAB)
    loss, plain = lrp_ift_loss(model, output, captions, stop_ids, EPSILON)
    first, second = (term.detach() for term in output.readout)
    with torch.no_grad():
        words = model.output(first + second).argmax(-1)  # prediction without dropout
    w_first, w_second = reference_weights(model, first, second, words, stop_ids)
    tilde = model.output(w_first * output.readout[0] + w_second * output.readout[1])
    expected_plain = hand_cross_entropy(output.logits, captions)
    expected = hand_cross_entropy(tilde, captions) + expected_plain
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(plain, expected_plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(control_loss(output, captions), expected_plain)
    assert not torch.allclose(loss, 2 * plain)  # the re-weighting changes the loss
    loss.backward()  # gradients reach the readout through both terms
    assert model.output.weight.grad is not None


def tiny_setup(kind):
    torch.manual_seed(0)
    encoder = SmallVGG(channels=(2, 2, 3), convs_per_block=1, in_size=16)  # grid 2×2, C = 3
    model = small_model(kind, dropout=0.3).float()
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(2)
    captions = [
        [
            torch.tensor(
                [Vocabulary.START_ID, *torch.randint(4, 12, (n,), generator=generator).tolist(), 3]
            )
            for n in (3, 4, 5)
        ]
        for _ in range(6)
    ]
    return model, encoder, images, captions


def to_float(images):
    return images.float() / 255.0 - 0.5


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_finetuning_updates_encoder_and_decoder_and_methods_see_same_batches(kind):
    model, encoder, images, captions = tiny_setup(kind)
    runs = {}
    for method in ("control", "lrp"):
        seen = []
        source = image_caption_batches(images, captions, 4, 2, seed=5, transform=to_float)

        def recording(epoch, source=source, seen=seen):
            for item in source(epoch):
                seen.append(item)
                yield item

        run_model, run_encoder = copy.deepcopy(model), copy.deepcopy(encoder)
        for parameter in run_encoder.parameters():
            parameter.requires_grad_(False)  # as the recipes load it: fine-tuning turns it on
        config = FinetuneConfig(method=method, epochs=2, lr=1e-2, encoder_lr=1e-2, seed=7)
        history = finetune_captioner(
            run_model, run_encoder, recording, config, progress=False, vocabulary=VOCAB
        )
        runs[method] = (seen, history, run_model, run_encoder)
        assert len(history.loss) == 4 and len(history.seconds) == 2
        for before, after in zip(encoder.parameters(), run_encoder.parameters(), strict=True):
            assert not torch.equal(before, after)
        assert not torch.equal(model.output.weight, run_model.output.weight)
    (seen_c, hist_c, *_), (seen_l, hist_l, *_) = runs["control"], runs["lrp"]
    assert len(seen_c) == len(seen_l) == 4  # 6 images in batches of 4, two epochs
    for a, b in zip(seen_c, seen_l, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert seen_c[0]["caption_ids"].shape[0] == 8  # 4 images × 2 captions
    assert not torch.equal(seen_c[0]["image_rows"], seen_c[2]["image_rows"]) or not torch.equal(
        seen_c[0]["images"], seen_c[2]["images"]
    )  # epochs are shuffled differently
    # same data, same dropout masks, same start: the first plain CE is identical
    assert hist_c.cross_entropy[0] == hist_l.cross_entropy[0]
    assert hist_c.loss == hist_c.cross_entropy
    assert hist_l.loss[0] > hist_l.cross_entropy[0]


def test_batches_cover_every_image_once_per_epoch():
    _, _, images, captions = tiny_setup("adaptive")
    batches = image_caption_batches(images, captions, 4, 1, seed=0, transform=to_float)
    epoch = list(batches(0))
    assert [len(b["images"]) for b in epoch] == [4, 2]
    shown = torch.cat([b["images"] for b in epoch])
    assert sorted(shown.sum((1, 2, 3)).tolist()) == sorted(to_float(images).sum((1, 2, 3)).tolist())
    again = list(batches(0))
    assert all(
        torch.equal(a["caption_ids"], b["caption_ids"]) for a, b in zip(epoch, again, strict=True)
    )
    with pytest.raises(ValueError, match="captions for 5 images"):
        image_caption_batches(images, captions[:5], 4, 1, 0, to_float)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "gradient"),
        ("epochs", 0),
        ("batch_size", 0),
        ("captions_per_image", 1.5),
        ("lr", 0.0),
        ("encoder_lr", -1e-4),
        ("grad_clip", -1.0),
        ("epsilon", -0.1),
        ("normalization", "global"),
        ("betas", (0.9,)),
        ("seed", -1),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"FinetuneConfig.{field}"):
        FinetuneConfig(**{field: value})


def test_config_accepts_lists_from_yaml_and_lrp_needs_vocabulary():
    config = FinetuneConfig(betas=[0.8, 0.999])
    assert config.betas == (0.8, 0.999)
    assert config.as_dict()["betas"] == [0.8, 0.999]
    model, encoder, images, captions = tiny_setup("adaptive")
    batches = image_caption_batches(images, captions, 4, 1, 0, to_float)
    with pytest.raises(ValueError, match="vocabulary"):
        finetune_captioner(model, encoder, batches, FinetuneConfig(method="lrp"), progress=False)


def fake_scores(lrp_chair: float):
    base = {"BLEU-4": 0.4, "CIDEr-D": 1.0, "precision": 0.9, "recall": 0.6, "F1": 0.72}

    def run(chair, jitter):
        return base | {"CHAIRi": chair + jitter, "CHAIRs": chair + 2 * jitter}

    return {
        "adaptive": {
            "before": {"shifted": [run(0.40, j) for j in (-0.02, 0.0, 0.02)]},
            "control": {"shifted": [run(0.30, j) for j in (-0.01, 0.0, 0.01)]},
            "lrp": {"shifted": [run(lrp_chair, j) for j in (-0.01, 0.0, 0.01)]},
        }
    }


def test_statistics_table_and_statement_follow_the_numbers():
    from captionlib.viz.finetune import finetune_statement, results_table, seed_statistics

    stats = seed_statistics(fake_scores(lrp_chair=0.20))
    mean, std = stats["adaptive"]["shifted"]["control"]["CHAIRs"]
    assert mean == pytest.approx(0.30) and std == pytest.approx(0.02)
    table = results_table(stats, names={"adaptive": "A"}).to_markdown()
    assert "| A | shifted | LRP-IFT | 0.400 ± 0.000 |" in table
    # every stage has one run per seed, the checkpoint before fine-tuning too
    assert "| A | shifted | before | 0.400 ± 0.000 | 1.000 ± 0.000 | 0.900 ± 0.000 |" in table
    assert stats["adaptive"]["shifted"]["before"]["CHAIRs"] == pytest.approx((0.40, 0.04))
    names = {"adaptive": "captioner A"}
    better = finetune_statement(stats, names=names)  # a winner
    assert better == (
        "On the shifted split LRP-IFT reduces hallucination more than the control: it is "
        "clearly better in 2 of the 3 comparisons (LRP-IFT vs control, captioner A: CHAIRi "
        "0.200 vs 0.300, CHAIRs 0.200 vs 0.300) and clearly worse in none. On the other "
        "metrics it is within the seed spread of the control."
    )
    same = finetune_statement(seed_statistics(fake_scores(lrp_chair=0.31)), names=names)
    assert same.startswith(  # a tie within the seed spread
        "On the shifted split LRP-IFT does not reduce hallucination more than the control: "
        "all 3 comparisons are within the seed spread."
    )
    worse = finetune_statement(seed_statistics(fake_scores(lrp_chair=0.50)), costs=False)
    assert worse == (  # a loser
        "On the shifted split LRP-IFT does not clearly reduce hallucination more than the "
        "control: it is clearly better in 0 and clearly worse in 2 of the 3 comparisons "
        "(LRP-IFT vs control; worse: adaptive: CHAIRi 0.500 vs 0.300, CHAIRs 0.500 vs 0.300)."
    )
    scores = fake_scores(lrp_chair=0.31)
    for run in scores["adaptive"]["lrp"]["shifted"]:
        run["recall"] = 0.5  # a clear cost in recall
    cost = finetune_statement(seed_statistics(scores), names=names)
    assert cost.endswith(
        "On the other metrics (LRP-IFT vs control) it is clearly worse on captioner A: recall "
        "0.500 vs 0.600."
    )
    with pytest.raises(ValueError, match="needs 'lrp' and 'control'"):
        finetune_statement({"adaptive": {"shifted": {"lrp": stats["adaptive"]["shifted"]["lrp"]}}})


def test_settings_table_shows_each_setting_once():
    from captionlib.viz.finetune import settings_table

    config = FinetuneConfig(lr=5e-4, encoder_lr=1e-5, betas=(0.8, 0.999), seed=3)
    table = settings_table(config)
    names = [row[0] for row in table.cells]
    assert "`method`" not in names and "`seed`" not in names and len(names) == 9
    values = {row[0]: row[1] for row in table.cells}
    assert values["`lr`"] == "0.0005" and values["`encoder_lr`"] == "1e-05"
    assert values["`betas`"] == "0.8, 0.999" and values["`batch_size`"] == "32"
    assert all(row[2] != "–" for row in table.cells)  # every setting is explained
    everything = settings_table(config, skip=())
    assert ("`seed`", "3", "data order, caption drawn, dropout") in everything.cells


def test_weight_panels_and_loss_curves_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from captionlib.finetune import FinetuneHistory
    from captionlib.viz.finetune import loss_curves, weight_panels

    weights = (torch.full((3, 4), 0.5), torch.full((3, 4), 1.5))
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    figure = weight_panels(["a", "boat", "<end>"], weights, image=image)
    heat = figure.axes[1].images[0].get_array()
    assert heat.shape == (3, 4) and float(heat.max()) == 0.5
    assert figure.axes[1].images[0].get_clim() == (0.0, 2.0)
    with pytest.raises(ValueError, match="weights of ĉ_t must be"):
        weight_panels(["a", "boat"], weights)
    history = FinetuneHistory(loss=[3.0, 3.0, 2.0, 2.0], cross_entropy=[1.0, 1.0, 1.0, 1.0])
    control = FinetuneHistory(loss=[1.0] * 4, cross_entropy=[1.0] * 4)
    curves = loss_curves({"A": {"control": [control], "lrp": [history]}}, window=2)
    lines = curves.axes[0].get_lines()
    assert len(lines) == 3  # control CE, LRP-IFT CE, LRP-IFT's extra CE(ỹ)
    assert list(lines[2].get_ydata()) == [2.0, 1.5, 1.0]  # loss − CE, moving average of 2
    plt.close("all")
