"""``rfla``: Gaussian receptive-field label assignment (Xu et al., ECCV 2022, "RFLA: Gaussian Receptive
Field based Label Assignment for Tiny Object Detection"), on our anchors.

The prior of a feature point is its effective receptive field (ERF), a Gaussian at the point: a box of
side ``erf_fraction`` x the level's theoretical receptive field (TRF), taking each anchor's aspect ratio
(as mmdet-rfla's ``RFGenerator`` does for RetinaNet's three ratios). Anchors of one point and one ratio
(our three scales) share a prior, so they are positive together. Quality is the receptive field distance
RFD = 1 / (1 + KL(prior || GT)) of the two Gaussians N(centre, diag(w^2/4, h^2/4)).
Hierarchical label assignment (HLA), as mmdet-rfla's ``HieAssigner``: stage 1, each GT takes its
``topk[0]`` priors of highest RFD; stage 2, with priors shrunk by ``stage2_ratio``, each GT takes its
``topk[1]`` best, and every anchor not positive in stage 1 gets its stage-2 label: positive, background
when its best RFD < ``neg_thr``, otherwise ignored. An anchor claimed by several GTs in one stage goes
to the highest GT index (mmdet's loop order); every prior tied with a GT's k-th best RFD counts.
Constants from mmdet-rfla's ``aitod_retinanet_r50_rfla_kld_1x``: TRF of a ResNet-50 FPN P3-P5 91, 267,
427 px; ERF fraction 0.5; top-k (3, 1); stage-2 ratio 0.9; background below RFD 0.8.
RFD is never 0: every prior is scored against every GT (no pruning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from adla.boxes import centers_sizes
from adla.errors import AdlaError
from adla.train.assigners.result import AssignResult, Static, check_chunk_size, trivial_result

TRF_R50_FPN = (91.0, 267.0, 427.0)  # theoretical receptive field of P3, P4, P5, ResNet-50 FPN (px)
_GRID = 1024.0  # priors are snapped to 1/1024 px and 1/1024 of a log2 aspect ratio, so equal ones merge


def receptive_fields(
    anchors: torch.Tensor, levels: torch.Tensor, trf: Sequence[float], erf_fraction: float
) -> torch.Tensor:
    """ERF boxes [A,4] xyxy of anchors [A,4] on pyramid ``levels`` [A] (int64, 0 = P3).

    Centre: the anchor's (snapped to 1/1024 px); side erf_fraction x trf[level], with the anchor's w/h.
    """
    cs = centers_sizes(anchors.float())
    c = torch.round(cs[:, :2] * _GRID) / _GRID
    log_r = torch.round(torch.log2(cs[:, 2] / cs[:, 3]) * _GRID) / _GRID  # log2(w / h)
    side = torch.tensor([float(t) * erf_fraction for t in trf], device=anchors.device)[levels]
    half = torch.stack([side * torch.exp2(log_r / 2), side * torch.exp2(-log_r / 2)], dim=1) * 0.5
    return torch.cat([c - half, c + half], dim=1)


def pairwise_kld(priors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """KL(prior || GT) [N, M] of the Gaussians of xyxy boxes [N,4] and [M,4]; RFD = 1 / (1 + KLD).

    KL = (wp^2 + 4 dx^2) / (2 wg^2) + (hp^2 + 4 dy^2) / (2 hg^2) + ln(wg hg / (wp hp)) - 1.
    """
    p, g = centers_sizes(priors.float()), centers_sizes(gt_boxes.float())
    g[:, 2:] = g[:, 2:].clamp(min=1e-6)  # a degenerate GT: a huge but finite KLD, as mmdet's eps
    inv_w2, inv_h2 = 0.5 / g[:, 2].square(), 0.5 / g[:, 3].square()  # [M]
    # The terms separable in (prior, GT) as one small product: no cancellation, as they add positives.
    f_p = torch.stack([p[:, 2].square(), p[:, 3].square(), -torch.log(p[:, 2] * p[:, 3]),
                       torch.ones_like(p[:, 0])], dim=1)  # [N, 4]
    f_g = torch.stack([inv_w2, inv_h2, torch.ones_like(inv_w2), torch.log(g[:, 2] * g[:, 3]) - 1], dim=1)
    kl = f_p @ f_g.T  # [N, M]
    dx = (p[:, 0, None] - g[:, 0]).square_()
    kl.addcmul_(dx, 4 * inv_w2)
    dy = torch.sub(p[:, 1, None], g[:, 1], out=dx).square_()
    return kl.addcmul_(dy, 4 * inv_h2)


def _level_index(counts: Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    if sum(counts) != n:
        raise ValueError(f"num_level_anchors {list(counts)} sums to {sum(counts)}, not to {n} anchors")
    return torch.repeat_interleave(torch.arange(len(counts), device=device),
                                   torch.tensor(counts, device=device))


class RFLAssigner(Static):
    """RFLA's hierarchical label assignment on Gaussian receptive fields (see the module docstring).

    ``assign`` needs ``num_level_anchors`` (anchor count per level, in the order of ``anchors``), one
    entry per ``trf`` value at most. ``chunk_size``: GTs per chunk of the [priors, chunk] KLD matrix.
    """

    needs_level_counts = True  # the loss passes ``num_level_anchors`` to assigners that set this

    def __init__(
        self,
        *,
        trf: Sequence[float] = TRF_R50_FPN,
        erf_fraction: float = 0.5,
        topk: Sequence[int] = (3, 1),
        stage2_ratio: float = 0.9,
        neg_thr: float = 0.8,
        chunk_size: int = 64,
    ):
        if len(topk) != 2 or min(topk) < 1:
            raise AdlaError(f"rfla: topk must be two counts >= 1 (stage 1, stage 2), got {topk}")
        if not (erf_fraction > 0 and stage2_ratio > 0 and all(t > 0 for t in trf)):
            raise AdlaError(f"rfla: trf, erf_fraction and stage2_ratio must be > 0, got {trf}, "
                            f"{erf_fraction}, {stage2_ratio}")
        if not 0 < neg_thr <= 1:
            raise AdlaError(f"rfla: neg_thr must be in (0, 1], got {neg_thr}")
        check_chunk_size("rfla", chunk_size)
        self.trf = tuple(float(t) for t in trf)
        self.erf_fraction = float(erf_fraction)
        self.topk = (int(topk[0]), int(topk[1]))
        self.stage2_ratio = float(stage2_ratio)
        self.neg_thr = float(neg_thr)
        self.chunk_size = chunk_size

    def _stage(self, priors: torch.Tensor, gt_boxes: torch.Tensor, k: int, best_per_prior: bool):
        """Per prior: the highest GT index among the GTs that rank it in their top ``k`` (-1: none), and
        (if asked) its smallest KLD over GTs; per GT its smallest KLD. KLD ranks like RFD, reversed."""
        n = priors.shape[0]
        claim = torch.full((n,), -1, dtype=torch.long, device=priors.device)
        best = torch.full((n,), math.inf, device=priors.device) if best_per_prior else None
        gt_best = []
        for idx in torch.arange(gt_boxes.shape[0], device=gt_boxes.device).split(self.chunk_size):
            kl = pairwise_kld(priors, gt_boxes[idx])  # [n, g]
            kth = kl.topk(min(k, n), dim=0, largest=False).values  # [k', g] ascending
            gt_best.append(kth[0])
            r, c = (kl <= kth[-1]).nonzero(as_tuple=True)  # ties with the k-th best count too
            claim.scatter_reduce_(0, r, idx[c], reduce="amax")
            if best is not None:
                torch.minimum(best, kl.amin(dim=1), out=best)
        return claim, best, torch.cat(gt_best)

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
        """Match anchors [A,4] to ``gt_boxes`` [G,4] (xyxy px) on ``num_level_anchors`` levels.
        ``gt_labels``, ``pred_boxes`` and ``progress`` are ignored."""
        trivial = trivial_result(anchors, gt_boxes)
        if trivial is not None:
            return trivial
        if num_level_anchors is None:
            raise AdlaError("rfla: assign needs num_level_anchors (the receptive field depends on the level)")
        if len(num_level_anchors) > len(self.trf):
            raise AdlaError(f"rfla: {len(num_level_anchors)} levels but trf has {len(self.trf)} values")
        levels = _level_index(num_level_anchors, anchors.shape[0], anchors.device)
        rf = receptive_fields(anchors, levels, self.trf, self.erf_fraction)
        priors, inverse = torch.unique(rf, dim=0, return_inverse=True)  # anchors sharing a prior: one row
        gts = gt_boxes.float()
        claim1, _, gt_best = self._stage(priors, gts, self.topk[0], best_per_prior=False)
        c = (priors[:, :2] + priors[:, 2:]) * 0.5
        half = (priors[:, 2:] - priors[:, :2]) * (0.5 * self.stage2_ratio)
        claim2, best2, _ = self._stage(torch.cat([c - half, c + half], dim=1), gts, self.topk[1], True)
        rfd2 = 1.0 / (1.0 + best2)
        stage2 = torch.where(claim2 >= 0, claim2, torch.where(rfd2 < self.neg_thr, -1, -2))
        matched = torch.where(claim1 >= 0, claim1, stage2)[inverse]
        g = gt_boxes.shape[0]
        return AssignResult(
            matched_gt=matched,
            max_quality=rfd2[inverse],
            neg_thr=torch.full((g,), self.neg_thr, device=anchors.device),
            iou_max=1.0 / (1.0 + gt_best),
        )
