"""Merging detections across tiles: class-wise NMS, and fusion of boxes cut by a tile border.

All boxes are xyxy in scene pixels. Everything is vectorised (torchvision ops, scatter reductions); no
Python loop runs per box.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_area

Detections = dict[str, torch.Tensor]  # boxes [K,4] xyxy, scores [K], labels [K] int64, tiles [K] int64


def empty_detections(device: torch.device | str = "cpu") -> Detections:
    return {"boxes": torch.zeros((0, 4), device=device), "scores": torch.zeros(0, device=device),
            "labels": torch.zeros(0, dtype=torch.long, device=device),
            "tiles": torch.zeros(0, dtype=torch.long, device=device)}


def select(dets: Detections, keep: torch.Tensor) -> Detections:
    return {k: v[keep] for k, v in dets.items()}


def nms_merge(dets: Detections, iou_thr: float) -> Detections:
    """Class-wise NMS over all tiles; result sorted by score."""
    keep = batched_nms(dets["boxes"], dets["scores"], dets["labels"], iou_thr)
    return select(dets, keep)


def touches_tile_border(boxes: torch.Tensor, windows: torch.Tensor, scene_hw: tuple[int, int],
                        tol: float = 4.0) -> torch.Tensor:
    """[K] bool: box k lies within ``tol`` px of an inner edge of its tile (an edge that is not the scene's).

    boxes [K,4] xyxy scene px; windows [K,4] the (x0, y0, x1, y1) of each box's tile.
    """
    h, w = scene_hw
    x0, y0, x1, y1 = windows.float().unbind(1)
    bx0, by0, bx1, by1 = boxes.unbind(1)
    return (
        ((bx0 - x0 <= tol) & (x0 > 0)) | ((by0 - y0 <= tol) & (y0 > 0))
        | ((x1 - bx1 <= tol) & (x1 < w)) | ((y1 - by1 <= tol) & (y1 < h))
    )


def intersection_over_smaller(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[A,B] intersection area / area of the smaller box, for xyxy boxes a [A,4] and b [B,4]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    smaller = torch.minimum(box_area(a)[:, None], box_area(b)[None, :]).clamp(min=1e-6)
    return inter / smaller


def _components(num: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Connected-component id [num] (the smallest member index) of an undirected graph's edges."""
    comp = torch.arange(num, device=src.device)
    if src.numel() == 0:
        return comp
    s, d = torch.cat([src, dst]), torch.cat([dst, src])
    while True:  # min-label propagation; rounds ~ component diameter (2-4 for cut boxes)
        new = comp.scatter_reduce(0, d, comp[s], reduce="amin")
        new = new[new]  # pointer jumping: converge in log(diameter) rounds
        if torch.equal(new, comp):
            return comp
        comp = new


def fuse_cut_boxes(dets: Detections, windows: torch.Tensor, scene_hw: tuple[int, int], *,
                   ios_thr: float = 0.5, border_tol: float = 4.0, chunk: int = 4096) -> Detections:
    """Fuse boxes of one object cut by tile borders into their union.

    ``windows`` [T,4] are the tile windows (x0, y0, x1, y1) indexed by ``dets["tiles"]``. Two boxes are
    pieces of one object when they share a class, come from different tiles, at least one touches an inner
    border of its tile, and intersection / area of the smaller >= ``ios_thr``. Pieces are grouped
    transitively; a group becomes one box (union of the pieces, best score, its class).
    """
    k = dets["boxes"].shape[0]
    if k == 0:
        return dets
    boxes, labels, tiles = dets["boxes"], dets["labels"], dets["tiles"]
    on_border = touches_tile_border(boxes, windows.to(boxes.device)[tiles], scene_hw, border_tol)
    cand = on_border.nonzero().squeeze(1)  # only a border box can be a piece
    src_all, dst_all = [], []
    for start in range(0, cand.numel(), chunk):  # bounded memory: chunk x K matrix at a time
        rows = cand[start : start + chunk]
        ios = intersection_over_smaller(boxes[rows], boxes)  # [r, K]
        match = (ios >= ios_thr) & (labels[rows, None] == labels[None]) & (tiles[rows, None] != tiles[None])
        r, c = match.nonzero(as_tuple=True)
        src_all.append(rows[r])
        dst_all.append(c)
    src = torch.cat(src_all) if src_all else cand.new_zeros(0)
    dst = torch.cat(dst_all) if dst_all else cand.new_zeros(0)
    if src.numel() == 0:
        return dets
    comp = _components(k, src, dst)
    roots, group = torch.unique(comp, return_inverse=True)  # group [K] in 0..G-1
    g = roots.numel()
    fused = torch.empty((g, 4), device=boxes.device, dtype=boxes.dtype)
    fused[:, :2] = boxes.new_full((g, 2), float("inf")).scatter_reduce(
        0, group[:, None].expand(-1, 2), boxes[:, :2], reduce="amin")
    fused[:, 2:] = boxes.new_full((g, 2), float("-inf")).scatter_reduce(
        0, group[:, None].expand(-1, 2), boxes[:, 2:], reduce="amax")
    best = dets["scores"].new_full((g,), float("-inf")).scatter_reduce(0, group, dets["scores"], reduce="amax")
    # the member holding the best score gives the group's class and tile
    is_best = dets["scores"] == best[group]
    leader = torch.full((g,), k, device=boxes.device, dtype=torch.long).scatter_reduce(
        0, group, torch.where(is_best, torch.arange(k, device=boxes.device), k), reduce="amin")
    order = best.argsort(descending=True)
    return {"boxes": fused[order], "scores": best[order], "labels": labels[leader][order],
            "tiles": tiles[leader][order]}


def merge_tiles(dets: Detections, windows: torch.Tensor, scene_hw: tuple[int, int], *, nms_iou: float,
                merge_cut: bool = False, ios_thr: float = 0.5, border_tol: float = 4.0) -> Detections:
    """Cross-tile merge: class-wise NMS, then (``merge_cut``) fusion of cut pieces and NMS again."""
    dets = nms_merge(dets, nms_iou)
    if merge_cut:
        dets = fuse_cut_boxes(dets, windows, scene_hw, ios_thr=ios_thr, border_tol=border_tol)
        dets = nms_merge(dets, nms_iou)
    return dets
