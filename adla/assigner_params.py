"""Typed parameters of each label assigner: one frozen dataclass per name of ``adla.train.assigners.ASSIGNERS``.

The run config's ``assigner.params`` is one of these, picked by ``assigner.name``, so that a wrong key
or a wrong type in a YAML file or a ``--set assigner.params.key=value`` override is an error when the
config is loaded, not when training builds the assigner. Core cannot import the assigners
(tests/core/test_layers.py), so the fields are written out here: the names, defaults and order of the
assigner classes' keyword-only ``__init__`` arguments (tests/train/test_assigner_params.py checks that
the two never drift). Sequences are tuples. Rules on values (ranges, relations between arguments) stay
in the assigner classes, their one source, and fail when the assigner is built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


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
    """``adla``: :class:`adla.train.assigners.adaptive.AdaptiveDynamicAssigner` (defaults from ``paper.py``)."""

    alpha0: float = 0.6
    alpha_start: float = 0.1
    alpha_end: float = 0.5
    gamma: float = 1.5
    p_tp: float = 0.75
    p_tn: float = 0.8
    tp_min: float = 0.1
    tn_min: float = 0.05
    adaptive: bool = True
    dynamic: bool = True
    quality: str = "diou"
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
    """``nwd``: :class:`adla.train.assigners.nwd.NWDAssigner`."""

    pos_iou_thr: float = 0.5
    neg_iou_thr: float | tuple[float, ...] = 0.4  # a number, or a (low, high) pair
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    match_low_quality: bool = True
    constant: float = 12.8
    chunk_size: int = 128


@dataclass(frozen=True)
class RFLAParams:
    """``rfla``: :class:`adla.train.assigners.rfla.RFLAssigner`."""

    trf: tuple[float, ...] = (91.0, 267.0, 427.0)
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
    """The parameter names of assigner ``name``, in ``__init__`` order."""
    return [f.name for f in fields(ASSIGNER_PARAMS[name])]


def as_kwargs(params: AssignerParams) -> dict[str, Any]:
    """The keyword arguments of the assigner class (a shallow dict: tuples stay tuples)."""
    return {f.name: getattr(params, f.name) for f in fields(params)}


__all__ = [
    "ASSIGNER_PARAMS", "ATSSParams", "AdlaParams", "AssignerParams", "MaxIoUParams", "NWDParams", "RFLAParams",
    "as_kwargs", "param_names",
]
