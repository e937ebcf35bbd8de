"""``adla``: adaptive dynamic label assignment (Ge et al., JSTARS 2024), with the paper's ablations as
settings. The equations are in :mod:`adla.train.assigners.paper`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from adla.assigner_params import AdlaParams, with_changes
from adla.boxes import aspect_ratios
from adla.errors import AdlaError
from adla.train.assigners.matcher import ThresholdMatcher
from adla.train.assigners.paper import adaptive_thresholds, alpha_schedule, dynamic_iou
from adla.train.assigners.quality import IOU, Quality, iter_quality
from adla.train.assigners.result import AssignResult, check_chunk_size, trivial_result

MATCHINGS = ("diou", "md")  # the paper's dynamic IoU, or DAL's matching degree


class AdaptiveDynamicAssigner:
    """ADLA (Ge et al., JSTARS 2024): adaptive per-GT thresholds and the dynamic IoU.

    Per GT j: IoU_max_j over every anchor of the image and its aspect ratio give Tp_j, Tn_j
    (:func:`adaptive_thresholds`; with ``adaptive=False`` the fixed ``fixed_pos_thr`` / ``fixed_neg_thr``).
    Per anchor i: D_ij (:func:`dynamic_iou`) with alpha = :func:`alpha_schedule` (``progress``,
    ``alpha0``, breakpoints ``alpha_start`` and ``alpha_end``); ``dynamic=False`` fixes alpha at 1. When ``pred_boxes`` is None or alpha == 1, D is the
    anchor IoU. ``matching="md"`` uses DAL's matching degree (beta = 1) in place of the dynamic IoU.
    Anchor i is a candidate of GT j when D_ij > Tp_j and goes to the candidate GT with the largest D_ij
    (ties: lowest GT index); without candidate it is background when D_ij < Tn_j for every j, else ignored.
    ``match_low_quality`` adds mmdetection's low-quality matching on D (each GT also takes its best
    anchors) for comparison; the paper does not use it. ``chunk_size``, ``prune``: see
    :func:`~adla.train.assigners.quality.iter_quality`.

    Ablations of the paper: adaptive thresholds only = ``dynamic=False``; dynamic IoU with RetinaNet's
    0.5 / 0.4 = ``adaptive=False``; DAL's md in place of the dynamic IoU = ``matching="md"``.

    The parameters are an :class:`~adla.assigner_params.AdlaParams` (or keyword changes to its defaults,
    the paper's values). ``quality``: the pairwise measure of anchors and regressed boxes with the GTs
    (the paper's IoU; any :class:`~adla.train.assigners.quality.Quality`).
    """

    def __init__(self, params: AdlaParams | None = None, *, quality: Quality = IOU, **changes: Any):
        p = with_changes(AdlaParams, params, changes, "adla")
        if p.matching not in MATCHINGS:
            raise AdlaError(f"adla: matching must be one of {list(MATCHINGS)}, got {p.matching!r}")
        if not 0.0 <= p.alpha0 <= 1.0:
            raise AdlaError(f"adla: alpha0 must be in [0, 1], got {p.alpha0}")
        if not (p.tp_min > 0 and p.fixed_pos_thr > 0):
            raise AdlaError(f"adla: tp_min and fixed_pos_thr must be > 0, got {p.tp_min}, {p.fixed_pos_thr}")
        if not 0.0 <= p.alpha_start < p.alpha_end:
            raise AdlaError(f"adla: need 0 <= alpha_start < alpha_end, got {p.alpha_start}, {p.alpha_end}")
        check_chunk_size("adla", p.chunk_size)
        self.params = p
        self.quality = quality
        self.alpha0 = p.alpha0
        self.alpha_start, self.alpha_end = p.alpha_start, p.alpha_end
        self.gamma = p.gamma
        self.p_tp, self.p_tn = p.p_tp, p.p_tn
        self.tp_min, self.tn_min = p.tp_min, p.tn_min
        self.adaptive = p.adaptive
        self.dynamic = p.dynamic
        self.matching = p.matching
        self.fixed_pos_thr, self.fixed_neg_thr = p.fixed_pos_thr, p.fixed_neg_thr
        self.match_low_quality = p.match_low_quality
        self.chunk_size = p.chunk_size
        self.prune = p.prune

    def alpha(self, progress: float) -> float:
        """Weight of the anchor IoU at ``progress`` (1 when ``dynamic`` is off)."""
        return alpha_schedule(progress, self.alpha0, self.alpha_start, self.alpha_end) if self.dynamic else 1.0

    def _thresholds(self, iou_max: torch.Tensor, ar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.adaptive:
            return adaptive_thresholds(iou_max, ar, self.p_tp, self.p_tn, self.tp_min, self.tn_min)
        return torch.full_like(iou_max, self.fixed_pos_thr), torch.full_like(iou_max, self.fixed_neg_thr)

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
        """Match anchors [A,4] to ``gt_boxes`` [G,4] given the regressed anchors ``pred_boxes`` [A,4]
        (all xyxy px; detached) at training ``progress`` in [0, 1]. ``gt_labels`` and
        ``num_level_anchors`` are accepted for a uniform call and ignored."""
        alpha = self.alpha(progress)
        trivial = trivial_result(anchors, gt_boxes)
        if trivial is not None:
            trivial.alpha = alpha
            return trivial
        use_pred = pred_boxes is not None and alpha < 1.0
        beta = 1.0 if self.matching == "md" else None
        g, device = gt_boxes.shape[0], anchors.device
        ar = aspect_ratios(gt_boxes.float())
        iou_max = torch.zeros(g, device=device)
        tp_all = torch.zeros(g, device=device)
        tn_all = torch.zeros(g, device=device)
        zero_is_negative = (self.tn_min > 0) if self.adaptive else (self.fixed_neg_thr > 0)
        matcher = ThresholdMatcher(
            anchors.shape[0], device, pos_inclusive=False, low_quality=self.match_low_quality
        )
        chunks = iter_quality(
            anchors,
            gt_boxes,
            pred_boxes if use_pred else None,
            quality=self.quality,
            chunk_size=self.chunk_size,
            prune=self.prune,
        )
        for chunk in chunks:
            a, idx = chunk.anchor_iou, chunk.gt_index
            imax = a.max(dim=0).values if a.shape[0] else torch.zeros(len(idx), device=device)
            tp, tn = self._thresholds(imax, ar[idx])
            if chunk.pred_iou is not None:
                q = dynamic_iou(a, chunk.pred_iou, alpha, self.gamma, beta)
            else:
                q = a
            matcher.update(chunk.rows, idx, q, tp, tn, zero_is_negative=zero_is_negative)
            iou_max[idx], tp_all[idx], tn_all[idx] = imax, tp, tn
        return AssignResult(
            matched_gt=matcher.result(),
            max_quality=matcher.best_q,
            pos_thr=tp_all,
            neg_thr=tn_all,
            iou_max=iou_max,
            alpha=alpha,
        )
