"""Beam search of a whole batch against one image at a time, and the cost of the decoding
options of chapter 11 (the caution knob, visual contrastive decoding).

Prints, for each captioner at the book's sizes (random weights unless --trained), the seconds
to beam-search --images images (beam 3, 16 steps at most) in batches of 100 as
`captionlib.generate.decode_features` does, one image per call (the cost of a per-image beam
search), with `Caution` and with `VisualContrast`, and the ratios, all measured in one run
(minimum over --repeats interleaved runs). Captions of random-weight models run to the
maximum length, the slowest case.

    python benchmarks/decoding_speed.py --images 200
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from captionlib import recipes
from captionlib.data.vocab import Vocabulary
from captionlib.models.base import Captioner
from captionlib.models.decoding import Caution, VisualContrast, beam_search
from captionlib.utils import seed_everything

START, END = Vocabulary.START_ID, Vocabulary.END_ID


def load_model(kind: str, trained: bool) -> tuple[Captioner, torch.Tensor]:
    """The captioner and features (images, 196, 64) to decode."""
    if trained:
        trained_captioner = recipes.trained_captioner(kind, progress=False)
        features = recipes.encoder_features("test", progress=False)
        return trained_captioner.model, features
    seed_everything(0)
    model = recipes.new_captioner(kind, vocab_size=60, feature_dim=64)
    return model, torch.randn(500, 196, 64)


def timed(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(model: Captioner, grid: torch.Tensor, repeats: int) -> tuple[float, ...]:
    """Seconds: batched, one image per call, batched with caution, batched with contrast."""
    distorted = grid.flip(0)
    caution = Caution(tuple(range(10, 20)), 2.0)

    def batched(option: str | None = None) -> None:
        for start in range(0, len(grid), 100):
            chunk = slice(start, start + 100)
            if option == "caution":
                beam_search(model, grid[chunk], START, END, 3, 16, caution=caution)
            elif option == "contrast":
                contrast = VisualContrast(distorted[chunk], 1.0, 0.1)
                beam_search(model, grid[chunk], START, END, 3, 16, contrast=contrast)
            else:
                beam_search(model, grid[chunk], START, END, 3, 16)

    def per_image() -> None:
        for image in range(len(grid)):
            beam_search(model, grid[image : image + 1], START, END, 3, 16)

    return (
        timed(batched, repeats),
        timed(per_image, repeats),
        timed(lambda: batched("caution"), repeats),
        timed(lambda: batched("contrast"), repeats),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trained", action="store_true", help="the book's trained captioners")
    args = parser.parse_args()
    print(
        f"{'captioner':<10} {'batched s':>9} {'per image s':>11} {'speed-up':>8} "
        f"{'caution ×':>9} {'contrast ×':>10}"
    )
    for kind in ("adaptive", "multihead"):
        model, features = load_model(kind, args.trained)
        plain, alone, cautious, contrastive = measure(
            model, features[: args.images].float(), args.repeats
        )
        print(
            f"{kind:<10} {plain:9.2f} {alone:11.2f} {alone / plain:8.1f} "
            f"{cautious / plain:9.2f} {contrastive / plain:10.2f}"
        )


if __name__ == "__main__":
    main()
