"""How fast is explaining every word of a caption with two-stage LRP? (DESIGN.md budgets)

Prints, measured in one run on the same models and inputs:

(a) LRP (decoder + CNN down to the pixels, every word of B captions) / a plain gradient of
    the same words (same scheme: one forward, one vectorised backward over the words,
    gradient w.r.t. the pixels and the word embeddings). Target: ≤ 1.5.
    Both are also timed with each caption replicated T−1 times along the batch instead
    (`replicate=True`); the ratio divides the faster LRP by the faster gradient.
(b) the reference implementation's per-word loop (stage 1 and the CNN, one caption and one
    word at a time, as the authors' code explains; `captionlib.explain.reference`) / the
    faster batched explainer. Target: ≥ 20. The ratio grows with the batch: the batched
    explainer does all captions at once. For transparency it also prints the ratio against a
    reference loop that handles each word for all captions at once (about 3×: each word
    still needs its own backward pass through the decoder and the CNN).

It also prints (b) for stage 1 alone (decoder only, from cached features).

Times are the minimum over --repeats interleaved runs after one warm-up run. By default the
models are randomly initialised at the book's sizes (timing does not depend on training);
--trained loads the book's trained encoder and captioners through `captionlib.recipes`
(building them first if they are not cached, which takes minutes).

    python benchmarks/explain_speed.py --batch 4 --length 12
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor

from captionlib import recipes
from captionlib.explain.lrp import explain_lrp, explained_logits, explaining, word_seeds
from captionlib.explain.reference import (
    adaptive_relevance,
    multihead_relevance,
    reference_cnn_relevance,
)
from captionlib.models.adaptive import AdaptiveAttentionCaptioner
from captionlib.models.base import Captioner
from captionlib.models.encoder import SmallVGG, from_grid, to_grid
from captionlib.utils import seed_everything


def plain_gradient(model: Captioner, encoder: SmallVGG, images: Tensor, captions: Tensor) -> Tensor:
    """Gradient of every explained logit w.r.t. pixels and words: one vectorised backward."""
    with explaining(model, encoder), torch.enable_grad():
        pixels = images.detach().requires_grad_()
        embeddings = model.embedding(captions[:, :-1]).detach().requires_grad_()
        logits = model(to_grid(encoder.features(pixels)), captions, embeddings=embeddings).logits
        explained = explained_logits(logits, captions)  # (B, K)
        seeds = word_seeds(explained)
        grads = torch.autograd.grad(explained, (pixels, embeddings), seeds, is_grads_batched=True)
    return grads[0]


def plain_gradient_replicated(
    model: Captioner, encoder: SmallVGG, images: Tensor, captions: Tensor
) -> Tensor:
    """The same gradients with each caption replicated T−1 times along the batch."""
    batch, length = captions.shape
    steps = length - 1
    with explaining(model, encoder), torch.enable_grad():
        pixels = images.repeat_interleave(steps, 0).requires_grad_()  # (B·K, 3, H, W)
        replicas = captions.repeat_interleave(steps, 0)
        embeddings = model.embedding(replicas[:, :-1]).detach().requires_grad_()
        logits = model(to_grid(encoder.features(pixels)), replicas, embeddings=embeddings).logits
        rows = torch.arange(batch * steps, device=captions.device)
        explained = logits[rows, rows % steps, replicas[rows, rows % steps + 1]].sum()
        grads = torch.autograd.grad(explained, (pixels, embeddings))
    return grads[0]


def reference_loop(
    model: Captioner,
    encoder: SmallVGG,
    images: Tensor,
    captions: Tensor,
    pixels: bool = True,
    per_caption: bool = True,
) -> None:
    """The slow reference, one word at a time: stage 1, then (pixels=True) the CNN rules
    layer by layer. With per_caption (the default, as the authors' code explains) one caption
    at a time too; without it each word is explained for all B captions at once."""
    groups = range(captions.shape[0]) if per_caption else [slice(None)]
    with explaining(model, encoder), torch.no_grad():
        for group in groups:
            rows = slice(group, group + 1) if isinstance(group, int) else group
            image, caption = images[rows], captions[rows]
            feature_map = encoder.features(image)
            grid = to_grid(feature_map)
            for t in range(caption.shape[1] - 1):
                if isinstance(model, AdaptiveAttentionCaptioner):
                    relevance = adaptive_relevance(model, grid, caption, t).features
                else:
                    relevance = multihead_relevance(model, grid, caption, t).features  # type: ignore[arg-type]
                if pixels:
                    relevance_map = from_grid(relevance, *feature_map.shape[2:])
                    reference_cnn_relevance(encoder.features, image, relevance_map)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_times(
    functions: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Minimum wall time of each function over `repeats` interleaved rounds (after a warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            _synchronize(device)
            start = time.perf_counter()
            function()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def load_models(kind: str, trained: bool, vocab: int) -> tuple[Captioner, SmallVGG, str]:
    if trained:
        encoder = recipes.pretrained_encoder(progress=False).encoder
        captioner = recipes.trained_captioner(kind, progress=False).model
        return captioner, encoder, "trained artifacts (captionlib.recipes)"
    encoder = SmallVGG(**recipes.ENCODER)
    captioner = recipes.new_captioner(kind, vocab, encoder.out_channels)
    return captioner, encoder, "random initialisation (no trained artifact given)"


def benchmark(kind: str, args: argparse.Namespace) -> None:
    """Time LRP, the plain gradients and the reference loop for one captioner and print."""
    device = torch.device(args.device)
    model, encoder, origin = load_models(kind, args.trained, args.vocab)
    model, encoder = model.to(device), encoder.to(device)
    images = torch.randn(args.batch, 3, encoder.in_size, encoder.in_size, device=device)
    captions = torch.randint(4, model.vocab_size, (args.batch, args.length), device=device)
    captions[:, 0] = 2  # <start>
    print(f"\ncaptioner {kind} ({type(model).__name__}), weights: {origin}")
    times = best_times(
        {
            "lrp": lambda: explain_lrp(model, captions, images=images, encoder=encoder),
            "lrp_replicated": lambda: explain_lrp(
                model, captions, images=images, encoder=encoder, replicate=True
            ),
            "gradient": lambda: plain_gradient(model, encoder, images, captions),
            "replicated": lambda: plain_gradient_replicated(model, encoder, images, captions),
        },
        args.repeats,
        device,
    )
    with torch.no_grad():
        grid = to_grid(encoder.features(images))
    times |= best_times(
        {"stage1": lambda: explain_lrp(model, captions, features=grid)},
        args.repeats,
        device,
    )
    references = best_times(
        {
            "reference": lambda: reference_loop(model, encoder, images, captions),
            "stage1": lambda: reference_loop(model, encoder, images, captions, pixels=False),
            "vectorised": lambda: reference_loop(
                model, encoder, images, captions, per_caption=False
            ),
        },
        args.reference_repeats,
        device,
    )
    reference = references["reference"]
    ratio_a = min(times["lrp"], times["lrp_replicated"]) / min(
        times["gradient"], times["replicated"]
    )
    ratio_b = reference / min(times["lrp"], times["lrp_replicated"])
    print(f"  LRP, two stages, all words        {times['lrp']:8.3f} s")
    print(f"  LRP, replicated batch              {times['lrp_replicated']:8.3f} s")
    print(f"  plain gradient, same words         {times['gradient']:8.3f} s")
    print(f"  plain gradient, replicated batch   {times['replicated']:8.3f} s")
    print(f"  reference, per-word loop           {reference:8.3f} s")
    print(
        f"  stage 1 only: LRP {times['stage1']:.3f} s, reference loop {references['stage1']:.3f} s"
    )
    verdict_a = "meets" if ratio_a <= 1.5 else "MISSES"
    verdict_b = "meets" if ratio_b >= 20 else "MISSES"
    print(f"  (a) best LRP / best grad = {ratio_a:6.2f}  ({verdict_a} target <= 1.5)")
    print(f"  (b) reference / batched  = {ratio_b:6.1f}  ({verdict_b} target >= 20)")
    ratio_stage1 = references["stage1"] / times["stage1"]
    print(f"      stage 1 only         = {ratio_stage1:6.1f}")
    ratio_vectorised = references["vectorised"] / min(times["lrp"], times["lrp_replicated"])
    print(
        f"      against a reference vectorised over the {captions.shape[0]} captions"
        f" (still one word at a time) = {ratio_vectorised:6.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captioner", choices=["adaptive", "multihead", "both"], default="both")
    parser.add_argument("--batch", type=int, default=4, help="captions explained at once")
    parser.add_argument("--length", type=int, default=12, help="caption tokens T (T−1 words)")
    parser.add_argument("--vocab", type=int, default=64, help="vocabulary size (random models)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--trained", action="store_true", help="use the book's trained models")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.batch < 1 or args.length < 2 or args.repeats < 1:
        parser.error("need --batch >= 1, --length >= 2, --repeats >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    kinds = ["adaptive", "multihead"] if args.captioner == "both" else [args.captioner]
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}")
    print(f"batch {args.batch} captions × {args.length - 1} words, images 112×112")
    for kind in kinds:
        benchmark(kind, args)


if __name__ == "__main__":
    main()
