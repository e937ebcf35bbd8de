"""Label assigners: which anchors are positives (and of which GT), background, or ignored.

Every assigner is a stateless object with keyword-only constructor arguments and one method::

    result = assigner.assign(anchors, gt_boxes, gt_labels, pred_boxes=None, progress=0.0)
    # anchors [A,4], gt_boxes [G,4] float xyxy pixels, gt_labels [G] int64,
    # pred_boxes [A,4] the regressed anchors (detached) or None, progress in [0,1] of training.
    result.matched_gt  # int64 [A]: >= 0 GT index (positive), -1 background, -2 ignored

The work is split in two, so that another quality measure (NWD, RFD, ...) can slot in:

- quality: :func:`iter_quality` yields the anchor/GT IoU (and regressed-box/GT IoU) one chunk of GTs at
  a time. GTs are grouped by position and each chunk only sees the anchors that overlap it (pairs left
  out have IoU 0 exactly), so the A x G matrix is never held: 118k anchors and 5,000 GTs assign in a few
  MB.
- matching: :class:`ThresholdMatcher` folds chunks of a quality matrix and per-GT thresholds into
  running per-anchor state (best candidate, "could not be negative", low-quality ties) and returns the
  match vector. It knows nothing of boxes.

Assigners: ``maxiou`` (mmdetection's ``MaxIoUAssigner``), ``adla`` (Ge et al., JSTARS 2024, with its
ablations as settings) and ``atss`` (Zhang et al., CVPR 2020). Pick one from :data:`ASSIGNERS` or with
:func:`build_assigner`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from adla.errors import AdlaError

Num = TypeVar("Num", float, torch.Tensor)


# ----------------------------------------------------------------------------------------------------
# The paper's pure functions
# ----------------------------------------------------------------------------------------------------


def alpha_schedule(progress: float, alpha0: float = 0.6) -> float:
    """Weight of the anchor IoU in the dynamic IoU at ``progress`` (fraction of training done), eq. (10).

    1 for p < 0.1, then linear from 1 down to ``alpha0`` over 0.1 <= p < 0.5, then ``alpha0``.
    """
    if progress < 0.1:
        return 1.0
    if progress < 0.5:
        return (alpha0 - 1.0) / (0.5 - 0.1) * (progress - 0.1) + 1.0
    return float(alpha0)


def _floor(x: Num, m: float) -> Num:
    return torch.clamp(x, min=m) if isinstance(x, torch.Tensor) else max(x, m)


def adaptive_thresholds(
    iou_max: Num,
    aspect_ratio: Num,
    p_tp: float = 0.75,
    p_tn: float = 0.8,
    tp_min: float = 0.1,
    tn_min: float = 0.05,
) -> tuple[Num, Num]:
    """Per-GT positive and negative thresholds (Tp, Tn), eqs. (1)-(5). Floats or tensors [G].

    ``iou_max``: the GT's best IoU over all anchors of the image; ``aspect_ratio``: short / long side in
    (0, 1]. mp = (4 + Ar) / 5; T_rp = IoU_max (p_tp - IoU_max^2 / 4) mp;
    T_rn = T_rp (p_tn - (IoU_max - 1)^2 / 5);
    Tp = max(T_rp, tp_min), Tn = max(T_rn, tn_min). A perfectly matched square GT gets exactly 0.5 / 0.4.
    """
    mp = (4.0 + aspect_ratio) / 5.0
    t_rp = iou_max * (p_tp - iou_max**2 / 4.0) * mp
    t_rn = t_rp * (p_tn - (iou_max - 1.0) ** 2 / 5.0)
    return _floor(t_rp, tp_min), _floor(t_rn, tn_min)


def dynamic_iou(
    anchor_iou: torch.Tensor,
    regressed_iou: torch.Tensor,
    alpha: float,
    gamma: float = 1.5,
    beta: float | None = None,
) -> torch.Tensor:
    """D = alpha A + (1 - alpha) R - beta |A - R|^gamma, eqs. (8), (9); same shape as the inputs.

    ``beta=None`` is the paper's beta = 1 - alpha; ``beta=1`` is DAL's matching degree, eq. (6).
    """
    if beta is None:
        beta = 1.0 - alpha
    u = regressed_iou - anchor_iou
    d = torch.add(anchor_iou, u, alpha=1.0 - alpha)  # alpha A + (1 - alpha) R in one pass
    if beta != 0.0:
        u = u.abs_()
        d = d.sub_(u * u.sqrt() if gamma == 1.5 else u.pow(gamma), alpha=beta)
    return d


def aspect_ratios(boxes: torch.Tensor) -> torch.Tensor:
    """Short side / long side [N] of xyxy boxes [N,4]; 0 for a degenerate box."""
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    return torch.minimum(w, h) / torch.maximum(w, h).clamp(min=1e-12)


# ----------------------------------------------------------------------------------------------------
# Quality, one chunk of GTs at a time
# ----------------------------------------------------------------------------------------------------


@dataclass
class QualityChunk:
    """IoUs of one chunk of GTs. Anchors not in ``rows`` overlap none of these GTs (IoU exactly 0)."""

    gt_index: torch.Tensor  # [g] int64, ascending
    rows: torch.Tensor | None  # [r] int64 ascending anchor indices; None: all A anchors, in order
    anchor_iou: torch.Tensor  # [r, g] IoU(anchor, GT)
    pred_iou: torch.Tensor | None  # [r, g] IoU(regressed anchor, GT), when pred boxes were given


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU matrix [N, M] of xyxy boxes [N,4] and [M,4].

    The formula and the result of ``torchvision.ops.box_iou`` (equal to the last bit), with 2-D
    temporaries instead of [N, M, 2] ones, which is about twice as fast on CPU.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    w = (torch.minimum(boxes1[:, 2, None], boxes2[:, 2]) - torch.maximum(boxes1[:, 0, None], boxes2[:, 0]))
    h = (torch.minimum(boxes1[:, 3, None], boxes2[:, 3]) - torch.maximum(boxes1[:, 1, None], boxes2[:, 1]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    return inter / (area1[:, None] + area2 - inter)


def _meets(boxes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Mask [N]: box [N,4+] has a positive-area intersection with the region [lo, hi] (xy pairs)."""
    return (boxes[:, 0] < hi[0]) & (boxes[:, 2] > lo[0]) & (boxes[:, 1] < hi[1]) & (boxes[:, 3] > lo[1])


def _kd_chunks(
    gt_boxes: torch.Tensor, hull: torch.Tensor, chunk_size: int, leaf_extent: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Split the GTs like a k-d tree into chunks of at most ``chunk_size`` GTs spanning at most
    ``leaf_extent`` px (or of one GT). ``hull`` [A,4]: per anchor, a box that meets every GT the anchor
    could match. Yields (GT indices [g] ascending, their boxes [g,4], indices [r] ascending of the
    anchors whose hull meets the chunk's bounding region).

    Each node halves its GTs along the longer side of their region and filters only its parent's rows,
    so the filtering work stays near O(A log G) instead of O(A G / chunk_size).
    """
    centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) * 0.5
    stack: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = [
        (torch.arange(gt_boxes.shape[0], device=gt_boxes.device), None, hull)
    ]
    while stack:
        idx, rows, sub = stack.pop()
        gts = gt_boxes.index_select(0, idx)
        lo, hi = gts[:, :2].amin(dim=0), gts[:, 2:].amax(dim=0)
        extent = hi - lo
        leaf = idx.shape[0] == 1 or (idx.shape[0] <= chunk_size and float(extent.max()) <= leaf_extent)
        if rows is not None or leaf:  # the root's region is most often the whole image: split it unfiltered
            keep = _meets(sub, lo, hi).nonzero().squeeze(1)
            rows = keep if rows is None else rows.index_select(0, keep)
            sub = sub.index_select(0, keep)
        if leaf:
            idx, order = torch.sort(idx)  # ascending: ties then resolve to the lowest GT index
            yield idx, gts.index_select(0, order), rows
            continue
        order = centers.index_select(0, idx)[:, int(extent.argmax())].argsort()
        half = idx.shape[0] // 2
        stack.append((idx.index_select(0, order[half:]), rows, sub))
        stack.append((idx.index_select(0, order[:half]), rows, sub))


def iter_quality(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    pred_boxes: torch.Tensor | None = None,
    *,
    chunk_size: int = 32,
    prune: bool = True,
    leaf_extent: float = 128.0,
) -> Iterator[QualityChunk]:
    """Yield the IoU of anchors [A,4] (and of ``pred_boxes`` [A,4]) with chunks of ``gt_boxes`` [G,4].

    All boxes xyxy pixels. Each chunk holds at most ``chunk_size`` GTs and every GT is in exactly one.
    With ``prune`` the GTs are split by position (k-d tree, chunks spanning at most ``leaf_extent`` px)
    and a chunk keeps only the anchors whose box or regressed box meets its bounding region: the others
    have IoU exactly 0 with all of its GTs.
    Without ``prune`` chunks follow GT index order and hold every anchor (at most A x ``chunk_size``).
    """
    anchors = anchors.float()
    gt_boxes = gt_boxes.float()
    pred = None if pred_boxes is None else pred_boxes.float()
    if not prune:
        for idx in torch.arange(gt_boxes.shape[0], device=gt_boxes.device).split(chunk_size):
            gts = gt_boxes.index_select(0, idx)
            yield QualityChunk(
                gt_index=idx,
                rows=None,
                anchor_iou=pairwise_iou(anchors, gts),
                pred_iou=None if pred is None else pairwise_iou(pred, gts),
            )
        return
    hull = anchors
    if pred is not None:  # the hull of anchor and regressed box meets a region whenever either does
        hull = torch.minimum(anchors, pred)
        hull[:, 2:] = torch.maximum(anchors[:, 2:], pred[:, 2:])
    for idx, gts, rows in _kd_chunks(gt_boxes, hull, chunk_size, leaf_extent):
        yield QualityChunk(
            gt_index=idx,
            rows=rows,
            anchor_iou=pairwise_iou(anchors.index_select(0, rows), gts),
            pred_iou=None if pred is None else pairwise_iou(pred.index_select(0, rows), gts),
        )


# ----------------------------------------------------------------------------------------------------
# Matching on a quality matrix, chunk by chunk
# ----------------------------------------------------------------------------------------------------


def _gather(t: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return t if rows is None else t[rows]


def _scatter(t: torch.Tensor, rows: torch.Tensor | None, values: torch.Tensor) -> None:
    if rows is None:
        t.copy_(values)
    else:
        t[rows] = values


class ThresholdMatcher:
    """Threshold matching folded over GT chunks of a quality matrix Q [A, G] (higher is better).

    Anchor i is a positive candidate of GT j when Q_ij > pos_j (>= with ``pos_inclusive``); a positive
    goes to the candidate with the largest Q_ij (ties: lowest GT index). An anchor without candidate is
    background when Q_ij < neg_j for every j and max_j Q_ij >= ``neg_low``, otherwise ignored. With
    ``low_quality`` each GT j whose best quality q_j is > 0 and >= ``min_pos_quality`` also takes its
    best anchor (every anchor tied with q_j when ``assign_all_ties``), overriding the above; when several
    GTs claim one anchor the highest GT index wins (mmdetection's loop order).

    Pairs absent from a chunk (anchors outside ``rows``) have quality exactly 0.
    """

    def __init__(
        self,
        num_anchors: int,
        device: torch.device,
        *,
        pos_inclusive: bool,
        neg_low: float = 0.0,
        low_quality: bool = False,
        min_pos_quality: float = 0.0,
        assign_all_ties: bool = True,
    ):
        self.pos_inclusive = pos_inclusive
        self.neg_low = neg_low
        self.low_quality = low_quality
        self.min_pos_quality = min_pos_quality
        self.assign_all_ties = assign_all_ties
        self.best_q = torch.zeros(num_anchors, device=device)  # max over GTs, floored at 0
        self.cand_q = torch.full((num_anchors,), -math.inf, device=device)
        self.cand_gt = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
        self.not_neg = torch.zeros(num_anchors, dtype=torch.bool, device=device)
        self.lq_gt = torch.full((num_anchors,), -1, dtype=torch.long, device=device)

    def update(
        self,
        rows: torch.Tensor | None,
        gt_index: torch.Tensor,
        quality: torch.Tensor,
        pos_thr: float | torch.Tensor,
        neg_thr: float | torch.Tensor,
        *,
        zero_is_negative: bool = True,
    ) -> None:
        """Fold in ``quality`` [r, g] of anchors ``rows`` [r] (None: all) and GTs ``gt_index`` [g].

        ``pos_thr``, ``neg_thr``: floats or per-GT tensors [g]. ``zero_is_negative``: the caller knows
        0 < neg_thr for every GT of the chunk (so anchors outside ``rows`` stay negative-eligible).
        """
        if not zero_is_negative and rows is not None:
            outside = torch.ones_like(self.not_neg)
            outside[rows] = False
            self.not_neg |= outside
        if quality.numel() == 0:
            return
        self._best_q_update(rows, quality.max(dim=1).values)
        cand = quality >= pos_thr if self.pos_inclusive else quality > pos_thr
        val, col = quality.masked_fill(~cand, -math.inf).max(dim=1)  # [r]
        gt = gt_index[col]
        cur_v, cur_g = _gather(self.cand_q, rows), _gather(self.cand_gt, rows)
        better = (val > cur_v) | ((val == cur_v) & (gt < cur_g) & (val > -math.inf))
        _scatter(self.cand_q, rows, torch.where(better, val, cur_v))
        _scatter(self.cand_gt, rows, torch.where(better, gt, cur_g))
        not_neg = (quality >= neg_thr).any(dim=1)
        _scatter(self.not_neg, rows, _gather(self.not_neg, rows) | not_neg)
        if self.low_quality:
            self._low_quality_update(rows, gt_index, quality)

    def _best_q_update(self, rows: torch.Tensor | None, row_max: torch.Tensor) -> None:
        _scatter(self.best_q, rows, torch.maximum(_gather(self.best_q, rows), row_max))

    def _low_quality_update(self, rows: torch.Tensor | None, gt_index: torch.Tensor, q: torch.Tensor) -> None:
        gmax, garg = q.max(dim=0)  # [g]: first maximal row, i.e. the lowest anchor index
        # A GT that meets no anchor at all (q_j = 0) takes none; mmdetection would hand it every anchor.
        valid = (gmax >= self.min_pos_quality) & (gmax > 0)
        if self.assign_all_ties:
            tie = (q == gmax[None]) & valid[None]
            claim = torch.where(tie, gt_index[None], -1).max(dim=1).values  # [r]
            _scatter(self.lq_gt, rows, torch.maximum(_gather(self.lq_gt, rows), claim))
        else:
            anchor = garg if rows is None else rows[garg]
            self.lq_gt.scatter_reduce_(0, anchor[valid], gt_index[valid], reduce="amax")

    def result(self) -> torch.Tensor:
        """The match vector int64 [A]: GT index, -1 background, -2 ignored."""
        matched = torch.full_like(self.cand_gt, -2)
        neg = ~self.not_neg
        if self.neg_low > 0:
            neg &= self.best_q >= self.neg_low
        matched[neg] = -1
        matched = torch.where(self.cand_gt >= 0, self.cand_gt, matched)
        if self.low_quality:
            matched = torch.where(self.lq_gt >= 0, self.lq_gt, matched)
        return matched


# ----------------------------------------------------------------------------------------------------
# Assigners
# ----------------------------------------------------------------------------------------------------


@dataclass
class AssignResult:
    """Output of an assigner. ``matched_gt`` [A] int64: >= 0 GT index, -1 background, -2 ignored."""

    matched_gt: torch.Tensor
    max_quality: torch.Tensor | None = None  # [A] best quality over GTs (floored at 0), for logging
    pos_thr: torch.Tensor | None = None  # [G] positive threshold per GT
    neg_thr: torch.Tensor | None = None  # [G] negative threshold per GT
    iou_max: torch.Tensor | None = None  # [G] best anchor IoU per GT
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


def _trivial(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> AssignResult | None:
    """All background when there is no GT (or no anchor); None when there is work to do."""
    if gt_boxes.shape[0] and anchors.shape[0]:
        return None
    a = anchors.shape[0]
    return AssignResult(
        matched_gt=torch.full((a,), -1, dtype=torch.long, device=anchors.device),
        max_quality=torch.zeros(a, device=anchors.device),
    )


class MaxIoUAssigner:
    """mmdetection's ``MaxIoUAssigner`` (same argument names and semantics), RetinaNet's defaults.

    Positive: max IoU >= ``pos_iou_thr`` (to the GT of that IoU). Background: ``0 <= max IoU <
    neg_iou_thr``, or ``low <= max IoU < high`` when ``neg_iou_thr`` is a (low, high) pair. The rest is
    ignored. With ``match_low_quality`` each GT then also takes its best anchor, every anchor tied with
    it when ``gt_max_assign_all``, provided that IoU >= ``min_pos_iou`` (and > 0: a GT overlapping no
    anchor takes none, where mmdetection would give it every zero-IoU anchor).
    ``chunk_size``, ``prune``: see :func:`iter_quality`.
    """

    def __init__(
        self,
        *,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float | Sequence[float] = 0.4,
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        match_low_quality: bool = True,
        chunk_size: int = 32,
        prune: bool = True,
    ):
        if not pos_iou_thr > 0:
            raise AdlaError(f"maxiou: pos_iou_thr must be > 0, got {pos_iou_thr}")
        if isinstance(neg_iou_thr, (int, float)):
            neg = (0.0, float(neg_iou_thr))
        elif len(neg_iou_thr) == 2:
            neg = (float(neg_iou_thr[0]), float(neg_iou_thr[1]))
        else:
            raise AdlaError(f"maxiou: neg_iou_thr must be a number or a (low, high) pair, got {neg_iou_thr}")
        if chunk_size < 1:
            raise AdlaError(f"maxiou: chunk_size must be >= 1, got {chunk_size}")
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = neg
        self.min_pos_iou = float(min_pos_iou)
        self.gt_max_assign_all = gt_max_assign_all
        self.match_low_quality = match_low_quality
        self.chunk_size = chunk_size
        self.prune = prune

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
        trivial = _trivial(anchors, gt_boxes)
        if trivial is not None:
            return trivial
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
        iou_max = torch.zeros(gt_boxes.shape[0], device=anchors.device)
        for chunk in iter_quality(anchors, gt_boxes, chunk_size=self.chunk_size, prune=self.prune):
            q = chunk.anchor_iou
            matcher.update(chunk.rows, chunk.gt_index, q, self.pos_iou_thr, high, zero_is_negative=high > 0)
            if q.shape[0]:
                iou_max[chunk.gt_index] = q.max(dim=0).values
        g = gt_boxes.shape[0]
        return AssignResult(
            matched_gt=matcher.result(),
            max_quality=matcher.best_q,
            pos_thr=torch.full((g,), self.pos_iou_thr, device=anchors.device),
            neg_thr=torch.full((g,), high, device=anchors.device),
            iou_max=iou_max,
        )


QUALITIES = ("diou", "md")


class AdaptiveDynamicAssigner:
    """ADLA (Ge et al., JSTARS 2024): adaptive per-GT thresholds and the dynamic IoU.

    Per GT j: IoU_max_j over every anchor of the image and its aspect ratio give Tp_j, Tn_j
    (:func:`adaptive_thresholds`; with ``adaptive=False`` the fixed ``fixed_pos_thr`` / ``fixed_neg_thr``).
    Per anchor i: D_ij (:func:`dynamic_iou`) with alpha = :func:`alpha_schedule` (``progress``,
    ``alpha0``); ``dynamic=False`` fixes alpha at 1. When ``pred_boxes`` is None or alpha == 1, D is the
    anchor IoU. ``quality="md"`` uses DAL's matching degree (beta = 1) in place of the dynamic IoU.
    Anchor i is a candidate of GT j when D_ij > Tp_j and goes to the candidate GT with the largest D_ij
    (ties: lowest GT index); without candidate it is background when D_ij < Tn_j for every j, else ignored.
    ``match_low_quality`` adds mmdetection's low-quality matching on D (each GT also takes its best
    anchors) for comparison; the paper does not use it. ``chunk_size``, ``prune``: see
    :func:`iter_quality`.

    Ablations of the paper: adaptive thresholds only = ``dynamic=False``; dynamic IoU with RetinaNet's
    0.5 / 0.4 = ``adaptive=False``; DAL's md in place of the dynamic IoU = ``quality="md"``.
    """

    def __init__(
        self,
        *,
        alpha0: float = 0.6,
        gamma: float = 1.5,
        p_tp: float = 0.75,
        p_tn: float = 0.8,
        tp_min: float = 0.1,
        tn_min: float = 0.05,
        adaptive: bool = True,
        dynamic: bool = True,
        quality: str = "diou",
        fixed_pos_thr: float = 0.5,
        fixed_neg_thr: float = 0.4,
        match_low_quality: bool = False,
        chunk_size: int = 32,
        prune: bool = True,
    ):
        if quality not in QUALITIES:
            raise AdlaError(f"adla: quality must be one of {list(QUALITIES)}, got {quality!r}")
        if not 0.0 <= alpha0 <= 1.0:
            raise AdlaError(f"adla: alpha0 must be in [0, 1], got {alpha0}")
        if not (tp_min > 0 and fixed_pos_thr > 0):
            raise AdlaError(f"adla: tp_min and fixed_pos_thr must be > 0, got {tp_min}, {fixed_pos_thr}")
        if chunk_size < 1:
            raise AdlaError(f"adla: chunk_size must be >= 1, got {chunk_size}")
        self.alpha0 = alpha0
        self.gamma = gamma
        self.p_tp, self.p_tn = p_tp, p_tn
        self.tp_min, self.tn_min = tp_min, tn_min
        self.adaptive = adaptive
        self.dynamic = dynamic
        self.quality = quality
        self.fixed_pos_thr, self.fixed_neg_thr = fixed_pos_thr, fixed_neg_thr
        self.match_low_quality = match_low_quality
        self.chunk_size = chunk_size
        self.prune = prune

    def alpha(self, progress: float) -> float:
        """Weight of the anchor IoU at ``progress`` (1 when ``dynamic`` is off)."""
        return alpha_schedule(progress, self.alpha0) if self.dynamic else 1.0

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
        trivial = _trivial(anchors, gt_boxes)
        if trivial is not None:
            trivial.alpha = alpha
            return trivial
        use_pred = pred_boxes is not None and alpha < 1.0
        beta = 1.0 if self.quality == "md" else None
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


def _paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a`` [..., 4] with ``b`` [..., 4] (broadcast), same formula as torchvision's."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a + area_b - inter)


class ATSSAssigner:
    """ATSS (Zhang et al., CVPR 2020), as mmdetection's ``ATSSAssigner``.

    Per GT: on each pyramid level the ``topk`` anchors whose centres are closest to the GT's centre are
    candidates; the IoU threshold is mean + std (unbiased) of the candidates' IoUs; a candidate whose IoU
    >= threshold and whose centre lies inside the GT (by more than ``center_eps`` px) is positive. An
    anchor positive for several GTs goes to the one of highest IoU (ties: lowest GT index). Everything
    else is background; ATSS ignores nothing. ``chunk_size``: GTs per chunk of the distance matrix.

    ``assign`` takes ``num_level_anchors``: the anchor count per level, in the order of ``anchors``
    (from :mod:`adla.anchors`: ``torch.bincount(anchor_levels(spec, H, W)).tolist()``). Without it all
    anchors count as one level (top-k over the whole image).
    """

    needs_level_counts = True  # the loss passes ``num_level_anchors`` to assigners that set this

    def __init__(self, *, topk: int = 9, center_eps: float = 0.01, chunk_size: int = 64):
        if topk < 1:
            raise AdlaError(f"atss: topk must be >= 1, got {topk}")
        if chunk_size < 1:
            raise AdlaError(f"atss: chunk_size must be >= 1, got {chunk_size}")
        self.topk = topk
        self.center_eps = center_eps
        self.chunk_size = chunk_size

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
        trivial = _trivial(anchors, gt_boxes)
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
            iou = _paired_iou(anchors[cand], gts[None])  # [K, g]
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


ASSIGNERS: dict[str, type] = {
    "maxiou": MaxIoUAssigner,
    "adla": AdaptiveDynamicAssigner,
    "atss": ATSSAssigner,
}


def build_assigner(name: str, params: dict | None = None):
    """An assigner from its name in :data:`ASSIGNERS` and its keyword arguments.

    Raises ``AdlaError`` naming an unknown assigner, an unknown parameter, or a bad value.
    """
    if name not in ASSIGNERS:
        raise AdlaError(f"unknown assigner {name!r}; known: {sorted(ASSIGNERS)}")
    cls = ASSIGNERS[name]
    params = dict(params or {})
    known = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise AdlaError(f"assigner {name!r}: unknown parameter(s) {unknown}; known: {known}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise AdlaError(f"assigner {name!r}: {exc}") from exc
