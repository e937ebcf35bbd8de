"""The learning-rate schedule: linear warm-up, then step or cosine decay."""

from __future__ import annotations

import math


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
