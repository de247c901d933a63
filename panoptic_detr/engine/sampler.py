"""A resumable, distributed, per-epoch seeded batch sampler.

The order of epoch `e` is a permutation drawn from `(seed, e)` alone; each process takes
every `world_size`-th index of it (padded by wrapping so all processes get as many), cuts
its share into batches, and can start at any batch (`set_epoch(e, start_batch)`), so a run
resumed in the middle of an epoch sees exactly the batches the interrupted run would have.
Each yielded item is `(dataset_index, sample_seed)`; the dataset seeds its augmentation
with `sample_seed = f(seed, epoch, index)`, which makes augmentation reproducible too.
"""

from __future__ import annotations

import math

import torch

from panoptic_detr.data.dataset import sample_seed


class EpochBatchSampler(torch.utils.data.Sampler):
    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        augment_seeds: bool = True,
    ):
        if num_samples < 1:
            raise ValueError("EpochBatchSampler: empty dataset")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.per_rank = math.ceil(num_samples / world_size)
        # never drop everything: a split smaller than a batch gives one short batch
        self.drop_last = drop_last and self.per_rank >= batch_size
        self.augment_seeds = augment_seeds
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        """Batches per epoch (for this process), ignoring `start_batch`."""
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self):
        indices = self.epoch_indices(self.epoch)
        for b in range(self.start_batch, len(self)):
            batch = indices[b * self.batch_size : (b + 1) * self.batch_size]
            if self.augment_seeds:
                yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch]
            else:
                yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start_batch": self.start_batch, "seed": self.seed, "world_size": self.world_size}
