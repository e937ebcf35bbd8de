"""``nwd``: max-IoU assignment on the normalized Gaussian Wasserstein distance (Wang et al. 2021,
"A Normalized Gaussian Wasserstein Distance for Tiny Object Detection").

As the authors' RetinaNet on AI-TOD (jwwangchn/NWD, mmdet-aitod ``retinanet_r50_wasserstein``): the
``MaxIoUAssigner`` of the RetinaNet config, its thresholds unchanged (0.5 / 0.4, ``min_pos_iou`` 0,
low-quality matching on), with ``assign_metric='wasserstein'``: NWD = exp(-W2 / C), C = 12.8.
NWD is never 0, yet it falls with the distance of the box centres, so the assignment is computed on the
anchor-GT pairs near enough to matter (:mod:`~adla.train.assigners.spatial`), with the dense result.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from adla.assigner_params import MaxIoUParams, NWDParams, with_changes
from adla.errors import AdlaError
from adla.train.assigners.maxiou import MaxIoUAssigner
from adla.train.assigners.quality import NWDPairs, nwd_quality
from adla.train.assigners.result import AssignResult
from adla.train.assigners.spatial import best_per_box, full_grid, gt_pairs, top_k_per_gt, worth_pruning


class NWDAssigner(MaxIoUAssigner):
    """:class:`MaxIoUAssigner` with NWD (``constant`` C, px) in place of IoU; its thresholds are on NWD.

    A GT's best anchor always has NWD > 0, so low-quality matching gives every GT at least one positive.
    The assignment runs on the pairs near enough to matter (``prune``, an attribute; the result is the
    dense one exactly), or densely for small problems (anchors x GTs < ``prune_min_pairs``), anchors of
    too many distinct shapes or a threshold <= 0. ``chunk_size``: GTs per chunk of the [A, chunk] NWD
    matrix of the dense path.
    """

    name = "nwd"
    prune_min_pairs = 1 << 23  # anchors x GTs below which the dense path is the faster one (CPU)

    def __init__(self, params: NWDParams | None = None, **changes: Any):
        p = with_changes(NWDParams, params, changes, self.name)
        if not p.constant > 0:
            raise AdlaError(f"nwd: constant must be > 0, got {p.constant}")
        base = MaxIoUParams(pos_iou_thr=p.pos_iou_thr, neg_iou_thr=p.neg_iou_thr, min_pos_iou=p.min_pos_iou,
                            gt_max_assign_all=p.gt_max_assign_all, match_low_quality=p.match_low_quality,
                            chunk_size=p.chunk_size, prune=True)
        super().__init__(base, quality=nwd_quality(float(p.constant)))
        self.params = p  # NWD's own: the max-IoU fields and the constant
        self.constant = float(p.constant)

    def _assign_near(self, anchors: torch.Tensor, gt_boxes: torch.Tensor) -> AssignResult | None:
        if self.prune and worth_pruning(anchors, gt_boxes, self.prune_min_pairs):
            return self._assign_pruned(anchors, gt_boxes)
        return None

    def _assign_pruned(self, anchors: torch.Tensor, gt_boxes: torch.Tensor) -> AssignResult | None:
        """The dense rule of :class:`~adla.train.assigners.matcher.ThresholdMatcher` on the pairs that
        may reach the lowest threshold, plus each GT's best anchors and each anchor's best NWD found by
        a widening search; None where pruning does not apply."""
        low, high = self.neg_iou_thr
        q_min = min(self.pos_iou_thr, high, low if low > 0 else math.inf)
        pq = NWDPairs.build(anchors, gt_boxes, self.constant) if q_min > 0 else None
        if pq is None:
            return None
        dev = anchors.device
        n, g = anchors.shape[0], gt_boxes.shape[0]
        grid = full_grid(pq)
        gts = torch.arange(g, device=dev)
        pairs = gt_pairs(pq, grid, gts, level=torch.full((g,), q_min, dtype=torch.float64, device=dev))
        assert pairs is not None  # None only with max_pairs
        i, j = pairs
        q = pq.values(i, j)
        # Positive candidates: the largest NWD >= pos_iou_thr, ties to the lowest GT index.
        c = (q >= self.pos_iou_thr).nonzero().squeeze(1)
        ci, cj, cq = i[c], j[c], q[c]
        val = torch.full((n,), -math.inf, device=dev).scatter_reduce_(0, ci, cq, reduce="amax")
        top = cq == val[ci]
        cand_gt = torch.full((n,), g, dtype=torch.long, device=dev)
        cand_gt.scatter_reduce_(0, ci[top], cj[top], reduce="amin")
        cand_gt = torch.where(cand_gt < g, cand_gt, -1)
        not_neg = torch.zeros(n, dtype=torch.bool, device=dev)
        not_neg[i[q >= high]] = True
        best = best_per_box(pq, grid=grid, first=(i, q, q_min), gap0=64.0)  # gap: 8 px, squared
        best_q = torch.maximum(torch.zeros(n, device=dev), best)
        ti, tj, gt_best = top_k_per_gt(pq, grid, 1, first=(i, j, q, q_min))
        matched = torch.full((n,), -2, dtype=torch.long, device=dev)
        neg = ~not_neg
        if low > 0:
            neg &= best_q >= low
        matched[neg] = -1
        matched = torch.where(cand_gt >= 0, cand_gt, matched)
        if self.match_low_quality:
            # Each GT of best NWD > 0 and >= min_pos_iou takes its best anchor (every tied one with
            # gt_max_assign_all, else the lowest index); the highest GT index wins an anchor.
            valid = (gt_best >= self.min_pos_iou) & (gt_best > 0)
            keep = valid[tj]
            ai, aj = ti[keep], tj[keep]
            if not self.gt_max_assign_all:
                lowest = torch.full((g,), n, dtype=torch.long, device=dev)
                lowest.scatter_reduce_(0, aj, ai, reduce="amin")
                aj = valid.nonzero().squeeze(1)
                ai = lowest[aj]
            lq = torch.full((n,), -1, dtype=torch.long, device=dev).scatter_reduce_(0, ai, aj, reduce="amax")
            matched = torch.where(lq >= 0, lq, matched)
        return AssignResult(
            matched_gt=matched,
            max_quality=best_q,
            pos_thr=torch.full((g,), self.pos_iou_thr, device=dev),
            neg_thr=torch.full((g,), high, device=dev),
            iou_max=gt_best,
        )
