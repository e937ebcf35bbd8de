"""An exponential moving average of the detector's weights (``optim.ema``), evaluated and saved."""

from __future__ import annotations

import math

import torch


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
