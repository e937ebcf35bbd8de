"""Every assigner against a dense reference: the whole A x G matrix and the rule read literally."""

from __future__ import annotations

import math

import pytest
import torch

from adla.anchors import AnchorSpec, anchor_levels, generate_anchors
from adla.boxes import aspect_ratios, paired_iou
from adla.train.assigners import (
    adaptive_thresholds,
    build_assigner,
    dynamic_iou,
    pairwise_iou,
    pairwise_nwd,
    receptive_fields,
)

SPEC = AnchorSpec()
SIZE = 96


def reference_match(q, pos, neg, *, inclusive, neg_low=0.0, low_quality=False, min_pos=0.0, all_ties=True):
    """Q [A, G], pos/neg [G]. Positive: the GT of largest Q among those with Q > pos (>=: inclusive),
    ties to the lowest GT index; background: Q < neg for every GT and max Q >= neg_low; else ignored.
    Low-quality: GT by GT in index order, each GT with best q > 0 and >= min_pos takes its best anchor
    (all tied ones with all_ties), later GTs overwriting earlier ones."""
    a, g = q.shape
    out = torch.full((a,), -2, dtype=torch.long)
    out[(q < neg).all(dim=1) & (q.max(dim=1).values.clamp(min=0) >= neg_low)] = -1
    cand = q >= pos if inclusive else q > pos
    for i in range(a):
        cols = cand[i].nonzero().flatten().tolist()
        if cols:
            out[i] = max(cols, key=lambda j: (q[i, j].item(), -j))
    if low_quality:
        for j in range(g):
            best = q[:, j].max()
            if best > 0 and best >= min_pos:
                if all_ties:
                    out[q[:, j] == best] = j
                else:
                    out[q[:, j].argmax()] = j
    return out


def random_case(seed, n_gts=12):
    gen = torch.Generator().manual_seed(seed)
    anchors = generate_anchors(SPEC, SIZE, SIZE)
    wh = torch.rand(n_gts, 2, generator=gen) * 30 + 2
    xy = torch.rand(n_gts, 2, generator=gen) * (SIZE - wh)
    gts = torch.cat([xy, xy + wh], dim=1)
    pred = anchors + torch.randn(anchors.shape, generator=gen) * 2
    return anchors, gts, pred


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, params, quality", [
    ("maxiou", {}, pairwise_iou),
    ("maxiou", {"gt_max_assign_all": False, "neg_iou_thr": (0.1, 0.4)}, pairwise_iou),
    ("maxiou", {"min_pos_iou": 0.3, "match_low_quality": True}, pairwise_iou),
    ("nwd", {}, pairwise_nwd),
    ("nwd", {"constant": 6.0, "match_low_quality": False}, lambda a, b: pairwise_nwd(a, b, 6.0)),
])
def test_maxiou_family_matches_reference(seed, name, params, quality):
    anchors, gts, _ = random_case(seed)
    assigner = build_assigner(name, params)
    q = quality(anchors, gts)
    g = gts.shape[0]
    low, high = assigner.neg_iou_thr
    ref = reference_match(q, torch.full((g,), assigner.pos_iou_thr), torch.full((g,), high), inclusive=True,
                          neg_low=low, low_quality=assigner.match_low_quality, min_pos=assigner.min_pos_iou,
                          all_ties=assigner.gt_max_assign_all)
    got = assigner.assign(anchors, gts)
    assert torch.equal(got.matched_gt, ref)
    assert (ref >= 0).any() and (ref == -1).any()
    if name == "nwd":  # the spatially pruned path, forced at this size, matches the reference too
        assigner.prune_min_pairs = 0
        assert torch.equal(assigner.assign(anchors, gts).matched_gt, ref)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("params", [{}, {"adaptive": False}, {"matching": "md", "match_low_quality": True},
                                    {"alpha_start": 0.0, "alpha_end": 0.2, "alpha0": 0.3}])
def test_adla_matches_reference(seed, params):
    anchors, gts, pred = random_case(seed)
    assigner = build_assigner("adla", params)
    alpha = assigner.alpha(0.7)
    a_iou, r_iou = pairwise_iou(anchors, gts), pairwise_iou(pred, gts)
    d = dynamic_iou(a_iou, r_iou, alpha, assigner.gamma, 1.0 if assigner.matching == "md" else None)
    if assigner.adaptive:
        tp, tn = adaptive_thresholds(a_iou.max(dim=0).values, aspect_ratios(gts))
    else:
        tp, tn = torch.full((gts.shape[0],), 0.5), torch.full((gts.shape[0],), 0.4)
    ref = reference_match(d, tp, tn, inclusive=False, low_quality=assigner.match_low_quality)
    got = assigner.assign(anchors, gts, pred_boxes=pred, progress=0.7)
    assert torch.equal(got.matched_gt, ref)
    assert (ref >= 0).any() and (ref == -1).any()


def reference_rfla(anchors, gts, levels, *, trf=(91.0, 267.0, 427.0), fraction=0.5, topk=(3, 1), ratio=0.9,
                   neg_thr=0.8):
    """HLA read literally: RFD of every receptive field with every GT, in float64."""
    def rfd(p, g):  # mmdet-rfla's 'kl' metric: 1 / (1 + KL(prior || GT))
        pc, gc = (p[:, None, :2] + p[:, None, 2:]) / 2, (g[None, :, :2] + g[None, :, 2:]) / 2
        pw, ph = (p[:, None, 2] - p[:, None, 0]), (p[:, None, 3] - p[:, None, 1])
        gw, gh = (g[None, :, 2] - g[None, :, 0]), (g[None, :, 3] - g[None, :, 1])
        d = pc - gc
        kl = (pw**2 / gw**2 + ph**2 / gh**2 + 4 * d[..., 0]**2 / gw**2 + 4 * d[..., 1]**2 / gh**2
              + torch.log(gw**2 / pw**2) + torch.log(gh**2 / ph**2) - 2) / 2
        return 1 / (1 + kl)

    rf = receptive_fields(anchors, levels, trf, fraction).double()
    priors, inv = torch.unique(rf, dim=0, return_inverse=True)
    c, half = (priors[:, :2] + priors[:, 2:]) / 2, (priors[:, 2:] - priors[:, :2]) * ratio / 2
    stages = []
    for p, k in ((priors, topk[0]), (torch.cat([c - half, c + half], 1), topk[1])):
        q = rfd(p, gts.double())
        out = torch.where(q.max(dim=1).values < neg_thr, -1, -2)
        for j in range(gts.shape[0]):
            out[q[:, j] >= q[:, j].topk(k).values[-1]] = j
        stages.append(out)
    return torch.where(stages[0] >= 0, stages[0], stages[1])[inv]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("params", [{}, {"topk": [2, 2], "stage2_ratio": 0.7, "neg_thr": 0.3}])
def test_rfla_matches_reference(seed, params):
    anchors, gts, _ = random_case(seed)
    levels = anchor_levels(SPEC, SIZE, SIZE)
    counts = torch.bincount(levels).tolist()
    assigner = build_assigner("rfla", params)
    ref = reference_rfla(anchors, gts, levels, topk=assigner.topk, ratio=assigner.stage2_ratio,
                         neg_thr=assigner.neg_thr)
    got = assigner.assign(anchors, gts, num_level_anchors=counts)
    assert torch.equal(got.matched_gt, ref)
    assert (ref >= 0).sum() >= 9 * gts.shape[0] // 2
    assigner.prune_min_pairs = 0  # the spatially pruned path, forced at this size
    assert torch.equal(assigner.assign(anchors, gts, num_level_anchors=counts).matched_gt, ref)


def reference_atss(anchors, gts, counts, topk=9):
    """Per GT: top-k closest anchor centres per level; IoU >= mean + std and centre inside: positive;
    an anchor positive for several GTs goes to the highest IoU, then the lowest GT index."""
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    iou = pairwise_iou(anchors, gts)
    best = torch.full((anchors.shape[0],), -math.inf)
    out = torch.full((anchors.shape[0],), -1, dtype=torch.long)
    for j, gt in enumerate(gts):
        dist = ((centers - (gt[:2] + gt[2:]) / 2) ** 2).sum(dim=1).sqrt()
        cand = torch.cat([dist[s:s + n].topk(min(topk, n), largest=False).indices + s
                          for s, n in zip([0, *torch.tensor(counts).cumsum(0)[:-1].tolist()], counts)])
        thr = iou[cand, j].mean() + iou[cand, j].std()
        inside = torch.cat([centers[cand] - gt[:2], gt[2:] - centers[cand]], 1).amin(dim=1) > 0.01
        for i in cand[(iou[cand, j] >= thr) & inside].tolist():
            if iou[i, j] > best[i]:
                best[i], out[i] = iou[i, j], j
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_atss_matches_reference(seed):
    anchors, gts, _ = random_case(seed)
    counts = torch.bincount(anchor_levels(SPEC, SIZE, SIZE)).tolist()
    got = build_assigner("atss", {}).assign(anchors, gts, num_level_anchors=counts)
    ref = reference_atss(anchors, gts, counts)
    assert torch.equal(got.matched_gt, ref)
    assert (ref >= 0).sum() >= gts.shape[0]
    assert torch.allclose(paired_iou(anchors[ref >= 0], gts[ref[ref >= 0]]), got.max_quality[ref >= 0])
