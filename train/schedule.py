"""Learning-rate schedule and the epoch sampler that makes resumed runs continue exactly."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


def lr_factor(iteration: int, iters_per_epoch: int, *, warmup_iters: int, warmup_ratio: float,
              milestones: tuple[int, ...], gamma: float, schedule: str = "step", total_iters: int = 0,
              min_ratio: float = 0.01) -> float:
    """Multiplier of the base lr at a global iteration: linear warm-up, then a decay.

    ``schedule="step"``: times ``gamma`` at each epoch of ``milestones``. ``schedule="cosine"``: half a
    cosine from 1 at the end of the warm-up to ``min_ratio`` at ``total_iters``.
    """
    if schedule == "cosine":
        span = max(total_iters - warmup_iters, 1)
        t = min(max(iteration - warmup_iters, 0) / span, 1.0)
        factor = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        epoch = iteration // max(iters_per_epoch, 1)
        factor = gamma ** sum(1 for m in milestones if epoch >= m)
    if iteration < warmup_iters:
        k = iteration / warmup_iters
        factor *= warmup_ratio + (1 - warmup_ratio) * k
    return factor


class WeightEMA:
    """Exponential moving average of a model's weights and buffers, for evaluation and export.

    Uses ``torch.optim.swa_utils.AveragedModel``; the decay ramps up as ``decay * (1 - exp(-n / warmup))``
    over the first updates (as YOLOX and mmdetection's ExpMomentumEMA do), so a short run is not
    dominated by its random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: int = 200):
        from torch.optim.swa_utils import AveragedModel

        self.decay = decay
        self.warmup = warmup

        def avg(ema_p: torch.Tensor, p: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
            d = decay * (1 - math.exp(-float(n) / warmup))
            return ema_p * d + p * (1 - d)

        self.module = AveragedModel(model, avg_fn=avg, use_buffers=True)

    def update(self, model: torch.nn.Module) -> None:
        self.module.update_parameters(model)

    @property
    def model(self) -> torch.nn.Module:
        """The averaged detector (same class and state-dict keys as the trained one)."""
        return self.module.module

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


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
