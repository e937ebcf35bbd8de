"""Run a detector over a COCO dataset and return COCO results (for ``adla evaluate`` and training's eval)."""

from __future__ import annotations

import functools

import torch

from adla.anchors import AnchorSpec, generate_anchors
from adla.data.coco import CocoDetection, collate
from adla.errors import AdlaError
from adla.postprocess import PostprocessConfig, postprocess


@torch.inference_mode()
def predict_dataset(model: torch.nn.Module, dataset: CocoDetection, *, batch_size: int = 2,
                    device: str | torch.device = "cpu", post_cfg: PostprocessConfig | None = None,
                    progress: bool = True, num_workers: int = 0) -> list[dict]:
    """Detections of every image as COCO results: {"image_id", "category_id" (via ``dataset.cat_ids``),
    "bbox" [x, y, w, h] px, "score"}, best first within an image.

    Images are batched, zero-padded at the bottom/right to a multiple of the anchors' largest stride
    (``AnchorSpec.max_stride``, 32 by default; no resizing); boxes are clipped to each image's own size.
    ``post_cfg`` defaults to ``PostprocessConfig()`` (the AI-TOD settings). The model is put in eval mode.
    """
    from tqdm import tqdm

    if dataset.train:
        raise ValueError("predict_dataset needs a dataset built with train=False (no random flips)")
    net = getattr(model, "module", model)
    num_classes = getattr(net, "num_classes", None)
    if num_classes is not None and num_classes != len(dataset.cat_ids):
        raise AdlaError(f"the model predicts {num_classes} classes but {dataset.ann_file} has "
                        f"{len(dataset.cat_ids)} categories ({', '.join(dataset.class_names)})")
    cfg = getattr(net, "cfg", None)
    spec: AnchorSpec = cfg.anchors if cfg is not None else AnchorSpec()
    post_cfg = post_cfg or PostprocessConfig()
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers,
                                         collate_fn=functools.partial(collate, size_divisor=spec.max_stride))
    anchors_by_size: dict[tuple[int, int], torch.Tensor] = {}
    results: list[dict] = []
    for images, targets in tqdm(loader, desc="predict", unit="batch", disable=not progress):
        h, w = images.shape[-2:]
        if (h, w) not in anchors_by_size:
            anchors_by_size[(h, w)] = generate_anchors(spec, h, w, device=device)
        cls_logits, box_deltas = model(images.to(device))
        dets = postprocess(anchors_by_size[(h, w)], cls_logits, box_deltas, [t["size"] for t in targets],
                           post_cfg)
        for det, target in zip(dets, targets):
            boxes = det["boxes"].float().cpu()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
            for bb, score, label in zip(xywh, det["scores"].tolist(), det["labels"].tolist()):
                results.append({"image_id": target["image_id"], "category_id": dataset.cat_ids[label],
                                "bbox": [round(v, 2) for v in bb], "score": round(score, 5)})
    return results
