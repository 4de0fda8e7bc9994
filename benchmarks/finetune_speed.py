"""How much does LRP-IFT cost over plain fine-tuning? (DESIGN.md budget: ≤ 1.3×)

Prints, for each captioner and measured in one run on the same models and batches, the time of
--batches fine-tuning steps (encoder + decoder from images, Adam, clamped gradients) with
LRP-IFT and with the control (plain cross-entropy), and their ratio. LRP-IFT adds one
ε-LRP backward through the output layer for every (sample, step) at once and the re-weighted
logits' cross-entropy; everything else is shared. Target: ratio ≤ 1.3.

Times are the minimum over --repeats interleaved runs after one warm-up run, each run starting
from a copy of the same weights. By default the models are randomly initialised at the book's
sizes; --trained loads the book's encoder and captioners through `captionlib.recipes`.

    python benchmarks/finetune_speed.py --threads 1 --batches 20
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Iterator

import torch
from torch import Tensor

from captionlib import recipes
from captionlib.data.vocab import Vocabulary
from captionlib.finetune import FinetuneConfig, finetune_captioner
from captionlib.models.base import Captioner
from captionlib.models.encoder import SmallVGG
from captionlib.utils import seed_everything


def load_models(kind: str, trained: bool) -> tuple[Captioner, SmallVGG, Vocabulary, str]:
    vocabulary = recipes.vocabulary()
    if trained:
        encoder = recipes.pretrained_encoder(progress=False).encoder
        captioner = recipes.trained_captioner(kind, progress=False).model
        return captioner, encoder, vocabulary, "trained artifacts (captionlib.recipes)"
    encoder = SmallVGG(**recipes.ENCODER)
    captioner = recipes.new_captioner(kind, len(vocabulary), encoder.out_channels)
    return captioner, encoder, vocabulary, "random initialisation"


def fixed_batches(
    args: argparse.Namespace, vocabulary: Vocabulary, size: int
) -> list[dict[str, Tensor]]:
    """--batches batches of random images with --captions-per-image captions of --length."""
    generator = torch.Generator().manual_seed(0)
    captions = args.batch * args.captions_per_image
    out = []
    for _ in range(args.batches):
        caption_ids = torch.randint(
            4, len(vocabulary), (captions, args.length), generator=generator
        )
        caption_ids[:, 0] = Vocabulary.START_ID
        caption_ids[:, -1] = Vocabulary.END_ID
        out.append(
            {
                "images": torch.randn(args.batch, 3, size, size, generator=generator),
                "caption_ids": caption_ids,  # (B·K, T)
                "image_rows": torch.arange(args.batch).repeat_interleave(args.captions_per_image),
            }
        )
    return out


def run_seconds(
    model: Captioner,
    encoder: SmallVGG,
    batches: list[dict[str, Tensor]],
    method: str,
    vocabulary: Vocabulary,
) -> float:
    """Seconds of one fine-tuning pass over `batches` from copies of the given weights."""
    model, encoder = copy.deepcopy(model), copy.deepcopy(encoder)
    config = FinetuneConfig(method=method, batch_size=batches[0]["images"].shape[0])

    def source(epoch: int) -> Iterator[dict[str, Tensor]]:
        return iter(batches)

    started = time.perf_counter()
    finetune_captioner(model, encoder, source, config, progress=False, vocabulary=vocabulary)
    return time.perf_counter() - started


def benchmark(kind: str, args: argparse.Namespace) -> float:
    """Time control and LRP-IFT for one captioner, print them and return the ratio."""
    model, encoder, vocabulary, origin = load_models(kind, args.trained)
    batches = fixed_batches(args, vocabulary, encoder.in_size)
    times: dict[str, list[float]] = {"control": [], "lrp": []}
    for method in times:  # warm-up
        run_seconds(model, encoder, batches[:1], method, vocabulary)
    for _ in range(args.repeats):
        for method in times:
            times[method].append(run_seconds(model, encoder, batches, method, vocabulary))
    control, lrp = min(times["control"]), min(times["lrp"])
    ratio = lrp / control
    verdict = "meets" if ratio <= 1.3 else "MISSES"
    print(f"\ncaptioner {kind} ({type(model).__name__}), weights: {origin}")
    for name, seconds in (("control (cross-entropy)", control), ("LRP-IFT", lrp)):
        print(f"  {name:24s} {seconds:8.3f} s  ({1000 * seconds / args.batches:.0f} ms/batch)")
    print(f"  ratio LRP-IFT / control = {ratio:5.2f}  ({verdict} target <= 1.3)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captioner", choices=["adaptive", "multihead", "both"], default="both")
    parser.add_argument("--batches", type=int, default=20, help="fine-tuning steps timed")
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--captions-per-image", type=int, default=1)
    parser.add_argument("--length", type=int, default=12, help="caption tokens T (T−1 steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--trained", action="store_true", help="use the book's trained models")
    args = parser.parse_args()
    if min(args.batches, args.batch, args.captions_per_image, args.repeats) < 1 or args.length < 2:
        parser.error("need --batches, --batch, --captions-per-image, --repeats >= 1, --length >= 2")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    kinds = ["adaptive", "multihead"] if args.captioner == "both" else [args.captioner]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(
        f"{args.batches} batches × {args.batch} images × {args.captions_per_image} captions × "
        f"{args.length - 1} steps, images 112×112, best of {args.repeats}"
    )
    for kind in kinds:
        benchmark(kind, args)


if __name__ == "__main__":
    main()
