"""Each assigner parameter is declared once, in adla/assigner_params.py: the assigner classes take that
dataclass (or keyword changes to its defaults) and declare no parameter of their own."""

from __future__ import annotations

import inspect

import pytest

from adla.assigner_params import ASSIGNER_PARAMS, AdlaParams, MaxIoUParams, NWDParams, RFLAParams
from adla.config import assigner_params, to_dict
from adla.errors import AdlaError
from adla.train.assigners import (
    ASSIGNERS,
    IOU,
    AdaptiveDynamicAssigner,
    ATSSAssigner,
    MaxIoUAssigner,
    NWDAssigner,
    Quality,
    RFLAssigner,
    build_assigner,
    nwd_quality,
    paper,
    rfla,
)
from adla.train.assigners.quality import NWD_CONSTANT


def test_every_assigner_has_typed_params():
    assert list(ASSIGNER_PARAMS) == list(ASSIGNERS)


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_assigners_declare_no_parameter_of_their_own(name):
    args = list(inspect.signature(ASSIGNERS[name]).parameters.values())
    assert args[0].name == "params" and args[0].default is None
    assert args[-1].kind is inspect.Parameter.VAR_KEYWORD  # changes to the dataclass's defaults
    assert {a.name for a in args[1:-1]} <= {"quality"}  # a Quality object: not a config value
    assert ASSIGNERS[name]().params == ASSIGNER_PARAMS[name]()


def test_keyword_changes_are_the_dataclass_with_changes():
    assert MaxIoUAssigner(pos_iou_thr=0.6).params == MaxIoUParams(pos_iou_thr=0.6)
    assert AdaptiveDynamicAssigner(AdlaParams(gamma=2.0), alpha0=0.3).params == AdlaParams(gamma=2.0, alpha0=0.3)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['alpha1'\]; known: \['alpha0', "):
        AdaptiveDynamicAssigner(alpha1=0.5)
    with pytest.raises(ValueError, match="MaxIoUParams given for assigner 'adla', which takes AdlaParams"):
        AdaptiveDynamicAssigner(MaxIoUParams())  # type: ignore[arg-type]


def test_the_papers_values_and_other_constants_are_read_from_the_params():
    d = AdlaParams()
    assert (paper.ALPHA0, paper.ALPHA_START, paper.ALPHA_END, paper.GAMMA) == (d.alpha0, d.alpha_start, d.alpha_end,
                                                                               d.gamma) == (0.6, 0.1, 0.5, 1.5)
    assert (paper.P_TP, paper.P_TN, paper.TP_MIN, paper.TN_MIN) == (d.p_tp, d.p_tn, d.tp_min, d.tn_min)
    assert rfla.TRF_R50_FPN == RFLAParams().trf and NWD_CONSTANT == NWDParams().constant == 12.8


def _boxes(n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 120
    wh = 4 + torch.rand(n, 2, generator=g) * 28
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("cls", [MaxIoUAssigner, AdaptiveDynamicAssigner, ATSSAssigner])
def test_quality_is_pluggable_in_the_iou_assigners(cls):
    import torch

    anchors, gts = _boxes(300, 0), _boxes(6, 1)
    renamed = Quality("iou-copy", IOU.fn, zero_off_overlap=True, paired=IOU.paired)
    base = cls().assign(anchors, gts, torch.zeros(6, dtype=torch.long)).matched_gt
    same = cls(quality=renamed).assign(anchors, gts, torch.zeros(6, dtype=torch.long)).matched_gt
    assert torch.equal(base, same)
    nwd = cls(quality=nwd_quality(4.0)).assign(anchors, gts, torch.zeros(6, dtype=torch.long)).matched_gt
    assert not torch.equal(base, nwd)  # the measure really is used


def test_maxiou_on_nwd_is_the_nwd_assigner():
    import torch

    anchors, gts = _boxes(400, 2), _boxes(5, 3)
    a = MaxIoUAssigner(chunk_size=128, quality=nwd_quality(12.8)).assign(anchors, gts).matched_gt
    b = NWDAssigner().assign(anchors, gts).matched_gt
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_defaults_round_trip_and_build(name):
    default = ASSIGNER_PARAMS[name]()
    assert assigner_params(name, to_dict(default)) == default  # the dict a checkpoint stores
    assert assigner_params(name, None) == default
    assert type(build_assigner(name, default)) is ASSIGNERS[name]
    assert type(build_assigner(name)) is ASSIGNERS[name]


def test_build_assigner_takes_typed_params():
    a = build_assigner("adla", AdlaParams(alpha0=0.5, matching="md", dynamic=False))
    assert isinstance(a, AdaptiveDynamicAssigner) and (a.alpha0, a.matching, a.dynamic) == (0.5, "md", False)
    r = build_assigner("rfla", RFLAParams(trf=(8.0,), topk=(1, 1)))
    assert isinstance(r, RFLAssigner) and tuple(r.topk) == (1, 1)
    with pytest.raises(AdlaError, match="MaxIoUParams given for assigner 'adla', which takes AdlaParams"):
        build_assigner("adla", MaxIoUParams())


def test_build_assigner_dict_is_typed():
    with pytest.raises(AdlaError, match=r"unknown parameter\(s\) \['alpha1'\] for assigner 'adla'; known: "
                                        r"\['alpha0', "):
        build_assigner("adla", {"alpha1": 0.5})
    with pytest.raises(AdlaError, match=r"assigner.params.alpha0: expected a number, got 'high' \(assigner 'adla'\)"):
        build_assigner("adla", {"alpha0": "high"})
    with pytest.raises(AdlaError, match="params.prune: expected true or false, got 1"):
        build_assigner("maxiou", {"prune": 1})
    with pytest.raises(AdlaError, match="params.chunk_size: expected an integer, got 8.5"):
        build_assigner("atss", {"chunk_size": 8.5})
    assert build_assigner("nwd", {"constant": 6}).constant == 6.0  # an int where a float is due
