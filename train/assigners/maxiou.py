"""``maxiou``: mmdetection's ``MaxIoUAssigner`` on a pluggable quality (IoU by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from adla.assigner_params import MaxIoUParams, NWDParams, with_changes
from adla.errors import AdlaError
from adla.train.assigners.matcher import ThresholdMatcher
from adla.train.assigners.quality import IOU, Quality, iter_quality
from adla.train.assigners.result import AssignResult, Static, check_chunk_size, trivial_result


def _neg_range(name: str, neg_iou_thr: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(neg_iou_thr, (int, float)):
        return 0.0, float(neg_iou_thr)
    if len(neg_iou_thr) == 2:
        return float(neg_iou_thr[0]), float(neg_iou_thr[1])
    raise AdlaError(f"{name}: neg_iou_thr must be a number or a (low, high) pair, got {neg_iou_thr}")


class MaxIoUAssigner(Static):
    """mmdetection's ``MaxIoUAssigner`` (same argument names and semantics), RetinaNet's defaults.

    Positive: max IoU >= ``pos_iou_thr`` (to the GT of that IoU). Background: ``0 <= max IoU <
    neg_iou_thr``, or ``low <= max IoU < high`` when ``neg_iou_thr`` is a (low, high) pair. The rest is
    ignored. With ``match_low_quality`` each GT then also takes its best anchor, every anchor tied with
    it when ``gt_max_assign_all``, provided that IoU >= ``min_pos_iou`` (and > 0: a GT overlapping no
    anchor takes none, where mmdetection would give it every zero-IoU anchor).
    ``chunk_size``, ``prune``: see :func:`~adla.train.assigners.quality.iter_quality`. The parameters are
    a :class:`~adla.assigner_params.MaxIoUParams` (or keyword changes to its defaults); ``quality`` is the
    pairwise measure the thresholds apply to (IoU; NWD in :class:`~adla.train.assigners.nwd.NWDAssigner`).
    """

    name = "maxiou"

    def __init__(self, params: MaxIoUParams | None = None, *, quality: Quality = IOU, **changes: Any):
        p = with_changes(MaxIoUParams, params, changes, self.name)
        if not p.pos_iou_thr > 0:
            raise AdlaError(f"{self.name}: pos_iou_thr must be > 0, got {p.pos_iou_thr}")
        check_chunk_size(self.name, p.chunk_size)
        self.params: MaxIoUParams | NWDParams = p
        self.quality = quality
        self.pos_iou_thr = float(p.pos_iou_thr)
        self.neg_iou_thr = _neg_range(self.name, p.neg_iou_thr)
        self.min_pos_iou = float(p.min_pos_iou)
        self.gt_max_assign_all = p.gt_max_assign_all
        self.match_low_quality = p.match_low_quality
        self.chunk_size = p.chunk_size
        self.prune = p.prune

    def _assign_near(self, anchors: torch.Tensor, gt_boxes: torch.Tensor) -> AssignResult | None:
        """The same result from the anchor-GT pairs near enough to matter, where a subclass can find them
        (NWD); None: use the chunked path below."""
        return None

    @torch.no_grad()
    def assign(
        self,
        anchors: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor | None = None,
        pred_boxes: torch.Tensor | None = None,
        progress: float = 0.0,
        *,
        num_level_anchors: Sequence[int] | None = None,
    ) -> AssignResult:
        """Match anchors [A,4] to ``gt_boxes`` [G,4] (xyxy px). ``pred_boxes``, ``progress``,
        ``gt_labels`` and ``num_level_anchors`` are accepted for a uniform call and ignored."""
        trivial = trivial_result(anchors, gt_boxes)
        if trivial is not None:
            return trivial
        near = self._assign_near(anchors, gt_boxes)
        if near is not None:
            return near
        low, high = self.neg_iou_thr
        matcher = ThresholdMatcher(
            anchors.shape[0],
            anchors.device,
            pos_inclusive=True,
            neg_low=low,
            low_quality=self.match_low_quality,
            min_pos_quality=self.min_pos_iou,
            assign_all_ties=self.gt_max_assign_all,
        )
        g = gt_boxes.shape[0]
        best = torch.zeros(g, device=anchors.device)
        chunks = iter_quality(anchors, gt_boxes, quality=self.quality, chunk_size=self.chunk_size,
                              prune=self.prune)
        for chunk in chunks:
            q = chunk.anchor_iou
            matcher.update(chunk.rows, chunk.gt_index, q, self.pos_iou_thr, high, zero_is_negative=high > 0)
            if q.shape[0]:
                best[chunk.gt_index] = q.amax(dim=0)
        return AssignResult(
            matched_gt=matcher.result(),
            max_quality=matcher.best_q,
            pos_thr=torch.full((g,), self.pos_iou_thr, device=anchors.device),
            neg_thr=torch.full((g,), high, device=anchors.device),
            iou_max=best,
        )
