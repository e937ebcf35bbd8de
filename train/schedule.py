"""Learning-rate schedule and the epoch sampler that makes resumed runs continue exactly."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


def lr_factor(iteration: int, iters_per_epoch: int, *, warmup_iters: int, warmup_ratio: float,
              milestones: tuple[int, ...], gamma: float) -> float:
    """Multiplier of the base lr at a global iteration: linear warm-up, then step decay at epochs."""
    epoch = iteration // max(iters_per_epoch, 1)
    factor = gamma ** sum(1 for m in milestones if epoch >= m)
    if iteration < warmup_iters:
        k = iteration / warmup_iters
        factor *= warmup_ratio + (1 - warmup_ratio) * k
    return factor


class EpochSampler(Sampler[int]):
    """Shuffled indices that depend only on (seed, epoch), split across ranks, with a start offset.

    The order of an epoch is a pure function of its number, so a run resumed at any iteration sees
    the same samples as an uninterrupted one. Like DistributedSampler it pads by repetition so every
    rank gets the same number of samples.
    """

    def __init__(self, size: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.size = size
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
        return iter(self._order()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start
