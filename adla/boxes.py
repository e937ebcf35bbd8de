"""Box math. All boxes are ``xyxy`` in pixels unless a name says otherwise.

Pairwise IoU (:func:`pairwise_iou`: torchvision's ``box_iou`` formula and result, to the last bit, with
2-D temporaries, about twice as fast on CPU), element-wise IoU of aligned boxes, aspect ratios, and the
delta coding (mmdetection's ``DeltaXYWHBBoxCoder`` with means 0 and stds 1, as RetinaNet uses).
"""

from __future__ import annotations

import math

import torch

# Largest log-scale a delta may carry, as torchvision/mmdet clamp it: exp(4.135) = 62.5x.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def encode(anchors: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Deltas (dx, dy, dw, dh) that turn ``anchors`` [N,4] into ``gt`` [N,4] (both xyxy)."""
    anchors = anchors.float()
    gt = gt.float()
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + 0.5 * aw
    ay = anchors[:, 1] + 0.5 * ah
    gw = (gt[:, 2] - gt[:, 0]).clamp(min=1e-6)
    gh = (gt[:, 3] - gt[:, 1]).clamp(min=1e-6)
    gx = gt[:, 0] + 0.5 * (gt[:, 2] - gt[:, 0])
    gy = gt[:, 1] + 0.5 * (gt[:, 3] - gt[:, 1])
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def decode(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Boxes xyxy [..., 4] from ``anchors`` [N,4] and ``deltas`` [..., N, 4] (decoded in fp32)."""
    deltas = deltas.float()
    anchors = anchors.float()
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + 0.5 * aw
    ay = anchors[:, 1] + 0.5 * ah
    dx, dy, dw, dh = deltas.unbind(-1)
    dw = dw.clamp(max=BBOX_XFORM_CLIP)
    dh = dh.clamp(max=BBOX_XFORM_CLIP)
    cx = ax + dx * aw
    cy = ay + dy * ah
    w = aw * torch.exp(dw)
    h = ah * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU matrix [N, M] of xyxy boxes [N,4] and [M,4].

    The formula and the result of ``torchvision.ops.box_iou`` (equal to the last bit), with 2-D
    temporaries instead of [N, M, 2] ones, which is about twice as fast on CPU.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    w = (torch.minimum(boxes1[:, 2, None], boxes2[:, 2]) - torch.maximum(boxes1[:, 0, None], boxes2[:, 0]))
    h = (torch.minimum(boxes1[:, 3, None], boxes2[:, 3]) - torch.maximum(boxes1[:, 1, None], boxes2[:, 1]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    return inter / (area1[:, None] + area2 - inter)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes ``a`` [..., 4] with ``b`` [..., 4], element by element (broadcast).

    The formula of ``torchvision.ops.box_iou``, which only computes the full matrix.
    """
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a + area_b - inter)


def aspect_ratios(boxes: torch.Tensor) -> torch.Tensor:
    """Short side / long side [N] of xyxy boxes [N,4]; 0 for a degenerate box."""
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    return torch.minimum(w, h) / torch.maximum(w, h).clamp(min=1e-12)


def centers_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) [N,4] of xyxy boxes [N,4]."""
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) * 0.5, boxes[:, 2:] - boxes[:, :2]], dim=1)
