"""Runs on more than one process (``accelerate launch`` / ``torchrun``): which process writes, how they agree.

A recipe launched on ``P`` processes trains data-parallel (Hugging Face ``Trainer`` on Accelerate: DDP, gloo on
CPU, NCCL on GPUs) and does everything else once, on the main process (rank 0): exports, quantization, searches,
evaluations, benchmarks, reports and every file of the run folder. The other ranks wait and receive the main
process's result (:func:`on_main`), so every process holds the same stage outputs.

The global batch of a training stage is the recipe's ``batch_size`` at any process count (each process takes
``batch_size / P`` rows of every optimizer step: :func:`per_process_batch`), so a recipe means the same training on
one process or many; only the order of floating-point reductions (and dropout draws) differ.

Launch (``--multi_gpu`` is Accelerate's switch to its multi-process launcher; on a machine without GPUs the
processes use gloo on CPU. ``accelerate launch --cpu --num_processes 2`` starts *one* process: Accelerate runs
multi-process CPU jobs only through MPI)::

    accelerate launch --multi_gpu --num_processes 2 -m slimformer.cli compress recipe.yaml
    torchrun --nproc_per_node 2 -m slimformer.cli compress recipe.yaml          # the same, without Accelerate

Without ``WORLD_SIZE`` > 1 in the environment every function here is a no-op on the one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from slimformer.errors import ConfigError, SlimformerError

__all__ = [
    "world_size",
    "rank",
    "is_main",
    "init",
    "barrier",
    "on_main",
    "per_process_batch",
    "RankFailed",
]

T = TypeVar("T")

#: How long the other ranks wait for the main process (a search or a benchmark of a large model runs for hours;
#: gloo's default of 30 min would kill them).
WAIT = timedelta(hours=24)


class RankFailed(SlimformerError):
    """Raised on the other ranks when the main process failed in :func:`on_main` (it reports the error itself)."""


def world_size() -> int:
    """Number of processes of this run (``WORLD_SIZE`` set by the launcher; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    """This process's global rank (``RANK``; 0 when not launched)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """Whether this process writes files, evaluates and benchmarks (rank 0, or the only process)."""
    return rank() == 0


def init() -> None:
    """Join the process group when launched on several processes (idempotent; no-op on one process).

    Uses Accelerate's ``PartialState`` (the state the ``Trainer`` reuses): gloo on CPU, NCCL when CUDA is present,
    with a 24-hour wait (:data:`WAIT`) so ranks outlast a long step of the main process.
    """
    if world_size() == 1:
        return
    import torch
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)


def barrier() -> None:
    """Wait until every process gets here (no-op on one process)."""
    if world_size() == 1:
        return
    import torch.distributed as torch_dist

    init()
    torch_dist.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only and give its result to every process.

    The result travels by ``torch.distributed.broadcast_object_list`` between this run's own processes (plain
    data: stage outputs, metrics). An exception on the main process is re-raised there and becomes
    :class:`RankFailed` on the others, so no rank waits forever.

    Raises:
        RankFailed: on a non-main rank, when ``fn`` raised on the main process.
    """
    if world_size() == 1:
        return fn()
    import torch.distributed as torch_dist

    init()
    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box[0] = ("ok", fn())
        except BaseException as e:  # noqa: BLE001 - every failure must reach the other ranks, then re-raised
            error = e
            box[0] = ("error", f"{type(e).__name__}: {e}")
    torch_dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    status, value = box[0]
    if status != "ok":
        raise RankFailed(f"the main process failed ({value})")
    return value


def per_process_batch(batch_size: int, where: str = "batch_size") -> int:
    """Rows of each optimizer step one process takes, so the global batch stays ``batch_size`` on ``P`` processes.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the number of processes (names ``where``).
    """
    p = world_size()
    if batch_size % p:
        raise ConfigError(
            f"{where}: {batch_size} is not a multiple of the {p} processes of this run; "
            f"use a multiple of {p} (the global batch is split evenly between processes)"
        )
    return batch_size // p
