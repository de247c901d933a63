"""Splitting work over `torchrun` processes: who does which item, and gathering results.

`Shard(rank, world)` is the description the lower layers are given (evaluation never
imports the engine): `indices(n)` are the items of this process (every `world`-th, starting
at `rank`: disjoint, and together complete), `gather(obj)` returns every process's `obj` in
rank order (one `all_gather_object`), `barrier()` waits for all. `Shard.single()` is one
process (no collectives). `torchrun_shard(device)` initialises the process group when the
command runs under torchrun (`engine.distributed.init_distributed`) and gives the shard
and the device of this process (`cuda:<local rank>` for a CUDA device).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

from panoptic_detr.engine import distributed as D

__all__ = ["Shard", "shard_indices", "torchrun_shard"]


def shard_indices(n: int, rank: int, world: int) -> range:
    """The items 0..n-1 of process `rank` of `world`: every `world`-th from `rank`."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return range(rank, n, world)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @staticmethod
    def single() -> "Shard":
        return Shard(0, 1)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def indices(self, n: int) -> range:
        return shard_indices(n, self.rank, self.world)

    def gather(self, obj: Any) -> list:
        """Every process's `obj`, in rank order (on every process)."""
        if self.world == 1:
            return [obj]
        return D.all_gather_object(obj)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process."""
        return obj if self.world == 1 else D.broadcast_object(obj)

    def barrier(self) -> None:
        if self.world > 1:
            D.barrier()


@contextlib.contextmanager
def torchrun_shard(device: str = "cpu") -> Iterator[tuple[Shard, str]]:
    """(shard, device) of this process; under torchrun (WORLD_SIZE > 1) the process group is
    initialised here (gloo on CPU, NCCL on CUDA) and destroyed on exit, unless it existed."""
    if not D.launched_by_torchrun():
        yield Shard.single(), device
        return
    owned = not D.is_dist()
    rank, world, local_rank = D.init_distributed(device)
    if str(device).startswith("cuda"):
        device = f"cuda:{local_rank}"
    try:
        yield Shard(rank, world), device
    finally:
        if owned:
            D.cleanup()
