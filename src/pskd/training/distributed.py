"""Training on several processes with PyTorch's DistributedDataParallel (NCCL on GPUs, gloo on CPUs).

Launch with `torchrun --nproc-per-node N -m pskd train CONFIG` (several machines: torchrun's --nnodes,
--node-rank and --rdzv-endpoint), or `pskd train CONFIG --nproc N` on one machine. Every rank runs the same
pipeline with the same seed. In each step, every rank draws the same global batch and augments it with the same
generator, then keeps its own shard (rows rank, rank + N, ...). DDP averages the gradients, so a step sees the
same global batch as a single process does. What differs from one process is within-shard statistics: batch
normalisation over the shard, and the order of floating-point sums. Evaluation runs on every rank (so that all
agree on the selected epoch). Only rank 0 writes the run directory and the checkpoints; the other ranks read
the checkpoints when resuming.
"""

from __future__ import annotations

import importlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(name: str) -> torch.device | None:
    """The device of this rank when distributed on GPUs (one GPU per local rank), else None."""
    if not launched():
        return None
    if name in ("auto", "cuda") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def join(backend: str, **options) -> None:
    """`torch.distributed.init_process_group`, with `torch._dynamo` imported first.

    DistributedDataParallel imports `torch._dynamo`. If that import comes after the process group was made, the
    group is still referenced after `destroy_process_group` (measured on torch 2.13: its gloo worker threads keep
    running). The threads then meet interpreter shutdown, and a rank can die with SIGABRT ("terminate called
    without an active exception") after its work is done: a worker that completed a collective on a tensor made
    in Python needs the GIL to release it. Imported first, the group is freed at `destroy_process_group`, which
    joins its threads before the interpreter goes down.
    """
    importlib.import_module("torch._dynamo")
    dist.init_process_group(backend, **options)


def init(device: torch.device) -> None:
    """Join the process group torchrun describes (idempotent)."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    join("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))


def barrier() -> None:
    if active():
        dist.barrier()


def shard(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This rank's rows of a global batch."""
    if not active():
        return batch
    return {key: value[rank() :: world_size()] for key, value in batch.items()}


def all_sum(values: list[float]) -> list[float]:
    """Sums over ranks (for the epoch's logged totals)."""
    if not active():
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
