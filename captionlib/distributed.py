"""Data-parallel training on several GPUs or processes with DistributedDataParallel (chapter 12).

A run started by `torchrun` finds RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
in its environment; `init_distributed` reads them and joins the process group (NCCL on CUDA,
gloo on the CPU). Without them it returns a single-process context, so the same code runs
on a laptop, one GPU, eight GPUs or several nodes::

    torchrun --nproc_per_node 8 -m captionlib train --config configs/coco_adaptive.yaml
    torchrun --nnodes 2 --node_rank 0 --master_addr host0 --nproc_per_node 8 -m captionlib ...

Each process trains on its own share of every global batch (`distributed_loader`), DDP
averages the gradients, so a step equals one step on the combined batch (tests hold them
equal). Only the main process (rank 0) writes files and prints; on several nodes the run
folder must be on a file system that all of them see.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from captionlib.data.coco import caption_loader, collate_captions
from captionlib.utils import die_with_parent, select_device

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among world_size processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from error


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables.

    Without WORLD_SIZE (or with WORLD_SIZE=1) this is a single process on `device` (default:
    CUDA when available). With several processes, each CUDA process takes the GPU of its
    LOCAL_RANK and the backend is NCCL; on the CPU it is gloo.
    """
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") <= 1:
        return DistContext(device=select_device(device))
    missing = [name for name in (*_ENV, "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE > 1 but {', '.join(missing)} not set: start the run with torchrun"
        )
    rank, world_size, local_rank = (_env_int(name) for name in _ENV)
    chosen = select_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, chosen, backend)


def shutdown(context: DistContext) -> None:
    """Leave the process group (a no-op for a single process)."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    """Wait until every process gets here."""
    if context.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(context: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cached artifact), the others after it
    (and then find the artifact on disk)."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def broadcast_float(value: float, context: DistContext) -> float:
    """Rank 0's value on every process (e.g. a validation score only rank 0 computed)."""
    if not context.enabled:
        return float(value)
    device = context.device if context.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def per_process_batch(batch_size: int, context: DistContext) -> int:
    """The share of a global batch of `batch_size` that each process trains on."""
    if batch_size % context.world_size:
        raise ValueError(
            f"training.batch_size {batch_size} must be divisible by the number of "
            f"processes ({context.world_size})"
        )
    return batch_size // context.world_size


def distributed_loader(
    dataset: Dataset,
    batch_size: int,
    context: DistContext,
    epoch: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A caption loader over this process's share of `dataset` for `epoch`.

    `batch_size` is the global batch: each of the world_size processes gets
    batch_size / world_size items of it (DistributedSampler, reshuffled per epoch with
    `seed`). A single process gets `caption_loader` with the same seed.
    """
    local = per_process_batch(batch_size, context)
    if not context.enabled:
        return caption_loader(dataset, local, shuffle, seed + epoch, num_workers)
    sampler = DistributedSampler(
        dataset, context.world_size, context.rank, shuffle=shuffle, seed=seed
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=local,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_captions,
        worker_init_fn=die_with_parent,
    )


def wrap_model(model: nn.Module, context: DistContext) -> nn.Module:
    """`model` on the context's device, wrapped in DistributedDataParallel when distributed."""
    model.to(context.device)
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return int(handle.getsockname()[1])


def _local_worker(rank: int, world_size: int, port: int, function: Callable, args: tuple) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    try:
        function(context, *args)
    finally:
        shutdown(context)


def run_local(function: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Run `function(context, *args)` in `world_size` CPU processes on the gloo backend.

    What torchrun does, on one machine, from Python (tests and the chapter use it).
    `function` must be importable by name (defined at module level) to reach the processes.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    mp.spawn(_local_worker, (world_size, _free_port(), function, args), nprocs=world_size)
