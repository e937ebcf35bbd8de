"""RetinaNet loss with a pluggable assigner: focal loss (torchvision's) + L1 on deltas over positives.

Both parts are normalised by the number of positives in the batch (at least 1). Ignored anchors
(matched_gt == -2) contribute to neither; an image without GT has only negatives, so its box loss is
exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from adla.boxes import decode, encode
from adla.metrics import SIZE_BUCKETS  # the AI-TOD size buckets on sqrt(w*h): very tiny, tiny, small, medium
from adla.train.assigners.result import Assigner


@dataclass
class AssignStats:
    """Running sums of the assignment quality, per AI-TOD size bucket."""

    gts: torch.Tensor  # [4] number of GTs per bucket
    positives: torch.Tensor  # [4] positives summed over those GTs
    zero_pos: torch.Tensor  # [4] GTs without any positive

    @classmethod
    def zeros(cls) -> AssignStats:
        n = len(SIZE_BUCKETS)
        return cls(torch.zeros(n), torch.zeros(n), torch.zeros(n))

    def add(self, other: AssignStats) -> None:
        self.gts += other.gts
        self.positives += other.positives
        self.zero_pos += other.zero_pos

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, (name, _, _) in enumerate(SIZE_BUCKETS):
            n = float(self.gts[i])
            out[f"pos_per_gt/{name}"] = float(self.positives[i]) / n if n else float("nan")
        total = float(self.gts.sum())
        out["zero_pos_share"] = float(self.zero_pos.sum()) / total if total else float("nan")
        out["pos_per_gt/all"] = float(self.positives.sum()) / total if total else float("nan")
        return out


def bucket_of(boxes: torch.Tensor) -> torch.Tensor:
    """AI-TOD size bucket index [G] (0 very tiny .. 3 medium) of xyxy boxes [G,4]."""
    size = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    edges = torch.tensor([b[2] for b in SIZE_BUCKETS[:-1]], device=boxes.device)
    return torch.bucketize(size, edges, right=True)


def assign_stats(matched_gt: torch.Tensor, gt_boxes: torch.Tensor) -> AssignStats:
    """Positives per GT and GTs left without a positive, per size bucket, for one image."""
    g = gt_boxes.shape[0]
    if g == 0:
        return AssignStats.zeros()
    pos = matched_gt[matched_gt >= 0]
    counts = torch.bincount(pos, minlength=g).float().cpu()
    buckets = bucket_of(gt_boxes).cpu()
    n = len(SIZE_BUCKETS)
    gts = torch.bincount(buckets, minlength=n).float()
    positives = torch.zeros(n).index_add_(0, buckets, counts)
    zero_pos = torch.zeros(n).index_add_(0, buckets, (counts == 0).float())
    return AssignStats(gts, positives, zero_pos)


class DetectionLoss:
    """Focal + L1 loss that owns the assigner.

    __call__(cls_logits [B,N,C], box_deltas [B,N,4], targets (list of {"boxes" [G,4] xyxy px,
    "labels" [G]}), anchors [N,4], progress in [0,1], num_level_anchors list[int])
    -> (losses {"cls", "box", "total"}, AssignStats, num_pos)
    """

    def __init__(self, assigner: Assigner, *, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 box_weight: float = 1.0):
        self.assigner = assigner
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_weight = box_weight

    def _assign(self, anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                deltas: torch.Tensor, progress: float, num_level_anchors: Sequence[int] | None) -> torch.Tensor:
        pred_boxes = decode(anchors, deltas.detach())
        result = self.assigner.assign(anchors, gt_boxes, gt_labels, pred_boxes=pred_boxes, progress=progress,
                                      num_level_anchors=num_level_anchors)
        return result.matched_gt

    def __call__(self, cls_logits, box_deltas, targets, anchors, progress=0.0, num_level_anchors=None):
        cls_logits = cls_logits.float()
        box_deltas = box_deltas.float()
        cls_sum = cls_logits.new_zeros(())
        box_sum = cls_logits.new_zeros(())
        num_pos = 0
        stats = AssignStats.zeros()
        for i, target in enumerate(targets):
            gt_boxes = target["boxes"].to(anchors.device, torch.float32)
            gt_labels = target["labels"].to(anchors.device)
            matched = self._assign(anchors, gt_boxes, gt_labels, box_deltas[i], progress, num_level_anchors)
            stats.add(assign_stats(matched, gt_boxes))
            pos = matched >= 0
            valid = matched != -2
            cls_target = torch.zeros_like(cls_logits[i])
            if pos.any():
                cls_target[pos, gt_labels[matched[pos]]] = 1.0
            cls_sum = cls_sum + sigmoid_focal_loss(
                cls_logits[i][valid], cls_target[valid], alpha=self.focal_alpha, gamma=self.focal_gamma,
                reduction="sum")
            n = int(pos.sum())
            if n:
                reg_target = encode(anchors[pos], gt_boxes[matched[pos]])
                box_sum = box_sum + F.l1_loss(box_deltas[i][pos], reg_target, reduction="sum")
            else:
                box_sum = box_sum + box_deltas[i].sum() * 0.0  # keep the graph for DDP, value exactly 0
            num_pos += n
        norm = max(num_pos, 1)
        cls_loss = cls_sum / norm
        box_loss = self.box_weight * box_sum / norm
        return {"cls": cls_loss, "box": box_loss, "total": cls_loss + box_loss}, stats, num_pos
