"""Threshold matching on a quality matrix, folded over chunks of GTs. It knows nothing of boxes."""

from __future__ import annotations

import math

import torch


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
        row_max = quality.amax(dim=1)  # [r]
        self._best_q_update(rows, row_max)
        if isinstance(pos_thr, torch.Tensor) or isinstance(neg_thr, torch.Tensor):
            cand = quality >= pos_thr if self.pos_inclusive else quality > pos_thr
            val, col = quality.masked_fill(~cand, -math.inf).max(dim=1)  # [r]
            not_neg = (quality >= neg_thr).any(dim=1)
        else:  # one threshold for all GTs: the row maximum decides, in fewer passes over Q
            cand = row_max >= pos_thr if self.pos_inclusive else row_max > pos_thr
            val = row_max.masked_fill(~cand, -math.inf)
            col = torch.zeros_like(cand, dtype=torch.long)
            hit = cand.nonzero().squeeze(1)  # few rows: argmax there only (first maximum: lowest GT index)
            col[hit] = quality.index_select(0, hit).argmax(dim=1)
            not_neg = row_max >= neg_thr
        gt = gt_index[col]
        cur_v, cur_g = _gather(self.cand_q, rows), _gather(self.cand_gt, rows)
        better = (val > cur_v) | ((val == cur_v) & (gt < cur_g) & (val > -math.inf))
        _scatter(self.cand_q, rows, torch.where(better, val, cur_v))
        _scatter(self.cand_gt, rows, torch.where(better, gt, cur_g))
        _scatter(self.not_neg, rows, _gather(self.not_neg, rows) | not_neg)
        if self.low_quality:
            self._low_quality_update(rows, gt_index, quality)

    def _best_q_update(self, rows: torch.Tensor | None, row_max: torch.Tensor) -> None:
        _scatter(self.best_q, rows, torch.maximum(_gather(self.best_q, rows), row_max))

    def _low_quality_update(self, rows: torch.Tensor | None, gt_index: torch.Tensor, q: torch.Tensor) -> None:
        # amax (no indices) is the cheaper pass where every tied anchor is taken anyway.
        gmax, garg = (q.amax(dim=0), None) if self.assign_all_ties else q.max(dim=0)  # [g]
        # A GT that meets no anchor at all (q_j = 0) takes none; mmdetection would hand it every anchor.
        valid = (gmax >= self.min_pos_quality) & (gmax > 0)
        if garg is None:
            r, c = (q == gmax.masked_fill(~valid, math.nan)).nonzero(as_tuple=True)  # NaN equals nothing
            anchor, gts = (r if rows is None else rows[r]), gt_index[c]
        else:  # max(dim=0) gives the first maximal row: the lowest anchor index
            anchor = garg if rows is None else rows[garg]
            anchor, gts = anchor[valid], gt_index[valid]
        self.lq_gt.scatter_reduce_(0, anchor, gts, reduce="amax")

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
