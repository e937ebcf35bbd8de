"""Thin export adapters around the unchanged detector, and the ONNX ``NonMaxSuppression`` op they use.

The detector is never patched: each adapter holds it and adds what a deployment graph needs.

- ``RawAdapter``: images -> (cls_logits [B,N,C], box_deltas [B,N,4]), the detector's own outputs.
- ``DecodeAdapter``: images -> (boxes [B,N,4] xyxy px clipped, scores [B,N,C] sigmoid). Used to build
  TensorRT engines whose NMS is the ``EfficientNMS_TRT`` plugin.
- ``NMSAdapter``: images -> (num_dets [B], boxes [B,K,4], scores [B,K], labels [B,K]) with decode and
  class-wise NMS inside the graph, the same computation as ``adla.postprocess.postprocess``.

``nms_select`` is a ``torch.library`` custom op with the exact semantics of ONNX ``NonMaxSuppression``
(output [M,3] rows of (batch, class, box)); eager PyTorch runs it with torchvision's NMS, and the dynamo
exporter translates it into one ``NonMaxSuppression`` node (``ONNX_TRANSLATIONS``).
"""

from __future__ import annotations

from typing import Any

import torch
from onnxscript import opset18 as op
from torch import nn

from adla.boxes import decode
from adla.postprocess import PostprocessConfig


@torch.library.custom_op("adla::nms_select", mutates_args=())
def nms_select(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thr: float,
               score_thr: float) -> torch.Tensor:
    """ONNX NonMaxSuppression: boxes [B,N,4] xyxy, scores [B,C,N] -> selected [M,3] int64 (b, c, n).

    A box takes part in class c when its score is strictly above ``score_thr`` (as onnxruntime and
    ``adla.postprocess``); per class at most ``max_per_class`` boxes are kept, best first.
    """
    rows = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c]
            cand = (s > score_thr).nonzero().squeeze(1)
            keep = cand[torch.ops.torchvision.nms(boxes[b, cand].float(), s[cand].float(), iou_thr)]
            keep = keep[:max_per_class]
            rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], dim=1))
    if not rows:
        return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
    return torch.cat(rows)


@nms_select.register_fake
def _nms_select_fake(boxes, scores, max_per_class, iou_thr, score_thr):
    m = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((m, 3), dtype=torch.int64)


def _nms_select_onnx(boxes, scores, max_per_class: int, iou_thr: float, score_thr: float):
    return op.NonMaxSuppression(
        boxes, scores,
        op.Constant(value_ints=[max_per_class]),  # type: ignore[arg-type]  # onnxscript's stubs: any-typed
        op.Constant(value_floats=[iou_thr]),  # type: ignore[arg-type]
        op.Constant(value_floats=[score_thr]),  # type: ignore[arg-type]
        center_point_box=0,
    )


ONNX_TRANSLATIONS: dict[Any, Any] = {torch.ops.adla.nms_select.default: _nms_select_onnx}  # op -> onnxscript function


def _clip_xyxy(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Clamp xyxy boxes [..., 4] to an image of (h, w), as torchvision's clip_boxes_to_image."""
    h, w = image_size
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1.clamp(0, w), y1.clamp(0, h), x2.clamp(0, w), y2.clamp(0, h)], dim=-1)


class RawAdapter(nn.Module):
    """images [B,3,H,W] RGB 0-255 -> (cls_logits [B,N,C], box_deltas [B,N,4]): the detector unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(images)


class DecodeAdapter(nn.Module):
    """images -> (boxes [B,N,4] xyxy px clipped to the input, scores [B,N,C] sigmoid), fixed input size."""

    def __init__(self, model: nn.Module, anchors: torch.Tensor, image_size: tuple[int, int]):
        super().__init__()
        self.model = model
        self.image_size = image_size
        self.anchors: torch.Tensor
        self.register_buffer("anchors", anchors.float(), persistent=False)  # [N,4]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_logits, box_deltas = self.model(images)
        boxes = decode(self.anchors, box_deltas)  # [B,N,4]
        return _clip_xyxy(boxes, self.image_size), torch.sigmoid(cls_logits.float())


class NMSAdapter(nn.Module):
    """images [B,3,H,W] -> num_dets [B] int64, boxes [B,K,4] xyxy px, scores [B,K], labels [B,K] int64.

    K = min(max_dets, pre_nms_topk, N*C). Rows are sorted by score; rows past num_dets are padding with
    zero boxes and scores and label -1. Same steps as ``adla.postprocess.postprocess_image``: sigmoid,
    top-k over all (anchor, class) pairs, decode, clip, class-wise NMS above ``score_thr``, best max_dets.
    """

    def __init__(self, model: nn.Module, anchors: torch.Tensor, image_size: tuple[int, int],
                 num_classes: int, cfg: PostprocessConfig):
        super().__init__()
        self.model = model
        self.image_size = image_size
        self.cfg = cfg
        self.num_classes = num_classes
        self.anchors: torch.Tensor
        self.register_buffer("anchors", anchors.float(), persistent=False)  # [N,4]
        total = anchors.shape[0] * num_classes
        self.topk = min(cfg.pre_nms_topk, total)
        self.max_dets = min(cfg.max_dets, self.topk)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls_logits, box_deltas = self.model(images)  # [B,N,C], [B,N,4]
        c = self.num_classes
        b = cls_logits.shape[0]
        scores = torch.sigmoid(cls_logits.float()).flatten(1)  # [B, N*C], anchor-major
        top_scores, top_idx = scores.topk(self.topk, dim=1)  # [B,K1]
        anchor_idx = top_idx // c
        labels = top_idx % c
        deltas = box_deltas.gather(1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))  # [B,K1,4]
        anchors = self.anchors[anchor_idx.flatten()]  # [B*K1,4]
        boxes = decode(anchors, deltas.reshape(-1, 4)).reshape(b, self.topk, 4)
        boxes = _clip_xyxy(boxes, self.image_size)
        # one score row per class: a candidate scores only in its own class ([B,C,K1])
        own = labels.unsqueeze(1) == torch.arange(c, device=labels.device).view(1, c, 1)
        class_scores = torch.where(own, top_scores.unsqueeze(1), torch.full_like(top_scores.unsqueeze(1), -1.0))
        sel = torch.ops.adla.nms_select(boxes, class_scores, self.max_dets, self.cfg.nms_iou,
                                        self.cfg.score_thr)  # [M,3]
        kept = torch.zeros_like(top_scores, dtype=torch.bool)
        kept = kept.index_put((sel[:, 0], sel[:, 2]), torch.ones_like(sel[:, 0], dtype=torch.bool))
        ranked = torch.where(kept, top_scores, torch.full_like(top_scores, -1.0))
        det_scores, order = ranked.topk(self.max_dets, dim=1)  # [B,K]
        num_dets = kept.sum(dim=1).clamp(max=self.max_dets)  # [B]
        valid = torch.arange(self.max_dets, device=images.device).unsqueeze(0) < num_dets.unsqueeze(1)
        det_boxes = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
        det_boxes = torch.where(valid.unsqueeze(-1), det_boxes, torch.zeros_like(det_boxes))
        det_labels = torch.where(valid, labels.gather(1, order), torch.full_like(order, -1))
        det_scores = torch.where(valid, det_scores, torch.zeros_like(det_scores))
        return num_dets, det_boxes, det_scores, det_labels


def unpad_detections(num_dets, boxes, scores, labels) -> list[dict[str, torch.Tensor]]:
    """Padded NMS-variant outputs (tensors or numpy arrays) -> per-image dicts like adla.postprocess."""
    out = []
    for i in range(len(num_dets)):
        k = int(num_dets[i])
        out.append({"boxes": torch.as_tensor(boxes[i][:k]).float(), "scores": torch.as_tensor(scores[i][:k]).float(),
                    "labels": torch.as_tensor(labels[i][:k]).long()})
    return out
