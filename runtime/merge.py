"""Merging detections across tiles, locally and as tiles complete: the exact result of class-wise NMS over
the whole scene, at a cost of O(boxes) and in memory bounded by about one row of tiles.

Why it is exact. Greedy NMS keeps a box unless a kept box of the same class with a higher score overlaps
it by IoU > ``nms_iou``; the decision of a box depends only on its neighbours in that "suppression graph".
Each tile's detections have already been through NMS (the per-tile post-process), so every edge of the
graph joins boxes of two different tiles, and since a tile's boxes lie inside its window, both ends lie
in the two windows' overlap. Hence:

- a box that meets no other tile's window (with positive area) has no edge: it is final at once;
- a box is *closed* once every tile whose window it meets is complete: all its edges are known then;
- greedy NMS on a sparse graph is resolved in rounds: a box is suppressed as soon as a higher box is kept,
  kept once it is closed and every higher neighbour is suppressed. Chains of any length across any number
  of seams resolve in as many rounds as they are long, and a box waiting for a tile stays pending.

Only the boxes of overlap bands ever wait, and edges are found with a grid join (``pairs.py``), so the
scene's boxes are never NMS-ed together. Ties in score are broken by arrival order (``uid``), as
torchvision's stable sort does for concatenated input.

``merge_cut``: the same greedy pass where the graph also links two waiting boxes (boxes of the overlap
bands) whose intersection covers >= ``ios_thr`` of the smaller box (pieces of one object cut by a seam, and
a tile's own duplicates of a piece), and a suppressed box is fused into its highest kept neighbour (union
box, the leader's score and class): SAHI's GREEDYNMM on the bands, computed locally. Interior boxes are
left as they are.

All boxes are xyxy in scene pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torchvision.ops import batched_nms, box_area

from adla.errors import AdlaError
from adla.runtime.pairs import overlapping_pairs

Detections = dict[str, torch.Tensor]  # boxes [K,4] xyxy, scores [K], labels [K] int64, tiles [K] int64
UNDECIDED, KEPT, SUPPRESSED = 0, 1, 2


def empty_detections(device: torch.device | str = "cpu") -> Detections:
    return {"boxes": torch.zeros((0, 4), device=device), "scores": torch.zeros(0, device=device),
            "labels": torch.zeros(0, dtype=torch.long, device=device),
            "tiles": torch.zeros(0, dtype=torch.long, device=device)}


def select(dets: Detections, keep: torch.Tensor) -> Detections:
    return {k: v[keep] for k, v in dets.items()}


def cat_detections(parts: list[Detections]) -> Detections:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else empty_detections()


def nms_merge(dets: Detections, iou_thr: float) -> Detections:
    """Class-wise NMS over all tiles at once (the reference the local merge equals); sorted by score."""
    keep = batched_nms(dets["boxes"], dets["scores"], dets["labels"], iou_thr)
    return select(dets, keep)


def intersection_over_smaller(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[A,B] intersection area / area of the smaller box, for xyxy boxes a [A,4] and b [B,4]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    smaller = torch.minimum(box_area(a)[:, None], box_area(b)[None, :]).clamp(min=1e-6)
    return inter / smaller


def paired_overlap(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(IoU [E], IoS [E]) of the pairs a[e], b[e] (boxes [E,4] xyxy).

    Element-wise: torchvision's box_iou makes the full [E,E] matrix, which a sparse edge list must avoid.
    IoU is computed as torchvision's NMS does (inter / (area_a + area_b - inter)), so thresholds agree.
    """
    inter = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    area_a, area_b = box_area(a), box_area(b)
    iou = inter / (area_a + area_b - inter)
    ios = inter / torch.minimum(area_a, area_b).clamp(min=1e-6)
    return iou, ios


class TileGrid:
    """Windows laid out as rows x columns (``tiling.tile_windows``): which tiles a box meets, in O(log)."""

    def __init__(self, windows: torch.Tensor):
        windows = torch.as_tensor(windows, dtype=torch.float64).reshape(-1, 4)
        self.x0, self.y0 = windows[:, 0].unique(), windows[:, 1].unique()
        self.cols, self.rows = self.x0.numel(), self.y0.numel()
        self.x1 = torch.stack([windows[windows[:, 0] == x, 2].max() for x in self.x0])
        self.y1 = torch.stack([windows[windows[:, 1] == y, 3].max() for y in self.y0])
        grid = torch.stack([self.x0.repeat(self.rows), self.y0.repeat_interleave(self.cols),
                            self.x1.repeat(self.rows), self.y1.repeat_interleave(self.cols)], 1)
        if grid.shape != windows.shape or not torch.equal(grid, windows):
            raise AdlaError("the local merge needs row-major grid windows (as tiling.tile_windows makes them)")
        self.windows = windows

    def ranges(self, boxes: torch.Tensor) -> torch.Tensor:
        """[K,4] int64 (col_lo, col_hi, row_lo, row_hi): the tiles whose window a box meets with positive
        area (an empty range, lo > hi, for a box of zero area)."""
        b = boxes.double()
        c_lo = torch.searchsorted(self.x1, b[:, 0].contiguous(), right=True)
        c_hi = torch.searchsorted(self.x0, b[:, 2].contiguous(), right=False) - 1
        r_lo = torch.searchsorted(self.y1, b[:, 1].contiguous(), right=True)
        r_hi = torch.searchsorted(self.y0, b[:, 3].contiguous(), right=False) - 1
        flat = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
        c_hi = torch.where(flat, c_lo - 1, c_hi)
        return torch.stack([c_lo, c_hi, r_lo, r_hi], 1)


def _range_count(table: torch.Tensor, rng: torch.Tensor) -> torch.Tensor:
    """[K] sum of a [R,C] int table over each range (col_lo, col_hi, row_lo, row_hi) (2-D prefix sums)."""
    s = torch.zeros((table.shape[0] + 1, table.shape[1] + 1), dtype=torch.long)
    s[1:, 1:] = table.long().cumsum(0).cumsum(1)
    c0, c1, r0, r1 = rng.clamp(min=0).unbind(1)
    c1 = torch.minimum(c1, torch.tensor(table.shape[1] - 1))
    r1 = torch.minimum(r1, torch.tensor(table.shape[0] - 1))
    out = s[r1 + 1, c1 + 1] - s[r0, c1 + 1] - s[r1 + 1, c0] + s[r0, c0]
    return torch.where((c1 < c0) | (r1 < r0), torch.zeros_like(out), out)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one thread: the merge's ops are many and small, and on a busy machine the intra-op
    threads of each small op wait for each other (measured: 3-10x slower with 2 threads next to a job)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _higher(scores: torch.Tensor, uid: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """[E] bool: box i comes before box j in NMS order (higher score; the earlier arrival on a tie)."""
    return (scores[i] > scores[j]) | ((scores[i] == scores[j]) & (uid[i] < uid[j]))


class LocalMerger:
    """Cross-tile merge fed tile by tile; ``step()`` returns the detections that became final.

    ``windows`` [T,4] (x0, y0, x1, y1) of the grid's tiles, row-major. ``add(tile, boxes, scores, labels)``
    once per tile (an empty tile too: it marks the tile complete), in any order; the detections of a tile
    must have been through class-wise NMS at ``nms_iou`` already. ``add_global`` (before any tile) adds
    detections of a pass over the whole scene (``--full-pass``). ``finish()`` completes every tile and
    returns the rest. The union of what ``add`` (interior boxes), ``step`` and ``finish`` return equals
    ``nms_merge`` of all the detections (with ``merge_cut=False``).
    """

    def __init__(self, windows: torch.Tensor, *, nms_iou: float = 0.5, merge_cut: bool = False,
                 ios_thr: float = 0.5, step_boxes: int = 65536):
        self.grid = TileGrid(windows)
        self.nms_iou, self.merge_cut, self.ios_thr, self.step_boxes = nms_iou, merge_cut, ios_thr, step_boxes
        self.done = torch.zeros((self.grid.rows, self.grid.cols), dtype=torch.bool)
        self.global_tile = self.grid.rows * self.grid.cols
        self._global: torch.Tensor | None = None  # [G,4] boxes of the whole-scene pass
        self._global_rng: torch.Tensor | None = None
        self._pending = self._empty_pending()
        self._edges = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))  # (higher, lower)
        self._new: list[dict[str, torch.Tensor]] = []
        self._new_count = 0
        self._uid = 0
        self.pending_peak = 0  # most boxes waiting at once (a figure for benchmarks)

    @staticmethod
    def _empty_pending() -> dict[str, torch.Tensor]:
        z = torch.zeros(0, dtype=torch.long)
        return {**empty_detections(), "uid": z, "rng": torch.zeros((0, 4), dtype=torch.long),
                "status": torch.zeros(0, dtype=torch.int8), "fused": torch.zeros((0, 4)),
                "emitted": torch.zeros(0, dtype=torch.bool), "new": torch.zeros(0, dtype=torch.bool)}

    # -- input -------------------------------------------------------------------------------------
    def _uids(self, n: int, uid: torch.Tensor | None) -> torch.Tensor:
        if uid is None:
            uid = torch.arange(self._uid, self._uid + n)
            self._uid += n
        return uid.long().cpu()

    def add_global(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                   uid: torch.Tensor | None = None) -> None:
        """Detections of a pass over the whole scene; each waits until the tiles it meets are complete."""
        if self.done.any() or self._global is not None:
            raise AdlaError("add_global must come once, before any tile")
        boxes = boxes.float().cpu()
        rng = self.grid.ranges(boxes)
        self._global, self._global_rng = boxes, rng
        self._queue(boxes, scores, labels, torch.full_like(labels.cpu(), self.global_tile), self._uids(len(boxes), uid),
                    rng)

    def add(self, tile: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
            uid: torch.Tensor | None = None) -> Detections:
        """Add one tile's detections (scene px); returns those already final (they meet no other tile)."""
        with single_thread():
            return self._add(tile, boxes, scores, labels, uid)

    def _add(self, tile: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
             uid: torch.Tensor | None) -> Detections:
        row, col = divmod(int(tile), self.grid.cols)
        boxes, scores, labels = boxes.float().cpu(), scores.float().cpu(), labels.long().cpu()
        uid = self._uids(len(boxes), uid)
        self.done[row, col] = True
        rng = self.grid.ranges(boxes)
        inside = (rng[:, 0] == col) & (rng[:, 1] == col) & (rng[:, 2] == row) & (rng[:, 3] == row)
        alone = inside | (rng[:, 0] > rng[:, 1])  # meets no other window: no edge is possible
        if self._global is not None and self._global_rng is not None and alone.any():
            gsel = ((self._global_rng[:, 0] <= col) & (self._global_rng[:, 1] >= col)
                    & (self._global_rng[:, 2] <= row) & (self._global_rng[:, 3] >= row))
            if gsel.any():
                a = alone.nonzero().squeeze(1)
                meets = intersection_over_smaller(boxes[a], self._global[gsel]).gt(0).any(1)
                alone[a[meets]] = False
        tiles = torch.full_like(labels, int(tile))
        final = {"boxes": boxes[alone], "scores": scores[alone], "labels": labels[alone], "tiles": tiles[alone]}
        wait = ~alone
        if wait.any():
            self._queue(boxes[wait], scores[wait], labels[wait], tiles[wait], uid[wait], rng[wait])
        return final

    def _queue(self, boxes, scores, labels, tiles, uid, rng) -> None:
        n = len(boxes)
        self._new.append({"boxes": boxes, "scores": scores.float().cpu(), "labels": labels.long().cpu(),
                          "tiles": tiles.long().cpu(), "uid": uid, "rng": rng,
                          "status": torch.zeros(n, dtype=torch.int8), "fused": boxes.clone(),
                          "emitted": torch.zeros(n, dtype=torch.bool), "new": torch.ones(n, dtype=torch.bool)})
        self._new_count += n

    def ready(self) -> bool:
        """Enough new boxes waiting that a ``step`` is worth its fixed cost."""
        return self._new_count >= self.step_boxes

    # -- resolution --------------------------------------------------------------------------------
    def step(self) -> Detections:
        """Find the new edges, resolve what can be resolved; returns the detections that became final."""
        with single_thread():
            return self._step()

    def _step(self) -> Detections:
        p = self._pending
        if self._new:
            p = {k: torch.cat([p[k]] + [n[k] for n in self._new]) for k in p}
            self._new, self._new_count = [], 0
        self.pending_peak = max(self.pending_peak, len(p["scores"]))
        self._pending = p
        if len(p["scores"]) == 0:
            return empty_detections()
        self._find_edges(p)
        closed = _range_count(self.done, p["rng"]) == _range_count(torch.ones_like(self.done), p["rng"])
        self._resolve(p, closed)
        return self._emit_and_drop(p, closed)

    def finish(self) -> Detections:
        """Complete every tile (those never added had no detections) and return the rest."""
        self.done[:] = True
        out = self.step()
        if len(self._pending["scores"]):
            raise AdlaError(f"local merge left {len(self._pending['scores'])} boxes undecided (a bug)")
        return out

    def _find_edges(self, p: dict[str, torch.Tensor]) -> None:
        new = p["new"]
        if not new.any():
            return
        # old boxes matter only where they meet a tile that brought new boxes
        fresh = torch.zeros_like(self.done, dtype=torch.long)
        nt = p["tiles"][new]
        nt = nt[nt < self.global_tile]
        fresh.view(-1)[nt] = 1
        rel = new | (_range_count(fresh, p["rng"]) > 0)
        idx = rel.nonzero().squeeze(1)
        boxes, labels, tiles = p["boxes"][idx], p["labels"][idx], p["tiles"][idx]
        hi_all, lo_all = [self._edges[0]], [self._edges[1]]
        for i, j in overlapping_pairs(boxes, labels, new[idx]):
            if not self.merge_cut:  # each tile went through NMS: edges join different tiles only
                i, j = i[tiles[i] != tiles[j]], j[tiles[i] != tiles[j]]
            iou, ios = paired_overlap(boxes[i], boxes[j])
            edge = iou > self.nms_iou
            if self.merge_cut:
                edge |= ios >= self.ios_thr
            gi, gj = idx[i[edge]], idx[j[edge]]
            first = _higher(p["scores"], p["uid"], gi, gj)
            hi_all.append(torch.where(first, gi, gj))
            lo_all.append(torch.where(first, gj, gi))
        self._edges = (torch.cat(hi_all), torch.cat(lo_all))
        p["new"] = torch.zeros_like(new)

    def _resolve(self, p: dict[str, torch.Tensor], closed: torch.Tensor) -> None:
        st = p["status"]
        n = st.numel()
        hi, lo = self._edges
        act = st[lo] == UNDECIDED
        h, lo_ = hi[act], lo[act]
        rank = None
        while True:
            sh = st[h]
            any_kept = torch.zeros(n, dtype=torch.long).index_add_(0, lo_, (sh == KEPT).long())
            open_hi = torch.zeros(n, dtype=torch.long).index_add_(0, lo_, (sh != SUPPRESSED).long())
            und = st == UNDECIDED
            new_s = und & (any_kept > 0)
            if self.merge_cut:  # fuse into the highest kept neighbour: wait until every higher one is decided
                undecided_hi = torch.zeros(n, dtype=torch.long).index_add_(0, lo_, (sh == UNDECIDED).long())
                new_s &= closed & (undecided_hi == 0)
            new_k = und & closed & (open_hi == 0)
            if not (new_s.any() or new_k.any()):
                return
            st[new_k] = KEPT
            if self.merge_cut and new_s.any():
                rank = self._rank(p) if rank is None else rank
                self._fuse(p, h, lo_, new_s, rank)
            st[new_s] = SUPPRESSED
            keep = st[lo_] == UNDECIDED
            h, lo_ = h[keep], lo_[keep]

    @staticmethod
    def _rank(p: dict[str, torch.Tensor]) -> torch.Tensor:
        """[P] position of each pending box in NMS order (score descending, then uid)."""
        order = p["uid"].argsort(stable=True)
        order = order[p["scores"][order].argsort(descending=True, stable=True)]
        return torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))

    @staticmethod
    def _fuse(p, h: torch.Tensor, lo: torch.Tensor, members: torch.Tensor, rank: torch.Tensor) -> None:
        """Union each member's box into its highest kept higher neighbour's fused box."""
        sel = members[lo] & (p["status"][h] == KEPT)
        h, lo = h[sel], lo[sel]
        n = rank.numel()
        best = torch.full((n,), n, dtype=torch.long).scatter_reduce(0, lo, rank[h], reduce="amin")
        by_rank = torch.empty_like(rank).scatter_(0, rank, torch.arange(n))
        m = members.nonzero().squeeze(1)
        leader = by_rank[best[m]]
        fused, boxes = p["fused"], p["boxes"]
        fused[:, :2] = fused[:, :2].scatter_reduce(0, leader[:, None].expand(-1, 2), boxes[m, :2], reduce="amin")
        fused[:, 2:] = fused[:, 2:].scatter_reduce(0, leader[:, None].expand(-1, 2), boxes[m, 2:], reduce="amax")

    def _emit_and_drop(self, p: dict[str, torch.Tensor], closed: torch.Tensor) -> Detections:
        st = p["status"]
        hi, lo = self._edges
        kept = st == KEPT
        if self.merge_cut:  # a leader is final once closed and each lower neighbour is decided
            waiting = torch.zeros(st.numel(), dtype=torch.long).index_add_(0, hi, (st[lo] == UNDECIDED).long())
            emit = kept & ~p["emitted"] & closed & (waiting == 0)
        else:
            emit = kept & ~p["emitted"]
        out = {"boxes": p["fused"][emit], "scores": p["scores"][emit], "labels": p["labels"][emit],
               "tiles": p["tiles"][emit]}
        p["emitted"] |= emit
        keep = (st == UNDECIDED) | (kept & ~(closed & p["emitted"]))
        remap = torch.full((st.numel(),), -1, dtype=torch.long)
        remap[keep] = torch.arange(int(keep.sum()))
        h, l_ = remap[hi], remap[lo]
        ok = (h >= 0) & (l_ >= 0)
        self._edges = (h[ok], l_[ok])
        self._pending = {k: v[keep] for k, v in p.items()}
        return out


def merge_tiles(dets: Detections, windows: torch.Tensor, scene_hw: tuple[int, int] | None = None, *,
                nms_iou: float, merge_cut: bool = False, ios_thr: float = 0.5, step_boxes: int = 65536
                ) -> Detections:
    """Cross-tile merge of a whole scene's detections through ``LocalMerger``, tiles fed in row-major
    order; sorted by score. ``dets["tiles"]`` indexes ``windows``; index ``len(windows)`` (if present) marks
    detections of a whole-scene pass. Equals ``nms_merge(dets, nms_iou)`` when ``merge_cut`` is off.
    """
    del scene_hw  # the windows say all
    with single_thread():
        return _merge_tiles(dets, windows, nms_iou=nms_iou, merge_cut=merge_cut, ios_thr=ios_thr,
                            step_boxes=step_boxes)


def _merge_tiles(dets: Detections, windows: torch.Tensor, *, nms_iou: float, merge_cut: bool, ios_thr: float,
                 step_boxes: int) -> Detections:
    windows = torch.as_tensor(windows).reshape(-1, 4)
    num = windows.shape[0]
    merger = LocalMerger(windows, nms_iou=nms_iou, merge_cut=merge_cut, ios_thr=ios_thr, step_boxes=step_boxes)
    dets = {k: v.cpu() for k, v in dets.items()}
    uid = torch.arange(len(dets["scores"]))
    tiles = dets["tiles"]
    out: list[Detections] = []
    g = tiles == num
    if g.any():
        merger.add_global(dets["boxes"][g], dets["scores"][g], dets["labels"][g], uid[g])
    order = tiles.argsort(stable=True)
    boxes, scores, labels, uid = dets["boxes"][order], dets["scores"][order], dets["labels"][order], uid[order]
    counts = torch.bincount(tiles, minlength=num + 1)[:num].tolist()
    start = 0
    for t, c in enumerate(counts):
        sl = slice(start, start + c)
        start += c
        out.append(merger.add(t, boxes[sl], scores[sl], labels[sl], uid[sl]))
        if merger.ready():
            out.append(merger.step())
    out.append(merger.finish())
    merged = cat_detections(out)
    return select(merged, merged["scores"].argsort(descending=True, stable=True))


def seam_leftovers(dets: Detections, windows: torch.Tensor, *, ios_thr: float = 0.5, iou_thr: float = 0.5) -> int:
    """Pairs of boxes (same class) on seams that look like pieces of one object: intersection >= ``ios_thr``
    of the smaller box but IoU < ``iou_thr`` (NMS leaves them). "On a seam": both boxes meet two or more
    tile windows. The figure ``--merge-cut`` should drive down; computed with the grid join."""
    boxes = dets["boxes"].float().cpu()
    rng = TileGrid(windows).ranges(boxes)
    band = ((rng[:, 1] - rng[:, 0] + 1) * (rng[:, 3] - rng[:, 2] + 1)) >= 2
    idx = band.nonzero().squeeze(1)
    b, lab = boxes[idx], dets["labels"].cpu()[idx]
    count = 0
    with single_thread():
        for i, j in overlapping_pairs(b, lab, torch.ones(len(idx), dtype=torch.bool)):
            iou, ios = paired_overlap(b[i], b[j])
            count += int(((ios >= ios_thr) & (iou < iou_thr)).sum())
    return count
