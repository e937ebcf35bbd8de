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
RFD is never 0, yet the KLD grows with the distance of the centres, so on CPU both stages run on the
prior-GT pairs near enough to matter (:mod:`~adla.train.assigners.spatial`), with the dense result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from adla.assigner_params import RFLAParams, with_changes
from adla.boxes import centers_sizes
from adla.errors import AdlaError
from adla.train.assigners.result import AssignResult, Static, check_chunk_size, trivial_result
from adla.train.assigners.spatial import (
    best_per_box,
    full_grid,
    shape_layers,
    top_k_per_gt,
    unique_rows,
    worth_pruning,
)

TRF_R50_FPN = RFLAParams.trf  # theoretical receptive field of P3, P4, P5, ResNet-50 FPN (px), as declared there
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


def _prior_features(priors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per prior [N]: cx, cy, w^2, h^2, ln(w h)."""
    p = centers_sizes(priors.float())
    return p[:, 0], p[:, 1], p[:, 2].square(), p[:, 3].square(), torch.log(p[:, 2] * p[:, 3])


def _gt_features(gt_boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per GT [M]: cx, cy, 1/(2w^2), 1/(2h^2), ln(w h) - 1, 2/w^2, 2/h^2."""
    g = centers_sizes(gt_boxes.float())
    g[:, 2:] = g[:, 2:].clamp(min=1e-6)  # a degenerate GT: a huge but finite KLD, as mmdet's eps
    inv_w2, inv_h2 = 0.5 / g[:, 2].square(), 0.5 / g[:, 3].square()
    return g[:, 0], g[:, 1], inv_w2, inv_h2, torch.log(g[:, 2] * g[:, 3]) - 1, 4 * inv_w2, 4 * inv_h2


def _kld(pf: Sequence[torch.Tensor], gf: Sequence[torch.Tensor]) -> torch.Tensor:
    """KL(prior || GT) from broadcastable features: a fixed sequence of single elementwise operations,
    so every element is the same float32 whatever the shape of the batch (a dense matrix or a list of
    pairs). Positive terms first, then the logs, then the centre distance."""
    pcx, pcy, pw2, ph2, lp = pf
    gcx, gcy, iw, ih, lg, iw4, ih4 = gf
    kl = (pw2 * iw).add_(ph2 * ih).sub_(lp).add_(lg)
    dx = pcx - gcx
    kl.add_(dx.mul_(dx).mul_(iw4))
    dy = pcy - gcy
    return kl.add_(dy.mul_(dy).mul_(ih4))


def pairwise_kld(priors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """KL(prior || GT) [N, M] of the Gaussians of xyxy boxes [N,4] and [M,4]; RFD = 1 / (1 + KLD).

    KL = (wp^2 + 4 dx^2) / (2 wg^2) + (hp^2 + 4 dy^2) / (2 hg^2) + ln(wg hg / (wp hp)) - 1.
    Elementwise, so each element is independent of the batch (see :class:`KLDPairs`).
    """
    pf = [f[:, None] for f in _prior_features(priors)]
    return _kld(pf, _gt_features(gt_boxes))


class KLDPairs:
    """Negated KLD (higher is better) of priors [N,4] and GTs [G,4] on lists of pairs, for exact spatial
    pruning (:class:`~adla.train.assigners.spatial.PairQuality`); build with :meth:`build`.

    :meth:`values` runs :func:`_kld` on gathered features: equal to :func:`pairwise_kld` to the last bit.
    Bound: KL = S + 2 dx^2 / wg^2 + 2 dy^2 / hg^2 with the size term S = phi(wp / wg) + phi(hp / hg),
    phi(x) = (x^2 - 1) / 2 - ln x >= 0, least over a layer's range of prior sizes where each ratio is
    nearest 1; so KL <= v only inside the ellipse 2 dx^2 / wg^2 + 2 dy^2 / hg^2 <= v - S_min. A margin
    covers the float32 rounding.
    """

    def __init__(self, pf, gf, gsize: torch.Tensor, layer: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        self.pf, self.gf = pf, gf
        self.num_boxes, self.num_gts = pf[0].shape[0], gf[0].shape[0]
        self.box_centres = torch.stack(pf[:2], 1).double()
        self.gt_centres = torch.stack(gf[:2], 1).double()
        self.box_layer, self.num_layers = layer, lo.shape[0]
        g = gsize.double()[None]  # [1, G, 2] GT (w, h), clamped as in the features
        x = torch.minimum(torch.maximum(g, lo[:, None]), hi[:, None]) / g  # [L, G, 2] ratio nearest 1
        self.size = ((x.square() - 1) * 0.5 - torch.log(x)).sum(-1)  # [L, G]
        iw, ih, lg = (f.double() for f in gf[2:5])
        big = hi[:, None]  # magnitude of the terms over the layer, for the rounding margin
        lp = torch.maximum(torch.log(lo.prod(1)).abs(), torch.log(hi.prod(1)).abs())[:, None]
        self.scale = big[..., 0].square() * iw + big[..., 1].square() * ih + lp + lg.abs() + 1
        self.coef = torch.stack([gf[5], gf[6]], 1).double()  # [G, 2]: 2/wg^2, 2/hg^2

    @classmethod
    def build(cls, priors: torch.Tensor, gt_boxes: torch.Tensor):
        """None when the priors have too many distinct shapes to prune by layer."""
        pf, gf = _prior_features(priors), _gt_features(gt_boxes)
        layers = shape_layers(centers_sizes(priors.float())[:, 2:])
        if layers is None or not (layers[1] > 0).all() or not all(f.isfinite().all() for f in (*pf, *gf)):
            return None  # also a prior of no area, or a non-finite box: the dense path
        gsize = centers_sizes(gt_boxes.float())[:, 2:].clamp(min=1e-6)
        return cls(pf, gf, gsize, *layers)

    costly = True  # see PairQuality

    def values(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return _kld([f.index_select(0, i) for f in self.pf], [f.index_select(0, j) for f in self.gf]).neg_()

    def block(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return _kld([f.index_select(0, rows)[:, None] for f in self.pf],
                    [f.index_select(0, cols) for f in self.gf]).neg_()

    def radius(self, layer: torch.Tensor, j: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        v = -level  # a KLD
        size, scale = self.size[layer, j], self.scale[layer, j]
        need = (v - size + 1e-5 * (scale + v.abs())) * (1 + 1e-5)
        r = (need.clamp(min=0)[:, None] / self.coef[j]).sqrt()  # [Q, 2]: 2 dx^2 / wg^2 <= need, etc.
        r = torch.where(need[:, None] >= 0, r, -1.0)
        return torch.where((torch.isinf(v) & (v > 0))[:, None], math.inf, r)

    def to_s(self, q: torch.Tensor) -> torch.Tensor:
        return -q

    def from_s(self, s: torch.Tensor) -> torch.Tensor:
        return -s

    def s_floor(self) -> torch.Tensor:
        return self.size.amin(1)


def _level_index(counts: Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    if sum(counts) != n:
        raise ValueError(f"num_level_anchors {list(counts)} sums to {sum(counts)}, not to {n} anchors")
    return torch.repeat_interleave(torch.arange(len(counts), device=device),
                                   torch.tensor(counts, device=device))


class RFLAssigner(Static):
    """RFLA's hierarchical label assignment on Gaussian receptive fields (see the module docstring).

    ``assign`` needs ``num_level_anchors`` (anchor count per level, in the order of ``anchors``), one
    entry per ``trf`` value at most. The stages run on the pairs near enough to matter (``prune``, an
    attribute; the result is the dense one exactly) on CPU for anchors x GTs >= ``prune_min_pairs``,
    else on dense [priors, ``chunk_size``] KLD matrices.
    """

    prune_min_pairs = 1 << 23  # anchors x GTs below which the dense path is the faster one (CPU)

    def __init__(self, params: RFLAParams | None = None, **changes: Any):
        p = with_changes(RFLAParams, params, changes, "rfla")
        trf, erf_fraction, topk, stage2_ratio, neg_thr, chunk_size = (
            p.trf, p.erf_fraction, p.topk, p.stage2_ratio, p.neg_thr, p.chunk_size)
        if len(topk) != 2 or min(topk) < 1:
            raise AdlaError(f"rfla: topk must be two counts >= 1 (stage 1, stage 2), got {topk}")
        if not (erf_fraction > 0 and stage2_ratio > 0 and all(t > 0 for t in trf)):
            raise AdlaError(f"rfla: trf, erf_fraction and stage2_ratio must be > 0, got {trf}, "
                            f"{erf_fraction}, {stage2_ratio}")
        if not 0 < neg_thr <= 1:
            raise AdlaError(f"rfla: neg_thr must be in (0, 1], got {neg_thr}")
        check_chunk_size("rfla", chunk_size)
        self.params = p
        self.trf = tuple(float(t) for t in trf)
        self.erf_fraction = float(erf_fraction)
        self.topk = (int(topk[0]), int(topk[1]))
        self.stage2_ratio = float(stage2_ratio)
        self.neg_thr = float(neg_thr)
        self.chunk_size = chunk_size
        self.prune = True  # exact spatial pruning; False: the dense [priors, chunk] matrices

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
        priors, inverse = unique_rows(rf)  # anchors sharing a prior: one row
        gts = gt_boxes.float()
        c = (priors[:, :2] + priors[:, 2:]) * 0.5
        half = (priors[:, 2:] - priors[:, :2]) * (0.5 * self.stage2_ratio)
        priors2 = torch.cat([c - half, c + half], dim=1)
        big = worth_pruning(anchors, gts, self.prune_min_pairs)
        stages = self._pruned_stages(priors, priors2, gts) if self.prune and big else None
        if stages is None:
            claim1, _, gt_best = self._stage(priors, gts, self.topk[0], best_per_prior=False)
            claim2, best2, _ = self._stage(priors2, gts, self.topk[1], True)
        else:
            claim1, gt_best, claim2, best2 = stages
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

    def _pruned_stages(self, priors: torch.Tensor, priors2: torch.Tensor, gts: torch.Tensor):
        """Both stages as :meth:`_stage` computes them, on the prior-GT pairs near enough to matter
        (:mod:`~adla.train.assigners.spatial`); None when the priors cannot be pruned by layer."""
        q1 = KLDPairs.build(priors, gts)
        q2 = KLDPairs.build(priors2, gts)
        if q1 is None or q2 is None:
            return None
        n = priors.shape[0]
        claims, bests = [], []
        for pq, k in ((q1, self.topk[0]), (q2, self.topk[1])):
            grid = full_grid(pq)
            i, j, best = top_k_per_gt(pq, grid, k)
            claims.append(torch.full((n,), -1, dtype=torch.long, device=priors.device)
                          .scatter_reduce_(0, i, j, reduce="amax"))
            bests.append(best)
        best2 = best_per_box(q2, grid=grid, gap0=1.0).neg_()
        return claims[0], bests[0].neg_(), claims[1], best2
