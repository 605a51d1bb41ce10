"""Several processes through ``torch.distributed``: who we are, and the few collectives we use.

Nothing here starts processes: ``torchrun`` (or the user's own launcher) does, and
:func:`init_from_environment` joins the group it set up (gloo on CPUs, NCCL on GPUs). Without a
process group every function answers as the only rank of one, so single-process code runs
unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def rank_and_world(group: Any = None) -> tuple[int, int]:
    """``(rank, world size)`` of this process in ``group`` (default: the whole group);
    ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def init_from_environment() -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1);
    returns whether a group was initialised here (the caller then destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def broadcast_object(value: Any, source: int = 0) -> Any:
    """``value`` of rank ``source`` on every rank (picklable objects)."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def all_gather_objects(value: Any, group: Any = None) -> list[Any]:
    """Every rank's ``value`` in ``group``, in rank order (picklable objects)."""
    world = rank_and_world(group)[1]
    if world == 1:
        return [value]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, value, group=group)
    return out


def all_reduce_sum(tensors: dict[str, torch.Tensor], group: Any = None) -> dict[str, torch.Tensor]:
    """Sum each tensor over the ranks of ``group`` (in place; returned for convenience)."""
    for value in tensors.values():
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
    return tensors
