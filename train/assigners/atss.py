"""``atss``: adaptive training sample selection (Zhang et al., CVPR 2020), as mmdetection's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from adla.assigner_params import ATSSParams, with_changes
from adla.errors import AdlaError
from adla.train.assigners.quality import IOU, Quality
from adla.train.assigners.result import AssignResult, Static, check_chunk_size, trivial_result


class ATSSAssigner(Static):
    """ATSS (Zhang et al., CVPR 2020), as mmdetection's ``ATSSAssigner``.

    Per GT: on each pyramid level the ``topk`` anchors whose centres are closest to the GT's centre are
    candidates; the IoU threshold is mean + std (unbiased) of the candidates' IoUs; a candidate whose IoU
    >= threshold and whose centre lies inside the GT (by more than ``center_eps`` px) is positive. An
    anchor positive for several GTs goes to the one of highest IoU (ties: lowest GT index). Everything
    else is background; ATSS ignores nothing. ``chunk_size``: GTs per chunk of the distance matrix.

    ``assign`` takes ``num_level_anchors``: the anchor count per level, in the order of ``anchors``
    (from :mod:`adla.anchors`: ``torch.bincount(anchor_levels(spec, H, W)).tolist()``). Without it all
    anchors count as one level (top-k over the whole image).

    The parameters are an :class:`~adla.assigner_params.ATSSParams` (or keyword changes to its defaults);
    ``quality``: the measure of the candidates (IoU, as the paper; its ``paired`` form is used).
    """

    def __init__(self, params: ATSSParams | None = None, *, quality: Quality = IOU, **changes: Any):
        p = with_changes(ATSSParams, params, changes, "atss")
        if p.topk < 1:
            raise AdlaError(f"atss: topk must be >= 1, got {p.topk}")
        check_chunk_size("atss", p.chunk_size)
        self.params = p
        self.quality = quality
        self.topk = p.topk
        self.center_eps = p.center_eps
        self.chunk_size = p.chunk_size

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
        """Match anchors [A,4] to ``gt_boxes`` [G,4] (xyxy px); ``num_level_anchors`` as in the class
        docstring. ``gt_labels``, ``pred_boxes`` and ``progress`` are ignored."""
        trivial = trivial_result(anchors, gt_boxes)
        if trivial is not None:
            return trivial
        n_anchors = anchors.shape[0]
        counts = [n_anchors] if num_level_anchors is None else [int(c) for c in num_level_anchors]
        if sum(counts) != n_anchors:
            raise ValueError(f"num_level_anchors {counts} sums to {sum(counts)}, not to {n_anchors} anchors")
        anchors, gt_boxes = anchors.float(), gt_boxes.float()
        centers = (anchors[:, :2] + anchors[:, 2:]) * 0.5  # [A, 2]
        pos_anchor, pos_gt, pos_iou, thr_all = [], [], [], []
        for start in range(0, gt_boxes.shape[0], self.chunk_size):
            gts = gt_boxes[start : start + self.chunk_size]  # [g, 4]
            g_centers = (gts[:, :2] + gts[:, 2:]) * 0.5
            dist = torch.cdist(centers, g_centers, compute_mode="donot_use_mm_for_euclid_dist")  # [A, g]
            cand_list, offset = [], 0
            for n in counts:
                k = min(self.topk, n)
                if k > 0:
                    cand_list.append(dist[offset : offset + n].topk(k, dim=0, largest=False).indices + offset)
                offset += n
            cand = torch.cat(cand_list)  # [K, g] anchor indices
            iou = self.quality.paired(anchors[cand], gts[None])  # [K, g]
            thr = iou.mean(dim=0) + iou.std(dim=0)
            c = centers[cand]  # [K, g, 2]
            inside = torch.stack([c[..., 0] - gts[:, 0], c[..., 1] - gts[:, 1],
                                  gts[:, 2] - c[..., 0], gts[:, 3] - c[..., 1]]).amin(dim=0) > self.center_eps
            k_idx, g_idx = ((iou >= thr[None]) & inside).nonzero(as_tuple=True)
            pos_anchor.append(cand[k_idx, g_idx])
            pos_gt.append(g_idx + start)
            pos_iou.append(iou[k_idx, g_idx])
            thr_all.append(thr)
        anchor_i, gt_i, iou_i = torch.cat(pos_anchor), torch.cat(pos_gt), torch.cat(pos_iou)
        best = torch.full((n_anchors,), -math.inf, device=anchors.device)
        best.scatter_reduce_(0, anchor_i, iou_i, reduce="amax")
        top = iou_i == best[anchor_i]
        matched = torch.full((n_anchors,), gt_boxes.shape[0], dtype=torch.long, device=anchors.device)
        matched.scatter_reduce_(0, anchor_i[top], gt_i[top], reduce="amin")
        matched = torch.where(best > -math.inf, matched, -1)
        return AssignResult(matched_gt=matched, max_quality=best.clamp(min=0), pos_thr=torch.cat(thr_all))
