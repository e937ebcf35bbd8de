"""Typed parameters of each label assigner: one frozen dataclass per name of ``adla.train.assigners.ASSIGNERS``.

This is the one place where an assigner parameter is declared: its name, type and default. Each
assigner class takes its dataclass (``MaxIoUAssigner(MaxIoUParams(...))``, or keyword changes to the
defaults) and declares no parameter of its own; the paper's ADLA values (``paper.py``), NWD's constant
and RFLA's receptive fields are read from here. The run config's ``assigner.params`` is one of these,
picked by ``assigner.name``, so that a wrong key or a wrong type in a YAML file or a
``--set assigner.params.key=value`` override is an error when the config is loaded, not when training
builds the assigner; that is why they live in the core, which cannot import the assigners (the house
rule, tests/core/test_layers.py). Sequences are tuples. Rules on values (ranges, relations between
arguments) stay in the assigner classes and fail when the assigner is built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar


@dataclass(frozen=True)
class MaxIoUParams:
    """``maxiou``: :class:`adla.train.assigners.maxiou.MaxIoUAssigner`."""

    pos_iou_thr: float = 0.5
    neg_iou_thr: float | tuple[float, ...] = 0.4  # a number, or a (low, high) pair
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    match_low_quality: bool = True
    chunk_size: int = 32
    prune: bool = True


@dataclass(frozen=True)
class AdlaParams:
    """``adla``: :class:`adla.train.assigners.adaptive.AdaptiveDynamicAssigner`, the paper's values (Ge et al.,
    JSTARS 2024; their equations in ``adla.train.assigners.paper``)."""

    alpha0: float = 0.6  # alpha after the schedule ends, the paper's best (Table VIII)
    alpha_start: float = 0.1  # fraction of training where alpha starts to fall from 1, eq. (10)
    alpha_end: float = 0.5  # fraction of training where alpha reaches alpha0
    gamma: float = 1.5  # exponent of |A - R| in the dynamic IoU (Table VIII)
    p_tp: float = 0.75  # eqs. (1), (2): a perfectly matched square GT gets 0.5 / 0.4
    p_tn: float = 0.8
    tp_min: float = 0.1  # eq. (5): floors of the thresholds
    tn_min: float = 0.05
    adaptive: bool = True
    dynamic: bool = True
    matching: str = "diou"  # "diou": the paper's dynamic IoU, eqs. (8), (9); "md": DAL's matching degree, eq. (6)
    fixed_pos_thr: float = 0.5
    fixed_neg_thr: float = 0.4
    match_low_quality: bool = False
    chunk_size: int = 32
    prune: bool = True


@dataclass(frozen=True)
class ATSSParams:
    """``atss``: :class:`adla.train.assigners.atss.ATSSAssigner`."""

    topk: int = 9
    center_eps: float = 0.01
    chunk_size: int = 64


@dataclass(frozen=True)
class NWDParams:
    """``nwd``: :class:`adla.train.assigners.nwd.NWDAssigner`; ``constant``: C of Wang et al. 2021 on AI-TOD (px,
    about the mean absolute object size)."""

    pos_iou_thr: float = 0.5
    neg_iou_thr: float | tuple[float, ...] = 0.4  # a number, or a (low, high) pair
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    match_low_quality: bool = True
    constant: float = 12.8
    chunk_size: int = 128


@dataclass(frozen=True)
class RFLAParams:
    """``rfla``: :class:`adla.train.assigners.rfla.RFLAssigner`, mmdet-rfla's AI-TOD constants."""

    trf: tuple[float, ...] = (91.0, 267.0, 427.0)  # theoretical receptive field of P3-P5, ResNet-50 FPN (px)
    erf_fraction: float = 0.5
    topk: tuple[int, ...] = (3, 1)
    stage2_ratio: float = 0.9
    neg_thr: float = 0.8
    chunk_size: int = 64


AssignerParams = MaxIoUParams | AdlaParams | ATSSParams | NWDParams | RFLAParams

# assigner name -> its parameters; the same names as adla.train.assigners.ASSIGNERS (tested)
ASSIGNER_PARAMS: dict[str, type] = {
    "maxiou": MaxIoUParams,
    "adla": AdlaParams,
    "atss": ATSSParams,
    "nwd": NWDParams,
    "rfla": RFLAParams,
}


def param_names(name: str) -> list[str]:
    """The parameter names of assigner ``name``, in declaration order."""
    return [f.name for f in fields(ASSIGNER_PARAMS[name])]


def as_kwargs(params: AssignerParams) -> dict[str, Any]:
    """The parameters as a shallow dict (tuples stay tuples)."""
    return {f.name: getattr(params, f.name) for f in fields(params)}


P = TypeVar("P", MaxIoUParams, AdlaParams, ATSSParams, NWDParams, RFLAParams)


def with_changes(kind: type[P], params: P | None, changes: dict[str, Any], who: str) -> P:
    """``params`` (default: ``kind()``) with ``changes`` applied: how an assigner class takes its
    parameters. A dataclass of another assigner, or an unknown name, is a ValueError naming the known ones."""
    base = kind() if params is None else params
    if type(base) is not kind:
        raise ValueError(f"{type(base).__name__} given for assigner {who!r}, which takes {kind.__name__}")
    unknown = sorted(set(changes) - {f.name for f in fields(kind)})
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; known: {[f.name for f in fields(kind)]}")
    return replace(base, **changes) if changes else base


__all__ = [
    "ASSIGNER_PARAMS", "ATSSParams", "AdlaParams", "AssignerParams", "MaxIoUParams", "NWDParams", "RFLAParams",
    "as_kwargs", "param_names", "with_changes",
]
