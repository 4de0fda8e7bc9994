"""DistributedDataParallel: two gloo processes train exactly like one process on the combined
batch (chapter 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captionlib.distributed import (
    DistContext,
    distributed_loader,
    init_distributed,
    per_process_batch,
    run_local,
    wrap_model,
)
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.train import CaptionTrainConfig, train_captioner

VOCAB = 12
CONFIG = CaptionTrainConfig(epochs=1, batch_size=8, lr=1e-2, grad_clip=0.1)


def _model() -> AdaptiveAttentionCaptioner:
    torch.manual_seed(0)
    return AdaptiveAttentionCaptioner(
        VOCAB, 6, embed_dim=8, hidden_dim=8, attention_dim=8, dropout=0.0
    )


def _dataset() -> list[dict[str, torch.Tensor]]:
    """16 captions of equal length (no padding), so every process averages over as many words."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(16, 9, 6, generator=generator)
    captions = torch.randint(4, VOCAB, (16, 5), generator=generator)
    captions[:, 0], captions[:, -1] = 2, 3
    return [{"features": f, "caption_ids": c} for f, c in zip(features, captions, strict=True)]


def _train(context: DistContext, folder: Path) -> dict[str, torch.Tensor]:
    model = _model()
    module = wrap_model(model, context)
    dataset = _dataset()
    own = folder / f"rank{context.rank}"

    def batches(epoch: int):
        return distributed_loader(dataset, CONFIG.batch_size, context, epoch, shuffle=False)

    train_captioner(
        model,
        batches,
        lambda _: 0.0,
        CONFIG,
        checkpoint_path=own / "state.pt",
        progress=False,
        training_module=module if context.enabled else None,
        is_main=context.is_main,
    )
    return model.state_dict()


def _train_on_rank(context: DistContext, folder: Path) -> None:
    state = _train(context, folder)
    torch.save(state, folder / f"params{context.rank}.pt")


@pytest.mark.slow  # about 20 s: two processes start, each imports torch
def test_two_gloo_processes_equal_one_process_on_the_combined_batch(tmp_path: Path) -> None:
    run_local(_train_on_rank, 2, tmp_path)
    single = _train(DistContext(), tmp_path / "single")  # 2 steps of 8 captions
    before = _model().state_dict()
    ranks = [torch.load(tmp_path / f"params{r}.pt", weights_only=True) for r in (0, 1)]
    changed = 0
    for name, value in single.items():
        for state in ranks:
            torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(value, before[name])
    assert changed == len(single)  # every parameter moved, identically everywhere
    assert (tmp_path / "rank0" / "state.pt").is_file()
    assert not (tmp_path / "rank1").exists()  # only rank 0 writes checkpoints


def test_global_batch_is_split_between_processes() -> None:
    context = DistContext(rank=1, world_size=4)
    assert per_process_batch(32, context) == 8
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        per_process_batch(30, context)
    loader = distributed_loader(_dataset(), 8, DistContext(), shuffle=False)
    assert [len(batch["caption_ids"]) for batch in loader] == [8, 8]


def _rows(loader) -> list[tuple[float, ...]]:
    """The dataset rows a loader yields, recognised by their (unique) first feature vector."""
    return [tuple(f[0].tolist()) for batch in loader for f in batch["features"]]


def test_shuffled_shares_are_disjoint_and_reshuffled_every_epoch() -> None:
    dataset = _dataset()
    everything = sorted(tuple(item["features"][0].tolist()) for item in dataset)
    assert len(set(everything)) == len(dataset)  # rows are recognisable
    orders = {}
    for epoch in (0, 1):
        shares = [
            _rows(distributed_loader(dataset, 8, DistContext(rank=r, world_size=2), epoch, seed=5))
            for r in (0, 1)
        ]
        assert sorted(shares[0] + shares[1]) == everything  # together: every row once
        orders[epoch] = shares[0]
    again = _rows(distributed_loader(dataset, 8, DistContext(rank=0, world_size=2), 0, seed=5))
    assert again == orders[0]  # an epoch's order depends on (seed, epoch) only
    assert orders[1] != orders[0]  # set_epoch reshuffles


def test_world_size_that_is_not_a_number_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not init_distributed("cpu").enabled
