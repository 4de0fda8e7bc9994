"""How fast is the full-scale configuration on one GPU? (chapter 12, configs/coco_*.yaml)

Prints one table, measured with random weights and random data (speed does not depend on
training):

- encoder: torchvision VGG16 features[:-1] (the paper's encoder) images/s, fp32 and, on
  CUDA, bfloat16 autocast: the one-off feature extraction;
- data: captions/s delivered by the training loader from a memory-mapped float16 feature
  store (features precomputed, no JPEG decoding in the training loop);
- decoder training: captioner A ("GridTD"-like) optimiser steps on frozen-encoder features
  (forward, loss, backward, gradient clamp, Adam), captions/s, eager and with
  torch.compile (`--compile`, default on CUDA);
- explanation: captions/s with every word explained down to the pixels and the preceding
  words (two-stage LRP through VGG16, one vectorised backward);
- the same explanation as a per-word loop of backward passes (one forward, one backward per
  word) and the ratio loop / batched.

Reference points from the issue (one H200, random data): VGG16 4,600 images/s fp32, 6,300
bf16; decoder step (batch 128, 16 words) 2,200 captions/s eager, 4,500 compiled; batched
backward 13–17× faster than the per-word loop. Goals: ≥ 5,000 captions/s decoder training
and ≥ 500 fully explained captions/s.

    python benchmarks/full_scale_speed.py                    # CUDA if present, full sizes
    python benchmarks/full_scale_speed.py --device cpu       # CPU: tiny sizes by default
    python benchmarks/full_scale_speed.py --tiny --repeats 2 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from captionlib import ops
from captionlib.data.coco import collate_captions
from captionlib.explain.cnn import hooked_forward
from captionlib.explain.lrp import explain_lrp, explained_logits, explaining
from captionlib.features import MemmapFeatures, write_features
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.encoder import from_grid, to_grid, vgg16_features
from captionlib.train import caption_loss
from captionlib.utils import seed_everything


@dataclass(frozen=True)
class Sizes:
    """Benchmark sizes: full = the paper's configuration, tiny = a CPU smoke run."""

    image_size: int
    encoder_batch: int
    decoder_batch: int
    words: int
    hidden: int
    vocab: int
    explain_batch: int
    store_images: int
    loader_workers: int


FULL = Sizes(224, 128, 128, 16, 512, 10_000, 8, 2_000, 4)
TINY = Sizes(32, 4, 16, 6, 64, 500, 2, 64, 0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Minimum wall time over `repeats` runs after one warm-up run."""
    function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def random_captions(batch: int, words: int, vocab: int, device: torch.device) -> Tensor:
    """(batch, words + 2): <start>, `words` random words, <end>."""
    captions = torch.randint(4, vocab, (batch, words + 2), device=device)
    captions[:, 0], captions[:, -1] = 2, 3
    return captions


def captioner(sizes: Sizes, device: torch.device, dropout: float = 0.5) -> nn.Module:
    hidden = sizes.hidden
    model = AdaptiveAttentionCaptioner(sizes.vocab, 512, hidden, hidden, hidden, dropout)
    return model.to(device)


def encoder_rows(sizes: Sizes, device: torch.device, repeats: int) -> list[tuple]:
    vgg = vgg16_features(pretrained=False).to(device).eval()
    images = torch.randn(sizes.encoder_batch, 3, sizes.image_size, sizes.image_size, device=device)
    rows = []
    with torch.no_grad():
        seconds = best_seconds(lambda: vgg(images), repeats, device)
        rows.append(
            ("VGG16 features[:-1], fp32", sizes.encoder_batch / seconds, "images/s", "4,600")
        )
        if device.type == "cuda":
            with torch.autocast("cuda", torch.bfloat16):
                seconds = best_seconds(lambda: vgg(images), repeats, device)
            rows.append(
                ("VGG16, bf16 autocast", sizes.encoder_batch / seconds, "images/s", "6,300")
            )
        else:
            rows.append(("VGG16, bf16 autocast", None, "CUDA only", "6,300"))
    return rows


class _StoreCaptions(Dataset):
    """Items as CaptionDataset makes them from a feature store: features row + caption ids."""

    def __init__(self, store: MemmapFeatures, captions: Tensor) -> None:
        self.store, self.captions = store, captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"features": self.store[index // 5], "caption_ids": self.captions[index]}


def loader_rows(sizes: Sizes, repeats: int) -> list[tuple]:
    grid = (sizes.image_size // 16) ** 2
    with tempfile.TemporaryDirectory() as folder:
        features = torch.randn(sizes.store_images, grid, 512)
        store = write_features(Path(folder) / "f", features, list(range(sizes.store_images)))
        captions = random_captions(
            5 * sizes.store_images, sizes.words, sizes.vocab, torch.device("cpu")
        )
        loader = DataLoader(
            _StoreCaptions(store, captions),
            batch_size=sizes.decoder_batch,
            shuffle=True,
            num_workers=sizes.loader_workers,
            collate_fn=collate_captions,
            persistent_workers=sizes.loader_workers > 0,
        )
        seconds = best_seconds(lambda: sum(1 for _ in loader), repeats, torch.device("cpu"))
    label = f"memmap loader, {sizes.loader_workers} workers"
    return [(label, len(captions) / seconds, "captions/s", "≥ training speed")]


def decoder_rows(sizes: Sizes, device: torch.device, repeats: int, compile_: bool) -> list[tuple]:
    grid = (sizes.image_size // 16) ** 2
    features = torch.randn(sizes.decoder_batch, grid, 512, device=device)
    captions = random_captions(sizes.decoder_batch, sizes.words, sizes.vocab, device)
    rows = []
    variants = [("eager", False, False)]
    if compile_:
        variants.append(("torch.compile", True, False))
        if device.type == "cuda":
            variants.append(("torch.compile + bf16 autocast", True, True))
    for name, compiled, bf16 in variants:
        model = captioner(sizes, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, betas=(0.8, 0.999))
        forward = torch.compile(model) if compiled else model

        def step(forward=forward, model=model, optimizer=optimizer, bf16=bf16) -> None:
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss = caption_loss(forward(features, captions).logits, captions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_value_(model.parameters(), 0.1)
            optimizer.step()

        step()  # compile outside the timing
        seconds = best_seconds(step, repeats, device)
        reference = {"eager": "2,200", "torch.compile": "4,500"}.get(name, "goal ≥ 5,000")
        label = f"decoder training step, {name}"
        rows.append((label, sizes.decoder_batch / seconds, "captions/s", reference))
    return rows


def per_word_loop(model: nn.Module, cnn: nn.Module, images: Tensor, captions: Tensor) -> Tensor:
    """The same two-stage LRP, one backward pass per explained word (after one forward)."""
    steps = captions.shape[1] - 1
    maps = []
    with explaining(model, cnn), hooked_forward(cnn, images) as (pixels, feature_map):
        grid = to_grid(feature_map).detach().requires_grad_()  # (B, N, C)
        embeddings = model.embedding(captions[:, :-1]).detach().requires_grad_()
        with torch.enable_grad(), ops.lrp_mode(epsilon=0.01):
            logits = model(grid, captions, embeddings=embeddings).logits
            explained = explained_logits(logits, captions)  # (B, K)
            for t in range(steps):
                grad_grid, _ = torch.autograd.grad(
                    explained[:, t].sum(), (grid, embeddings), retain_graph=True
                )
                relevance = from_grid(grid.detach() * grad_grid, *feature_map.shape[2:])
                (pixel_relevance,) = torch.autograd.grad(
                    feature_map, pixels, relevance, retain_graph=True
                )
                maps.append(pixel_relevance)  # (B, 3, H, W)
    return torch.stack(maps, 1)  # (B, K, 3, H, W)


def explain_rows(sizes: Sizes, device: torch.device, repeats: int) -> list[tuple]:
    cnn = vgg16_features(pretrained=False).to(device)
    model = captioner(sizes, device)
    images = torch.randn(sizes.explain_batch, 3, sizes.image_size, sizes.image_size, device=device)
    captions = random_captions(sizes.explain_batch, sizes.words, sizes.vocab, device)

    def batched() -> Tensor:
        return explain_lrp(model, captions, images=images, encoder=cnn).pixels  # type: ignore[return-value]

    difference = (batched() - per_word_loop(model, cnn, images, captions)).abs().max().item()
    fast = best_seconds(batched, repeats, device)
    slow = best_seconds(lambda: per_word_loop(model, cnn, images, captions), repeats, device)
    words = sizes.words + 1
    return [
        (
            "fully explained captions (pixels + words)",
            sizes.explain_batch / fast,
            "captions/s",
            "goal ≥ 500",
        ),
        ("  the same, per-word loop", sizes.explain_batch / slow, "captions/s", ""),
        (f"  batched backward speed-up ({words} words)", slow / fast, "×", "13–17×"),
        ("  max |batched − loop| pixel relevance", difference, "", "≈ 0"),
    ]


def _format(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (default on the CPU)")
    parser.add_argument("--full", action="store_true", help="full sizes even on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's)")
    parser.add_argument("--compile", dest="compile_", action="store_true", default=None)
    parser.add_argument("--no-compile", dest="compile_", action="store_false")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.tiny or (device.type == "cpu" and not args.full)
    sizes = TINY if tiny else FULL
    compile_ = device.type == "cuda" if args.compile_ is None else args.compile_
    seed_everything(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = (
        encoder_rows(sizes, device, args.repeats)
        + loader_rows(sizes, args.repeats)
        + decoder_rows(sizes, device, args.repeats, compile_)
        + explain_rows(sizes, device, args.repeats)
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name} ({torch.get_num_threads()} threads), sizes: {'tiny' if tiny else 'full'} "
        f"{sizes}, torch {torch.__version__}"
    )
    print(f"{'measurement':<46} {'value':>12}  {'unit':<11} reference (H200)")
    for label, value, unit, reference in rows:
        print(f"{label:<46} {_format(value):>12}  {unit:<11} {reference}")


if __name__ == "__main__":
    main()
