"""ADLA's pure functions (Ge et al., JSTARS 2024): the alpha schedule, eq. (10); the adaptive thresholds,
eqs. (1)-(5); the dynamic IoU, eqs. (8), (9). Floats or tensors in, the same out.

The paper's values are declared once, as the defaults of :class:`adla.assigner_params.AdlaParams` (the
run config's ``assigner.params`` of ``adla``); the names below are read from there.
"""

from __future__ import annotations

from typing import TypeVar

import torch

from adla.assigner_params import AdlaParams

Num = TypeVar("Num", float, torch.Tensor)

ALPHA0 = AdlaParams.alpha0  # alpha after the schedule ends, the paper's best (Table VIII)
ALPHA_START = AdlaParams.alpha_start  # fraction of training where alpha starts to fall from 1
ALPHA_END = AdlaParams.alpha_end  # fraction of training where alpha reaches alpha0
GAMMA = AdlaParams.gamma  # exponent of |A - R| in the dynamic IoU (Table VIII)
P_TP, P_TN = AdlaParams.p_tp, AdlaParams.p_tn  # eqs. (1), (2): a perfectly matched square GT gets 0.5 / 0.4
TP_MIN, TN_MIN = AdlaParams.tp_min, AdlaParams.tn_min  # eq. (5): floors of the thresholds


def alpha_schedule(
    progress: float, alpha0: float = ALPHA0, start: float = ALPHA_START, end: float = ALPHA_END
) -> float:
    """Weight of the anchor IoU in the dynamic IoU at ``progress`` (fraction of training done), eq. (10).

    1 for p < ``start``, then linear from 1 down to ``alpha0`` over ``start`` <= p < ``end``, then
    ``alpha0``. The paper's breakpoints are 0.1 and 0.5.
    """
    if not 0.0 <= start < end:
        raise ValueError(f"alpha schedule needs 0 <= start < end, got {start}, {end}")
    if progress < start:
        return 1.0
    if progress < end:
        return (alpha0 - 1.0) / (end - start) * (progress - start) + 1.0
    return float(alpha0)


def _floor(x: Num, m: float) -> Num:
    return torch.clamp(x, min=m) if isinstance(x, torch.Tensor) else max(x, m)


def adaptive_thresholds(
    iou_max: Num,
    aspect_ratio: Num,
    p_tp: float = P_TP,
    p_tn: float = P_TN,
    tp_min: float = TP_MIN,
    tn_min: float = TN_MIN,
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
    gamma: float = GAMMA,
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
