"""Decode raw head outputs into detections: top-k candidates, box decoding, class-wise NMS.

Kept apart from the model: the loss never calls it, export may place it inside or outside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image

from adla.boxes import decode
from adla.ranges import check_ranges


@dataclass(frozen=True)
class PostprocessConfig:
    """Defaults follow the public AI-TOD evaluation configs."""

    score_thr: float = 0.05
    pre_nms_topk: int = 3000
    nms_iou: float = 0.5
    max_dets: int = 3000

    RANGES: ClassVar[dict[str, str]] = {"score_thr": "[0, 1]", "pre_nms_topk": ">= 1", "nms_iou": "[0, 1]",
                                        "max_dets": ">= 1"}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


def postprocess_image(
    anchors: torch.Tensor,
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    image_size: tuple[int, int],
    cfg: PostprocessConfig = PostprocessConfig(),
) -> dict[str, torch.Tensor]:
    """Detections of one image.

    anchors [N,4], cls_logits [N,C], box_deltas [N,4]; image_size (h, w) for clipping.
    Returns {"boxes" [K,4] xyxy px, "scores" [K], "labels" [K] int64 0-based}, sorted by score.
    """
    num_classes = cls_logits.shape[1]
    scores = torch.sigmoid(cls_logits.float()).flatten()  # [N*C], anchor-major
    keep = scores > cfg.score_thr
    scores = scores[keep]
    idx = keep.nonzero().squeeze(1)
    if scores.numel() > cfg.pre_nms_topk:
        scores, top = scores.topk(cfg.pre_nms_topk)
        idx = idx[top]
    anchor_idx = idx // num_classes
    labels = idx % num_classes
    boxes = decode(anchors[anchor_idx], box_deltas[anchor_idx])
    boxes = clip_boxes_to_image(boxes, image_size)
    keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_dets]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def postprocess(
    anchors: torch.Tensor,
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    image_sizes: list[tuple[int, int]],
    cfg: PostprocessConfig = PostprocessConfig(),
) -> list[dict[str, torch.Tensor]]:
    """Per-image detections for a batch: cls_logits [B,N,C], box_deltas [B,N,4]."""
    return [
        postprocess_image(anchors, cls_logits[i], box_deltas[i], image_sizes[i], cfg)
        for i in range(cls_logits.shape[0])
    ]
