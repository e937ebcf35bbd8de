"""Box utilities. All boxes are ``xyxy`` in pixels unless a name says otherwise.

IoU itself is torchvision's ``box_iou``; this module adds the delta coding (mmdetection's
``DeltaXYWHBBoxCoder`` with means 0 and stds 1, as RetinaNet uses).
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
