"""Assigners: hand-computed cases with literal expectations, plus randomized property checks."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from adla.anchors import AnchorSpec, anchor_levels, generate_anchors
from adla.errors import AdlaError
from adla.train.assigners import (
    ASSIGNERS,
    AdaptiveDynamicAssigner,
    ATSSAssigner,
    MaxIoUAssigner,
    adaptive_thresholds,
    alpha_schedule,
    build_assigner,
    dynamic_iou,
    iter_quality,
    pairwise_iou,
)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def long(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# IoU with gt0 = [0,0,10,10]: a0 1.0, a1 0.5, a2 100/220 = 0.4545, a4 1/3; with gt1 = [50,50,70,70]: a3 0.25.
MAXIOU_ANCHORS = t([[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 22], [50, 50, 60, 60], [0, 0, 10, 30],
                    [200, 200, 210, 210]])
MAXIOU_GTS = t([[0, 0, 10, 10], [50, 50, 70, 70]])
LABELS2 = long([0, 1])


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, [0, 0, -2, 1, -1, -1]),  # a3 only through low-quality matching
        ({"match_low_quality": False}, [0, 0, -2, -1, -1, -1]),
        ({"match_low_quality": False, "neg_iou_thr": (0.3, 0.4)}, [0, 0, -2, -2, -1, -2]),
        ({"min_pos_iou": 0.3}, [0, 0, -2, -1, -1, -1]),  # gt1's best IoU 0.25 < 0.3
        ({"pos_iou_thr": 0.45}, [0, 0, 0, 1, -1, -1]),
    ],
)
def test_maxiou_hand_computed(params, expected):
    result = MaxIoUAssigner(**params).assign(MAXIOU_ANCHORS, MAXIOU_GTS, LABELS2)
    assert torch.equal(result.matched_gt, long(expected))


def test_maxiou_max_quality_and_iou_max():
    result = MaxIoUAssigner().assign(MAXIOU_ANCHORS, MAXIOU_GTS, LABELS2)
    assert torch.allclose(result.max_quality, t([1.0, 0.5, 100 / 220, 0.25, 1 / 3, 0.0]))
    assert torch.allclose(result.iou_max, t([1.0, 0.25]))


def test_maxiou_low_quality_ties():
    # gt [100,100,120,120]: b0 and b1 both have IoU 0.25, b2 0.0625.
    anchors = t([[100, 100, 110, 110], [110, 110, 120, 120], [100, 100, 105, 105]])
    gt = t([[100, 100, 120, 120]])
    label = long([0])
    assert torch.equal(MaxIoUAssigner().assign(anchors, gt, label).matched_gt, long([0, 0, -1]))
    one = MaxIoUAssigner(gt_max_assign_all=False).assign(anchors, gt, label)
    assert torch.equal(one.matched_gt, long([0, -1, -1]))


def test_maxiou_two_identical_gts():
    anchors = t([[0, 0, 10, 10], [40, 40, 50, 50]])
    gts = t([[0, 0, 10, 10], [0, 0, 10, 10]])
    # Positive by threshold: the first GT of the tie; low-quality matching: the last GT claims it
    # (mmdetection's loop order).
    assert torch.equal(MaxIoUAssigner(match_low_quality=False).assign(anchors, gts, LABELS2).matched_gt,
                       long([0, -1]))
    assert torch.equal(MaxIoUAssigner().assign(anchors, gts, LABELS2).matched_gt, long([1, -1]))


def test_adaptive_thresholds_literal():
    assert adaptive_thresholds(1.0, 1.0) == (0.5, 0.4)
    tp, tn = adaptive_thresholds(0.5, 0.5)  # mp 0.9; T_rp 0.5 * 0.6875 * 0.9; T_rn T_rp * 0.75
    assert tp == pytest.approx(0.309375, abs=1e-12)
    assert tn == pytest.approx(0.23203125, abs=1e-12)
    # Floors of eq. (5).
    assert adaptive_thresholds(0.05, 1.0) == (0.1, 0.05)
    tp_t, tn_t = adaptive_thresholds(t([1.0, 0.5]), t([1.0, 0.5]))
    assert torch.allclose(tp_t, t([0.5, 0.309375])) and torch.allclose(tn_t, t([0.4, 0.23203125]))


@pytest.mark.parametrize(
    "p, alpha", [(0.0, 1.0), (0.05, 1.0), (0.1, 1.0), (0.3, 0.8), (0.5, 0.6), (0.9, 0.6)]
)
def test_alpha_schedule(p, alpha):
    assert alpha_schedule(p, 0.6) == pytest.approx(alpha, abs=1e-12)


def test_alpha_schedule_other_alpha0():
    assert alpha_schedule(0.2, 0.4) == pytest.approx(0.85)
    assert alpha_schedule(0.7, 0.4) == 0.4


# ADLA on a 6x6 GT: a0 16x16 IoU 36/256 = 0.140625, a1 20x20 IoU 0.09, a2 far away.
# Tp = 0.140625 (0.75 - 0.140625^2/4) = 0.104774, Tn = Tp (0.8 - 0.859375^2/5) = 0.068344.
ADLA_ANCHORS = t([[0, 0, 16, 16], [0, 0, 20, 20], [100, 100, 116, 116]])
ADLA_GT = t([[5, 5, 11, 11]])
ADLA_PRED = t([[0, 0, 16, 16], [5, 5, 11, 11], [100, 100, 116, 116]])  # a1 regressed onto the GT


def test_adla_adaptive_thresholds_only():
    res = AdaptiveDynamicAssigner().assign(ADLA_ANCHORS, ADLA_GT, long([0]))
    assert torch.equal(res.matched_gt, long([0, -2, -1]))
    assert torch.allclose(res.iou_max, t([0.140625]))
    assert torch.allclose(res.pos_thr, t([0.104774]), atol=1e-6)
    assert torch.allclose(res.neg_thr, t([0.068344]), atol=1e-6)
    # Max-IoU: the 6x6 GT is positive only through low-quality matching.
    lq = MaxIoUAssigner().assign(ADLA_ANCHORS, ADLA_GT, long([0]))
    assert torch.equal(lq.matched_gt, long([0, -1, -1]))
    no_lq = MaxIoUAssigner(match_low_quality=False).assign(ADLA_ANCHORS, ADLA_GT, long([0]))
    assert torch.equal(no_lq.matched_gt, long([-1, -1, -1]))


def test_adla_dynamic_iou_promotes_a_well_regressed_anchor():
    assigner = AdaptiveDynamicAssigner()
    # progress 0: alpha 1, D = anchor IoU, predictions make no difference.
    early = assigner.assign(ADLA_ANCHORS, ADLA_GT, long([0]), ADLA_PRED, progress=0.0)
    assert early.alpha == 1.0 and torch.equal(early.matched_gt, long([0, -2, -1]))
    # progress 0.7: alpha 0.6; a1: D = 0.6 * 0.09 + 0.4 * 1 - 0.4 * 0.91^1.5 = 0.10677 > Tp 0.10477.
    late = assigner.assign(ADLA_ANCHORS, ADLA_GT, long([0]), ADLA_PRED, progress=0.7)
    assert late.alpha == pytest.approx(0.6) and torch.equal(late.matched_gt, long([0, 0, -1]))
    assert late.max_quality[1].item() == pytest.approx(0.10677, abs=1e-4)
    # DAL's md (beta 1): 0.454 - 0.868 < 0, below Tn: background.
    md = AdaptiveDynamicAssigner(matching="md").assign(ADLA_ANCHORS, ADLA_GT, long([0]), ADLA_PRED, 0.7)
    assert torch.equal(md.matched_gt, long([0, -1, -1]))
    # Fixed RetinaNet thresholds: nothing reaches 0.5, everything is below 0.4.
    fixed = AdaptiveDynamicAssigner(adaptive=False).assign(ADLA_ANCHORS, ADLA_GT, long([0]), ADLA_PRED, 0.7)
    assert torch.equal(fixed.matched_gt, long([-1, -1, -1]))
    # dynamic=False: alpha stays 1 at any progress.
    static = AdaptiveDynamicAssigner(dynamic=False).assign(ADLA_ANCHORS, ADLA_GT, long([0]), ADLA_PRED, 0.7)
    assert static.alpha == 1.0 and torch.equal(static.matched_gt, long([0, -2, -1]))


def test_adla_positive_goes_to_largest_d():
    # a0 overlaps gt0 (IoU 0.5) and gt1 (IoU 100/180 = 0.556); both above the threshold 0.3.
    anchors = t([[0, 0, 10, 10]])
    gts = t([[0, 0, 10, 20], [0, 0, 10, 18]])
    res = AdaptiveDynamicAssigner(adaptive=False, fixed_pos_thr=0.3).assign(anchors, gts, LABELS2)
    assert torch.equal(res.matched_gt, long([1]))


def test_adla_low_quality_option():
    anchors = t([[0, 0, 16, 16], [100, 100, 116, 116]])
    gt = t([[5, 5, 11, 11]])
    plain = AdaptiveDynamicAssigner(adaptive=False).assign(anchors, gt, long([0]))
    forced = AdaptiveDynamicAssigner(adaptive=False, match_low_quality=True).assign(anchors, gt, long([0]))
    assert torch.equal(plain.matched_gt, long([-1, -1]))
    assert torch.equal(forced.matched_gt, long([0, -1]))


def random_boxes(n: int, gen: torch.Generator, size: float = 128.0, lo: float = 2.0, hi: float = 40.0):
    wh = torch.rand(n, 2, generator=gen) * (hi - lo) + lo
    xy = torch.rand(n, 2, generator=gen) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def test_uniform_thresholds_reduce_to_maxiou():
    gen = torch.Generator().manual_seed(0)
    anchors = generate_anchors(AnchorSpec(), 128, 128)
    for _ in range(5):
        gts = random_boxes(20, gen)
        labels = torch.zeros(20, dtype=torch.long)
        ref = MaxIoUAssigner(match_low_quality=False).assign(anchors, gts, labels).matched_gt
        adla = AdaptiveDynamicAssigner(adaptive=False, dynamic=False).assign(anchors, gts, labels).matched_gt
        assert torch.equal(adla, ref)
        assert (ref >= 0).any() and (ref == -2).any() and (ref == -1).any()


def test_dynamic_iou_properties():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(10000, generator=gen, dtype=torch.float64)
    r = torch.rand(10000, generator=gen, dtype=torch.float64)
    assert torch.equal(dynamic_iou(a, r, 1.0), a)  # alpha 1: the anchor IoU exactly
    up = r > a  # the regressed box is better: D exceeds the anchor IoU for any alpha in (0, 1)
    for alpha in (0.1, 0.4, 0.6, 0.9):
        d = dynamic_iou(a, r, alpha, gamma=1.5)
        assert (d[up] > a[up]).all()
    # DAL's md (beta 1) falls below the anchor IoU for a low anchor IoU even when R > A (Fig. 6a) ...
    md = dynamic_iou(torch.tensor([0.3]), torch.tensor([0.5]), 0.6, beta=1.0)
    assert md.item() == pytest.approx(0.38 - 0.2**1.5) and md.item() < 0.3
    # ... where the dynamic IoU stays above it.
    d = dynamic_iou(torch.tensor([0.3]), torch.tensor([0.5]), 0.6)
    assert d.item() == pytest.approx(0.38 - 0.4 * 0.2**1.5) and d.item() > 0.3


def test_pairwise_iou_matches_torchvision():
    gen = torch.Generator().manual_seed(2)
    a, b = random_boxes(300, gen), random_boxes(40, gen)
    assert torch.equal(pairwise_iou(a, b), box_iou(a, b))


@pytest.mark.parametrize("name, params", [
    ("maxiou", {}),
    ("maxiou", {"gt_max_assign_all": False}),
    ("maxiou", {"neg_iou_thr": (0.1, 0.4)}),
    ("adla", {}),
    ("adla", {"matching": "md", "match_low_quality": True}),
    ("adla", {"adaptive": False}),
])
def test_chunked_equals_unchunked(name, params):
    gen = torch.Generator().manual_seed(3)
    anchors = generate_anchors(AnchorSpec(), 128, 128)
    pred = anchors + torch.randn(anchors.shape, generator=gen) * 3
    gts = torch.cat([random_boxes(60, gen, hi=16), random_boxes(5, gen, lo=30, hi=90)])
    gts = torch.cat([gts, gts[:3]])  # duplicates: ties between GTs
    labels = torch.zeros(gts.shape[0], dtype=torch.long)
    ref = build_assigner(name, {**params, "prune": False, "chunk_size": 10_000})
    ref_res = ref.assign(anchors, gts, labels, pred, 0.7)
    for chunk_size in (1, 4, 32):
        assigner = build_assigner(name, {**params, "chunk_size": chunk_size})
        res = assigner.assign(anchors, gts, labels, pred, 0.7)
        assert torch.equal(res.matched_gt, ref_res.matched_gt)
        assert torch.equal(res.iou_max, ref_res.iou_max)
        assert torch.equal(res.pos_thr, ref_res.pos_thr)
    assert (ref_res.matched_gt >= 0).sum() > 20


def test_iter_quality_covers_every_gt_once_and_prunes_only_zeros():
    gen = torch.Generator().manual_seed(4)
    anchors = generate_anchors(AnchorSpec(), 128, 128)
    gts = random_boxes(50, gen, hi=12)
    full = box_iou(anchors, gts)
    seen = []
    for chunk in iter_quality(anchors, gts, chunk_size=8):
        seen += chunk.gt_index.tolist()
        assert torch.equal(chunk.anchor_iou, full[chunk.rows][:, chunk.gt_index])
        outside = torch.ones(anchors.shape[0], dtype=torch.bool)
        outside[chunk.rows] = False
        assert (full[outside][:, chunk.gt_index] == 0).all()
    assert sorted(seen) == list(range(50))


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_no_gt_is_all_background_and_no_anchor_is_fine(name):
    assigner = build_assigner(name, {})
    anchors = generate_anchors(AnchorSpec(), 64, 64)
    res = assigner.assign(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), anchors, 0.7)
    assert torch.equal(res.matched_gt, torch.full((anchors.shape[0],), -1, dtype=torch.long))
    empty = assigner.assign(torch.zeros(0, 4), t([[0, 0, 8, 8]]), long([0]), torch.zeros(0, 4), 0.7)
    assert empty.matched_gt.shape == (0,) and empty.matched_gt.dtype == torch.long


# ATSS: one level of 10x10 anchors at centres x = 5, 15, 25, 35 (y = 5); gt0 [2,0,14,10] (centre 8, 5).
ATSS_ANCHORS = t([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10]])


def test_atss_tiny_case():
    # top-3 by centre distance: a0, a1, a2 with IoU 4/7, 2/9, 0: threshold mean + std = 0.5526; a0 only.
    res = ATSSAssigner(topk=3).assign(ATSS_ANCHORS, t([[2, 0, 14, 10]]), long([0]))
    assert torch.equal(res.matched_gt, long([0, -1, -1, -1]))
    assert res.pos_thr[0].item() == pytest.approx(0.26455 + 0.28807, abs=1e-4)
    # gt1 = a0 exactly: a0 is positive for both GTs and goes to the higher IoU (1.0, gt1).
    both = ATSSAssigner(topk=3).assign(ATSS_ANCHORS, t([[2, 0, 14, 10], [0, 0, 10, 10]]), LABELS2)
    assert torch.equal(both.matched_gt, long([1, -1, -1, -1]))


def test_atss_levels():
    # A second level with one anchor [0,-5,20,15] (centre 10, 5; IoU with gt0 0.3): top-3 of level 0 plus
    # top-1 of level 1, threshold mean + std of (4/7, 2/9, 0, 0.3) = 0.5093: a0 only.
    anchors = torch.cat([ATSS_ANCHORS, t([[0, -5, 20, 15]])])
    res = ATSSAssigner(topk=3).assign(anchors, t([[2, 0, 14, 10]]), long([0]), num_level_anchors=[4, 1])
    assert torch.equal(res.matched_gt, long([0, -1, -1, -1, -1]))
    assert res.pos_thr[0].item() == pytest.approx(0.50928, abs=1e-4)
    with pytest.raises(ValueError, match="sums to 4"):
        ATSSAssigner().assign(anchors, t([[2, 0, 14, 10]]), long([0]), num_level_anchors=[4])


def test_atss_on_real_anchors_gives_every_tiny_gt_a_positive():
    anchors = generate_anchors(AnchorSpec(), 128, 128)
    levels = torch.bincount(anchor_levels(AnchorSpec(), 128, 128)).tolist()
    gts = t([[20, 20, 30, 28], [60, 61, 66, 67], [90, 30, 122, 62]])
    res = ATSSAssigner().assign(anchors, gts, long([0, 1, 2]), num_level_anchors=levels)
    assert (res.positives_per_gt(3) > 0).all()
    chunked = ATSSAssigner(chunk_size=1).assign(anchors, gts, long([0, 1, 2]), num_level_anchors=levels)
    assert torch.equal(res.matched_gt, chunked.matched_gt)


def test_build_assigner():
    a = build_assigner("adla", {"alpha0": 0.5, "matching": "md"})
    assert isinstance(a, AdaptiveDynamicAssigner) and a.alpha0 == 0.5 and a.matching == "md"
    assert isinstance(build_assigner("maxiou", {"neg_iou_thr": [0.1, 0.4]}), MaxIoUAssigner)
    with pytest.raises(AdlaError, match="unknown assigner 'hungarian'"):
        build_assigner("hungarian", {})
    with pytest.raises(AdlaError, match="unknown parameter.*'pos_thr'"):
        build_assigner("maxiou", {"pos_thr": 0.5})
    with pytest.raises(AdlaError, match="matching"):
        build_assigner("adla", {"matching": "nwd"})
    # checkpoints written before the rename say "quality": still read
    assert build_assigner("adla", {"quality": "md"}).matching == "md"
    with pytest.raises(AdlaError, match="'quality' is the old name of 'matching'"):
        build_assigner("adla", {"quality": "md", "matching": "diou"})
    with pytest.raises(AdlaError, match="neg_iou_thr"):
        build_assigner("maxiou", {"neg_iou_thr": [0.1, 0.2, 0.3]})
