"""The epoch sampler that makes resumed runs continue exactly (and loader workers draw each epoch's views)."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Shuffled indices that depend only on (seed, epoch), split across ranks, with a start offset.

    The order of an epoch is a pure function of its number, so a run resumed at any iteration sees
    the same samples as an uninterrupted one. Like DistributedSampler it pads by repetition so every
    rank gets the same number of samples. With ``tag_epoch`` it yields ``(epoch, index)`` keys: the
    epoch travels with each index to the dataset, so persistent loader workers (whose copy of the
    dataset never sees ``set_epoch``) draw the views of the right epoch.
    """

    def __init__(self, size: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 tag_epoch: bool = False):
        self.size = size
        self.tag_epoch = tag_epoch
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0  # samples of this rank to skip (resume mid-epoch)
        self.per_rank = math.ceil(size / world_size) if size else 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self):
        order = self._order()[self.start :]
        return iter([(self.epoch, i) for i in order] if self.tag_epoch else order)

    def __len__(self) -> int:
        return self.per_rank - self.start
