"""NWD and RFLA assigners, the schedule's breakpoints and alpha(), on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from adla.errors import AdlaError
from adla.train.assigners import (
    ASSIGNERS,
    IOU,
    MaxIoUAssigner,
    alpha_schedule,
    build_assigner,
    iter_quality,
    nwd_quality,
    pairwise_kld,
    pairwise_nwd,
    receptive_fields,
)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_pairwise_nwd_literal():
    # Same size, centres 5 px apart: W2 = 5. 4x4 in a 10x10 corner: W2^2 = 3^2 + 3^2 + 3^2 + 3^2 = 36.
    q = pairwise_nwd(t([[0, 0, 10, 10]]), t([[3, 4, 13, 14], [0, 0, 4, 4], [0, 0, 10, 10]]))
    assert torch.allclose(q, t([[math.exp(-5 / 12.8), math.exp(-6 / 12.8), 1.0]]))
    assert pairwise_nwd(t([[0, 0, 10, 10]]), t([[3, 4, 13, 14]]), constant=5.0).item() == pytest.approx(
        math.exp(-1.0))
    assert IOU.zero_off_overlap and not nwd_quality().zero_off_overlap


def test_nwd_prunes_nothing():
    anchors = t([[0, 0, 10, 10], [500, 500, 510, 510]])
    chunks = list(iter_quality(anchors, t([[0, 0, 4, 4]]), quality=nwd_quality(), prune=True))
    assert len(chunks) == 1 and chunks[0].rows is None and chunks[0].anchor_iou.shape == (2, 1)
    assert chunks[0].anchor_iou[1, 0] > 0  # far away, yet not zero


# gt0 = [0,0,10,10]: a0 NWD 1; a1 centre 5 px off, NWD 0.677 (IoU 0.27); a2 10 px off, NWD 0.458; a3 far.
# gt1 = [30,30,34,34] (4x4): a4 beside it, no overlap, centre 6 px off, equal size: NWD exp(-6/12.8) 0.626.
NWD_ANCHORS = t([[0, 0, 10, 10], [3, 4, 13, 14], [6, 8, 16, 18], [100, 100, 110, 110], [36, 30, 40, 34]])
NWD_GTS = t([[0, 0, 10, 10], [30, 30, 34, 34]])


def test_nwd_hand_computed():
    res = build_assigner("nwd", {}).assign(NWD_ANCHORS, NWD_GTS)
    assert torch.equal(res.matched_gt, torch.tensor([0, 0, -2, -1, 1]))
    assert res.iou_max[1].item() == pytest.approx(math.exp(-6 / 12.8), rel=1e-6)
    # IoU: a1 (0.27) and a2 are background, and gt1 overlaps no anchor, so it gets none.
    iou = MaxIoUAssigner().assign(NWD_ANCHORS, NWD_GTS)
    assert torch.equal(iou.matched_gt, torch.tensor([0, -1, -1, -1, -1]))
    strict = build_assigner("nwd", {"pos_iou_thr": 0.7, "match_low_quality": False}).assign(NWD_ANCHORS, NWD_GTS)
    assert torch.equal(strict.matched_gt, torch.tensor([0, -2, -2, -1, -2]))


def test_pairwise_kld_literal():
    priors = t([[0, 0, 8, 8], [-4, -4, 12, 12]])
    gts = t([[0, 0, 8, 8], [2, 0, 10, 8]])
    kl = pairwise_kld(priors, gts)
    # Equal boxes: 0. Shift 2 along x on an 8 px GT: 4 * 4 / (2 * 64) = 0.125. A 16 px prior on the 8 px
    # GT: 256 / 128 twice, + ln(64 / 256), - 1 = 3 - ln 4.
    assert torch.allclose(kl[0], t([0.0, 0.125]), atol=1e-6)
    assert kl[1, 0].item() == pytest.approx(3 - math.log(4), abs=1e-5)


def test_receptive_fields_literal():
    # A 16x32 anchor on P3: side 0.5 x 91 = 45.5 with the anchor's w/h = 1/2, centred on (8, 16).
    rf = receptive_fields(t([[0, 0, 16, 32], [0, 0, 64, 64]]), torch.tensor([0, 2]), (91, 267, 427), 0.5)
    w, h = 45.5 / math.sqrt(2), 45.5 * math.sqrt(2)
    assert torch.allclose(rf[0], t([8 - w / 2, 16 - h / 2, 8 + w / 2, 16 + h / 2]), atol=1e-4)
    assert torch.allclose(rf[1], t([32 - 106.75, 32 - 106.75, 32 + 106.75, 32 + 106.75]), atol=1e-4)


# One level, 8 px receptive fields (trf 8, fraction 1) at x = 4, 12, 20, 28; GT [2,0,10,8] (centre 6):
# stage 1 RFD 0.889, 0.471, ...; stage 2 (side 7.2) RFD 0.873, 0.466, ...
RF_ANCHORS = t([[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]])
RF_GT = t([[2, 0, 10, 8]])


@pytest.mark.parametrize("params, expected", [
    ({}, [0, -1, -1, -1]),  # top-1 in both stages: a0; the rest below RFD 0.8
    ({"neg_thr": 0.45}, [0, -2, -1, -1]),  # a1's stage-2 RFD 0.466 is not below 0.45: ignored
    ({"topk": [2, 1]}, [0, 0, -1, -1]),
    ({"stage2_ratio": 0.5, "neg_thr": 0.3, "topk": [1, 2]}, [0, 0, -1, -1]),  # stage 2 adds a1
])
def test_rfla_hand_computed(params, expected):
    assigner = build_assigner("rfla", {"trf": [8.0], "erf_fraction": 1.0, "topk": [1, 1], **params})
    res = assigner.assign(RF_ANCHORS, RF_GT, num_level_anchors=[4])
    assert torch.equal(res.matched_gt, torch.tensor(expected))
    assert res.iou_max[0].item() == pytest.approx(1 / 1.125, abs=1e-6)


def test_rfla_conflict_goes_to_the_highest_gt_and_needs_levels():
    assigner = build_assigner("rfla", {"trf": [8.0], "erf_fraction": 1.0, "topk": [1, 1]})
    res = assigner.assign(RF_ANCHORS, t([[2, 0, 10, 8], [0, 0, 8, 8]]), num_level_anchors=[4])
    assert torch.equal(res.matched_gt, torch.tensor([1, -1, -1, -1]))
    with pytest.raises(AdlaError, match="num_level_anchors"):
        assigner.assign(RF_ANCHORS, RF_GT)
    with pytest.raises(AdlaError, match="2 levels"):
        assigner.assign(RF_ANCHORS, RF_GT, num_level_anchors=[2, 2])


def test_schedule_breakpoints_are_arguments():
    assert alpha_schedule(0.05, 0.6, start=0.0, end=0.1) == pytest.approx(0.8)
    assert alpha_schedule(0.3, 0.5, start=0.2, end=0.4) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="start < end"):
        alpha_schedule(0.3, 0.6, start=0.5, end=0.5)
    adla = build_assigner("adla", {"alpha_start": 0.2, "alpha_end": 0.4, "alpha0": 0.5})
    assert adla.alpha(0.1) == 1.0 and adla.alpha(0.3) == pytest.approx(0.75) and adla.alpha(0.9) == 0.5
    with pytest.raises(AdlaError, match="alpha_start"):
        build_assigner("adla", {"alpha_start": 0.6})


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_every_assigner_has_alpha(name):
    a = build_assigner(name, {})
    expected = 0.6 if name == "adla" else 1.0
    assert a.alpha(0.0) == 1.0 and a.alpha(0.9) == pytest.approx(expected)


@pytest.mark.parametrize("name, params, key", [
    ("nwd", {"prune": False}, "prune"),
    ("rfla", {"pos_iou_thr": 0.5}, "pos_iou_thr"),
    ("adla", {"alpha_begin": 0.1}, "alpha_begin"),
])
def test_unknown_params_are_named(name, params, key):
    with pytest.raises(AdlaError, match=f"unknown parameter.*'{key}'"):
        build_assigner(name, params)


@pytest.mark.parametrize("name, params", [("nwd", {"constant": 0}), ("rfla", {"topk": [3]}),
                                          ("rfla", {"neg_thr": 0})])
def test_bad_values(name, params):
    with pytest.raises(AdlaError, match=name):
        build_assigner(name, params)
