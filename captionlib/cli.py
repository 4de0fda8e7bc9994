"""The command line: `python -m captionlib <command> --config <yaml>` (chapter 12).

::

    python -m captionlib prepare  --config configs/coco_adaptive.yaml
    python -m captionlib train    --config configs/coco_adaptive.yaml [--set training.epochs=1]
    python -m captionlib evaluate --config configs/coco_adaptive.yaml [--split test]
    python -m captionlib explain  --config configs/coco_adaptive.yaml [--images 8]
    python -m captionlib finetune --config configs/coco_adaptive.yaml --set finetune.method=control
    python -m captionlib download coco2014 --folder /data/coco --yes     # needs the network
    torchrun --nproc_per_node 8 -m captionlib train --config configs/coco_adaptive.yaml

`--config` takes a path or the name of a file in the repository's configs/ folder; `--set
section.key=value` (repeatable) overrides one setting. Every command prints a short JSON
summary; a bad config or a missing file exits with status 2 and a message naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from captionlib import pipeline
from captionlib.data.prepare import DATASETS, download, download_plan
from captionlib.distributed import init_distributed, shutdown
from captionlib.runconfig import RunConfig, load_run_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m captionlib",
        description="Train, evaluate, explain and fine-tune attention captioners.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    help_texts = {
        "prepare": "generate ShapeWorld or bring a local COCO / Flickr30K folder into shape",
        "train": "train the captioner on frozen-encoder features (torchrun for several GPUs)",
        "evaluate": "caption a split with beam search and score it",
        "explain": "explain every word of the model's captions (pixels and words)",
        "finetune": "LRP-inference fine-tuning (or its control) of a trained captioner",
    }
    for name, text in help_texts.items():
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", required=True, help="YAML file or name in configs/")
        command.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one setting, e.g. training.epochs=1 (repeatable)",
        )
        command.add_argument("--no-progress", action="store_true", help="no progress bars")
        if name in ("evaluate", "explain"):
            command.add_argument("--split", help="split to use (default: from the config)")
            command.add_argument(
                "--stage", choices=pipeline.STAGES, default="trained", help="which models"
            )
        if name == "explain":
            command.add_argument("--images", type=int, help="number of images to explain")
    fetch = commands.add_parser(
        "download",
        help="download a data set (NEEDS THE NETWORK; prints the plan unless --yes)",
        description="Download a data set from its official servers. This needs the network.",
    )
    fetch.add_argument("dataset", choices=DATASETS)
    fetch.add_argument("--folder", required=True, help="where to put it")
    fetch.add_argument("--yes", action="store_true", help="really download")
    return parser


def _print(payload: Any) -> None:
    print(json.dumps(payload, indent=1, default=str))


def _download(args: argparse.Namespace) -> None:
    plan = download_plan(args.dataset)
    total = sum(item.gigabytes for item in plan)
    print(f"Downloading {args.dataset} needs the network: about {total:.2g} GB from")
    for item in plan:
        print(f"  {item.url}  (~{item.gigabytes:g} GB)")
    if not args.yes:
        print("Nothing downloaded; add --yes to start.")
        return
    print(f"Done: {download(args.dataset, args.folder)}")


def _train(config: RunConfig, progress: bool) -> None:
    context = init_distributed(config.device_name())
    try:
        history = pipeline.train(config, context, progress)
        if context.is_main:
            _print(
                {
                    "run": str(config.run_dir),
                    "processes": context.world_size,
                    "device": str(context.device),
                    "best_epoch": history.best_epoch + 1,
                    "val_CIDEr": history.val_score,
                    "train_loss": history.train_loss,
                }
            )
    finally:
        shutdown(context)


def run(args: argparse.Namespace) -> None:
    """Execute parsed arguments (`main` adds the error handling)."""
    if args.command == "download":
        _download(args)
        return
    config = load_run_config(args.config, args.set)
    progress = not args.no_progress
    if args.command == "prepare":
        _print({"prepared": str(pipeline.prepare_data(config, progress))})
    elif args.command == "train":
        _train(config, progress)
    elif args.command == "evaluate":
        result = pipeline.evaluate(config, args.split, args.stage, progress)
        examples = dict(list(result["captions"].items())[:3])
        _print({"split": result["split"], "scores": result["scores"], "examples": examples})
    elif args.command == "explain":
        _print(pipeline.explain_images(config, args.split, args.images, args.stage, progress))
    elif args.command == "finetune":
        history = pipeline.finetune(config, progress)
        _print({"method": config.finetune.method, "seconds": history.seconds})


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point of `python -m captionlib`; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        print(f"captionlib {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
