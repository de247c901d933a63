"""Multi-process helpers: `torchrun` set-up, rank queries and reductions.

Everything degrades to single-process no-ops when torch.distributed is not initialised, so
the same training code runs on 1 CPU, N GPUs or several nodes.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: str) -> tuple[int, int, int]:
    """Initialise the process group from torchrun's environment; (rank, world, local_rank).

    The backend is NCCL on CUDA and gloo otherwise. Without torchrun (or with one
    process) nothing is initialised and (0, 1, 0) is returned.
    """
    if not launched_by_torchrun():
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not is_dist():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return rank, world, local_rank


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def reduce_dict(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average a dict of scalar tensors over processes (one collective)."""
    if not is_dist() or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(stacked)
    stacked /= get_world_size()
    return dict(zip(keys, stacked))


def all_gather_object(obj):
    """A list with every process's `obj` (rank order)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


__all__ = [
    "is_dist", "get_rank", "get_world_size", "is_main", "launched_by_torchrun", "init_distributed",
    "cleanup", "barrier", "all_reduce_sum", "reduce_dict", "all_gather_object",
    "broadcast_object",
]
