"""What every assigner returns, and the pieces they all share."""

from __future__ import annotations

from collections.abc import Sequence
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
    """The contract of every assigner in :data:`~adla.train.assigners.ASSIGNERS`.

    ``assign`` receives, for one image: ``anchors`` [A,4] and ``gt_boxes`` [G,4] (float xyxy px),
    ``gt_labels`` [G] int64, ``pred_boxes`` [A,4] the regressed anchors (detached; None before any
    regression), ``progress`` in [0, 1] of training, and ``num_level_anchors``, the anchor count of each
    pyramid level in the order of ``anchors`` (None: one level). Each assigner uses what it needs of these
    and ignores the rest; the loss always passes them all. It returns an :class:`AssignResult`.
    ``alpha(progress)`` is the weight of the anchor IoU at that progress (1.0 without a schedule).
    """

    def alpha(self, progress: float) -> float: ...

    def assign(self, anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor | None = None,
               pred_boxes: torch.Tensor | None = None, progress: float = 0.0, *,
               num_level_anchors: Sequence[int] | None = None) -> AssignResult: ...


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
