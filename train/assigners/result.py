"""What every assigner returns, and the pieces they all share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from adla.errors import AdlaError


@dataclass
class AssignResult:
    """Output of an assigner. ``matched_gt`` [A] int64: >= 0 GT index, -1 background, -2 ignored."""

    matched_gt: torch.Tensor
    max_quality: torch.Tensor | None = None  # [A] best quality over GTs (floored at 0), for logging
    pos_thr: torch.Tensor | None = None  # [G] positive threshold per GT
    neg_thr: torch.Tensor | None = None  # [G] negative threshold per GT
    iou_max: torch.Tensor | None = None  # [G] best anchor quality per GT (IoU, or NWD for nwd)
    alpha: float | None = None  # ADLA's weight of the anchor IoU at this progress

    @property
    def num_pos(self) -> int:
        return int((self.matched_gt >= 0).sum())

    @property
    def num_neg(self) -> int:
        return int((self.matched_gt == -1).sum())

    @property
    def num_ignored(self) -> int:
        return int((self.matched_gt == -2).sum())

    def positives_per_gt(self, num_gts: int) -> torch.Tensor:
        """Number of positive anchors of each GT, int64 [G]."""
        pos = self.matched_gt[self.matched_gt >= 0]
        return torch.bincount(pos, minlength=num_gts)


class Assigner(Protocol):
    """The contract of every assigner in :data:`~adla.train.assigners.ASSIGNERS`."""

    def alpha(self, progress: float) -> float: ...

    def assign(self, anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor | None = None,
               pred_boxes: torch.Tensor | None = None, progress: float = 0.0, **kwargs) -> AssignResult: ...


class Static:
    """Mixin of the assigners without a schedule: the anchor-IoU weight alpha is 1 at any progress."""

    def alpha(self, progress: float) -> float:
        return 1.0


def trivial_result(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> AssignResult | None:
    """All background when there is no GT (or no anchor); None when there is work to do."""
    if gt_boxes.shape[0] and anchors.shape[0]:
        return None
    a = anchors.shape[0]
    return AssignResult(
        matched_gt=torch.full((a,), -1, dtype=torch.long, device=anchors.device),
        max_quality=torch.zeros(a, device=anchors.device),
    )


def check_chunk_size(name: str, chunk_size: int) -> None:
    if chunk_size < 1:
        raise AdlaError(f"{name}: chunk_size must be >= 1, got {chunk_size}")
