"""Captioner training: loss goes down, model selection, resuming, checkpoint round trips."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from captionlib.checkpoints import load_checkpoint, save_checkpoint
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.multihead import MultiHeadCaptioner
from captionlib.train import CaptionTrainConfig, caption_loss, train_captioner

VOCAB = [f"w{i}" for i in range(12)]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(16, 9, 6, generator=generator)  # (images, N, C)
    # the caption is a deterministic function of the image: learnable
    words = 4 + (features[:, :, 0].argmax(dim=1) % 8)  # (images,)
    captions = torch.stack([torch.full_like(words, 2), words, words, torch.full_like(words, 3)], 1)
    return features, captions


def _batches(features: torch.Tensor, captions: torch.Tensor):
    def batches(epoch: int):
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(epoch))
        for indices in order.split(4):
            yield {"features": features[indices], "caption_ids": captions[indices]}

    return batches


def _model() -> AdaptiveAttentionCaptioner:
    torch.manual_seed(0)
    return AdaptiveAttentionCaptioner(
        len(VOCAB), 6, embed_dim=8, hidden_dim=8, attention_dim=8, dropout=0.0
    )


def _loss(model: torch.nn.Module, features: torch.Tensor, captions: torch.Tensor) -> float:
    with torch.no_grad():
        return float(caption_loss(model(features, captions).logits, captions))


def test_training_lowers_the_loss_and_keeps_the_best_epoch() -> None:
    features, captions = _data()
    model = _model()
    before = _loss(model, features, captions)
    scores = iter([0.1, 0.5, 0.2, 0.3])
    states = []

    def validate(m: torch.nn.Module) -> float:
        states.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    config = CaptionTrainConfig(epochs=4, lr=1e-2, patience=1)
    history = train_captioner(model, _batches(features, captions), validate, config, progress=False)
    assert history.best_epoch == 1
    assert history.val_score == [0.1, 0.5, 0.2, 0.3]
    assert _loss(model, features, captions) < before
    for key, value in model.state_dict().items():  # the weights of epoch 2 were restored
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0)
    # patience 1: the learning rate decays after the epoch without gain
    assert history.lr == pytest.approx([1e-2, 1e-2, 1e-2, 0.8e-2])


def test_resuming_from_a_checkpoint_equals_one_uninterrupted_run(tmp_path: Path) -> None:
    features, captions = _data()
    # constant scores: no gain after epoch 1, so patience 2 decays the lr after epoch 3 and
    # epoch 4 trains with it; the resumed run must remember the epoch without gain before it
    config = CaptionTrainConfig(epochs=4, lr=1e-2, patience=2)

    straight = _model()
    expected = train_captioner(
        straight, _batches(features, captions), lambda m: 0.0, config, progress=False
    )

    resumed = _model()
    checkpoint = tmp_path / "run.pt"
    first = CaptionTrainConfig(epochs=2, lr=1e-2, patience=2)
    batches = _batches(features, captions)
    train_captioner(resumed, batches, lambda m: 0.0, first, checkpoint, progress=False)
    history = train_captioner(resumed, batches, lambda m: 0.0, config, checkpoint, progress=False)
    assert len(history.train_loss) == 4
    assert history.lr == pytest.approx(expected.lr)
    assert history.lr[-1] == pytest.approx(0.8e-2)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


@pytest.mark.parametrize("kind", ["adaptive", "multihead"])
def test_checkpoint_round_trip_reproduces_logits_exactly(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(1)
    if kind == "adaptive":
        model = AdaptiveAttentionCaptioner(len(VOCAB), 6, embed_dim=8, hidden_dim=8)
    else:
        model = MultiHeadCaptioner(len(VOCAB), 6, embed_dim=8, hidden_dim=8, heads=2, head_dim=4)
    model.eval()
    path = tmp_path / "captioner.pt"
    save_checkpoint(path, model.state_dict(), model.config(), VOCAB)
    payload = load_checkpoint(path, model.config(), VOCAB)
    restored = type(model).from_config(payload["config"])
    restored.load_state_dict(payload["state_dict"])
    restored.eval()
    features, captions = _data()
    assert torch.equal(restored(features, captions).logits, model(features, captions).logits)
    with pytest.raises(ValueError, match="vocabulary does not match"):
        load_checkpoint(path, model.config(), [*VOCAB[:-1], "other"])
    with pytest.raises(ValueError, match="config field 'hidden_dim'"):
        load_checkpoint(path, {**model.config(), "hidden_dim": 16}, VOCAB)


def test_train_config_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="epochs"):
        CaptionTrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        CaptionTrainConfig(lr=0)
    assert asdict(CaptionTrainConfig())["betas"] == (0.8, 0.999)
