"""Exact spatial pruning for qualities that are never 0 off-overlap (NWD, RFLA's RFD).

Such a quality still falls with a distance that grows with the distance of the box centres, so every
rule on it needs only the anchor-GT pairs with close centres:

- a threshold rule (quality >= t): the pairs within reach of t of each GT;
- each GT's top-k: the pairs within reach of v, v the k-th best quality found so far (in the end, at
  most one round more once k are found);
- each anchor's best GT: rounds at a falling level, until the anchor's best found quality is at least
  the level (then every pair left out is below it).

A :class:`PairQuality` gives the quality of any list of pairs, equal to the last bit to the dense
matrix's elements (so a pruned result equals the dense one exactly), and the reach of a level: an
axis-aligned ellipse around a GT's centre outside which a box surely (with a margin for the float32
rounding) scores below the level. Boxes are grouped into layers of about equal shape (anchors sit on a
few regular grids, one per level and shape), and the reach is per (layer, GT), so the size term of the
distance is a near-constant, not a loose bound. :class:`LayeredGrid` finds the boxes of a layer inside
many ellipses at once. A pair found this way costs more than an element of a dense block, so the
searches fall back to dense blocks (bit-equal too) where they would find too many pairs.
"""

from __future__ import annotations

import itertools
import math
from typing import Protocol

import torch

MAX_LAYERS = 128  # more shape classes than this: no pruning (the assigner runs dense)
_QUERY_ROWS = 1 << 21  # grid rows enumerated per batch of queries (bounds the temporaries)
_PAIRS_PER_DENSE = 1 / 16  # a pair found through the grid costs about 16 elements of a dense block
_DENSE_BELOW = 1 << 21  # boxes x GTs under which a search round is not worth it


class PairQuality(Protocol):
    """A pairwise quality (higher is better) of N boxes and G GTs, evaluated on lists of pairs."""

    num_boxes: int
    num_gts: int
    box_centres: torch.Tensor  # [N, 2] float64, the centres the quality itself uses
    gt_centres: torch.Tensor  # [G, 2] float64
    box_layer: torch.Tensor  # [N] int64: boxes of one layer have about one shape
    num_layers: int
    costly: bool  # a value costs more than testing the pair against the ellipse: test first

    def values(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Quality [P] of boxes ``i`` [P] with GTs ``j`` [P]: bit-equal to the dense matrix at (i, j)."""
        ...

    def block(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Quality [r, c] of boxes ``rows`` with GTs ``cols``: the dense matrix's elements."""
        ...

    def radius(self, layer: torch.Tensor, j: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """[Q, 2] float64 half-axes (rx, ry) of an axis-aligned ellipse around GT ``j``'s centre: a box of
        ``layer`` whose centre is outside it has a computed quality < ``level`` [Q] (float64) with the
        GT. Negative: no box of the layer reaches the level; inf: every box may."""
        ...

    def to_s(self, q: torch.Tensor) -> torch.Tensor:
        """A squared-distance-like scale of a quality level (float64; decreasing in q)."""
        ...

    def from_s(self, s: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_s`."""
        ...

    def s_floor(self) -> torch.Tensor:
        """[L] float64: per layer, a lower bound of :meth:`to_s` of the quality over all GTs."""
        ...


def worth_pruning(anchors: torch.Tensor, gt_boxes: torch.Tensor, min_pairs: int) -> bool:
    """Whether to prune: CPU tensors (where the exactness is verified, and where the dense matrices
    cost), and at least ``min_pairs`` anchor-GT pairs (at least 1)."""
    return anchors.device.type == "cpu" and anchors.shape[0] * gt_boxes.shape[0] >= max(min_pairs, 1)


def shape_layers(sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Layers of about equal (w, h) [N, 2] (1/64 of an octave apart at most): (layer [N] int64, per
    layer the smallest and largest (w, h) [L, 2] float64); None for more than :data:`MAX_LAYERS`.

    The sizes of one grid's anchors differ in their last float32 bits from place to place, so a layer
    is a range of sizes, and the bounds hold for the whole range.
    """
    s = sizes.double()
    lg = torch.where(s > 0, torch.log2(s.clamp(min=1e-300)), -1000.0).clamp(-1000.0, 1000.0)
    k = torch.round(lg * 64).long() + 65536
    uniq, layer = torch.unique((k[:, 0] << 17) | k[:, 1], return_inverse=True)
    n_l = uniq.numel()
    if n_l > MAX_LAYERS:
        return None
    idx = layer[:, None].expand(-1, 2)
    lo = torch.full((n_l, 2), math.inf, dtype=torch.float64, device=s.device)
    hi = torch.full((n_l, 2), -math.inf, dtype=torch.float64, device=s.device)
    lo.scatter_reduce_(0, idx, s, "amin")
    hi.scatter_reduce_(0, idx, s, "amax")
    return layer, lo, hi


def unique_rows(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of float32 boxes [N, 4] and the inverse map [N], like ``torch.unique(dim=0)`` (same
    set, -0.0 equal to 0.0; the order of the rows may differ) at a fraction of its cost."""
    b = boxes.float() + 0.0
    bits = b.view(torch.int32).long()
    lo = (bits[:, 0] << 32) | (bits[:, 1] & 0xFFFFFFFF)
    hi = (bits[:, 2] << 32) | (bits[:, 3] & 0xFFFFFFFF)
    _, i_lo = torch.unique(lo, return_inverse=True)
    u_hi, i_hi = torch.unique(hi, return_inverse=True)
    key = i_lo * u_hi.numel() + i_hi
    u, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((u.numel(),), b.shape[0], dtype=torch.long, device=b.device)
    first.scatter_reduce_(0, inverse, torch.arange(b.shape[0], device=b.device), reduce="amin")
    return b[first], inverse


class LayeredGrid:
    """Box centres bucketed per layer into square cells (about ``per_cell`` centres to a cell), to find
    the boxes of a layer within a radius of many query centres at once (no Python loop over queries).

    ``index``: the global indices [n] of the boxes held (a subset of a :class:`PairQuality`'s boxes).
    """

    def __init__(self, centres: torch.Tensor, layer: torch.Tensor, num_layers: int, index: torch.Tensor,
                 per_cell: float = 2.0):
        dev = centres.device
        self.index = index
        self.centres = centres  # [n, 2] float64
        n_per = torch.bincount(layer, minlength=num_layers)
        lo = torch.full((num_layers, 2), math.inf, dtype=torch.float64, device=dev)
        hi = torch.full((num_layers, 2), -math.inf, dtype=torch.float64, device=dev)
        lay2 = layer[:, None].expand(-1, 2)
        lo.scatter_reduce_(0, lay2, centres, reduce="amin")
        hi.scatter_reduce_(0, lay2, centres, reduce="amax")
        cells, nxs, nys, offs, off = [], [], [], [], 0
        for ell, (cnt, (x0, y0), (x1, y1)) in enumerate(zip(n_per.tolist(), lo.tolist(), hi.tolist())):
            if cnt == 0:
                lo[ell] = 0.0
                cells.append(1.0)
                nxs.append(0)
                nys.append(0)
                offs.append(off)
                continue
            ex, ey = x1 - x0, y1 - y0
            cell = max(math.sqrt(ex * ey * per_cell / cnt), max(ex, ey) * per_cell / cnt, 1e-3)
            nx, ny = int(ex / cell) + 1, int(ey / cell) + 1
            cells.append(cell)
            nxs.append(nx)
            nys.append(ny)
            offs.append(off)
            off += nx * ny
        self.cell = torch.tensor(cells, dtype=torch.float64, device=dev)
        self.layer_count = n_per.double()
        self.density = self.layer_count / ((hi - lo).clamp(min=0) + self.cell[:, None]).prod(1)  # per px^2
        self.lo = lo
        self.lo_x, self.lo_y = lo[:, 0].contiguous(), lo[:, 1].contiguous()
        self.cx, self.cy = centres[:, 0].contiguous(), centres[:, 1].contiguous()
        self.nx = torch.tensor(nxs, dtype=torch.long, device=dev)
        self.ny = torch.tensor(nys, dtype=torch.long, device=dev)
        self.off = torch.tensor(offs, dtype=torch.long, device=dev)
        self.num_layers = num_layers
        cid = self._cell_of(layer, centres)
        self.order = torch.argsort(cid, stable=True)  # within a cell: ascending box order
        self.sorted_index = index.index_select(0, self.order)
        counts = torch.bincount(cid, minlength=off)
        self.counts = counts
        self.start = torch.cumsum(counts, 0) - counts

    def estimate(self, layer: torch.Tensor, r: torch.Tensor) -> float:
        """About how many pairs :meth:`query` would return (ellipses times the layers' densities)."""
        n = self.layer_count.index_select(0, layer)
        area = torch.where((r >= 0).all(1), r.clamp(min=0).prod(1) * math.pi, 0.0).nan_to_num_(math.inf)
        return float(torch.minimum(area * self.density.index_select(0, layer), n).sum())

    def _cell_of(self, layer: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        sel = torch.Tensor.index_select
        rel = (xy - sel(self.lo, 0, layer)) / sel(self.cell, 0, layer)[:, None]
        nx = sel(self.nx, 0, layer)
        ix = rel[:, 0].floor().clamp_(min=0).long().minimum(nx - 1)
        iy = rel[:, 1].floor().clamp_(min=0).long().minimum(sel(self.ny, 0, layer) - 1)
        return sel(self.off, 0, layer) + iy * nx + ix

    # longer than 60 lines: one vectorised pass (cell ranges, per-query row counts, memory-bounded
    # blocks, the exact ellipse test); split, its intermediate tensors would travel through arguments
    def query(self, layer: torch.Tensor, centre: torch.Tensor, r: torch.Tensor, exact: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs (global box index [P], query index [P]) of every box of layer ``layer[q]`` whose centre
        is inside the axis-aligned ellipse of half-axes ``r[q]`` [Q, 2] (float64; inf: unbounded;
        negative: none) around ``centre[q]`` [Q, 2].

        Per query and grid row, the cells the ellipse's chord meets hold one contiguous run of boxes
        (sorted by cell, rows of cells one after the other), so the work is per row, not per cell.
        Those runs go slightly beyond the ellipse; ``exact`` drops the boxes outside it.
        """
        dev = centre.device
        sel = torch.Tensor.index_select
        ny = sel(self.ny, 0, layer)
        ok = (r >= 0).all(1) & (ny > 0)
        q_all = ok.nonzero().squeeze(1)
        layer = sel(layer, 0, q_all)
        rx, ry = sel(r[:, 0], 0, q_all), sel(r[:, 1], 0, q_all)
        qx, qy = sel(centre[:, 0], 0, q_all), sel(centre[:, 1], 0, q_all)
        cell, lox, loy = sel(self.cell, 0, layer), sel(self.lo_x, 0, layer), sel(self.lo_y, 0, layer)
        ylim = (sel(ny, 0, q_all) - 1).double()
        fy0 = ((qy - ry - loy) / cell).floor_()
        fy1 = ((qy + ry - loy) / cell).floor_()
        y0 = fy0.clamp(min=0).minimum(ylim).long()
        nrow = torch.where((fy1 >= 0) & (fy0 <= ylim), fy1.clamp(min=0).minimum(ylim).long() - y0 + 1, 0)
        boxes, queries = [], []
        csum = torch.cumsum(nrow, 0)
        total = int(csum[-1]) if csum.numel() else 0
        cuts = torch.searchsorted(csum, torch.arange(1, total // _QUERY_ROWS + 1, device=dev) * _QUERY_ROWS)
        edges = sorted({0, q_all.numel(), *cuts.tolist()})
        for a, b in itertools.pairwise(edges):
            nr = nrow[a:b]
            qi = torch.repeat_interleave(torch.arange(a, b, device=dev), nr)
            cy = sel(y0, 0, qi) + torch.arange(qi.numel(), device=dev) - torch.repeat_interleave(
                torch.cumsum(nr, 0) - nr, nr)
            lay, c, cx_q, cy_q, rxq, ryq = (sel(t, 0, qi) for t in (layer, cell, qx, qy, rx, ry))
            # the chord of the ellipse within the row's band of y
            band = sel(loy, 0, qi) + cy * c
            dy = torch.maximum(band - cy_q, cy_q - (band + c)).clamp_(min=0)
            half = rxq * (1 - _ratio(dy, ryq).square_()).clamp_(min=0).sqrt_()
            nx_l = sel(self.nx, 0, lay)
            xlim = (nx_l - 1).double()
            lx = sel(lox, 0, qi)
            fx0 = ((cx_q - half - lx) / c).floor_()
            fx1 = ((cx_q + half - lx) / c).floor_()
            x0 = fx0.clamp(min=0).minimum(xlim).long()
            x1 = fx1.clamp(min=0).minimum(xlim).long()
            row = sel(self.off, 0, lay) + cy * nx_l
            first = sel(self.start, 0, row + x0)
            last_cell = row + x1
            n = torch.where((fx1 >= 0) & (fx0 <= xlim),
                            sel(self.start, 0, last_cell) + sel(self.counts, 0, last_cell) - first, 0)
            nz = n.nonzero().squeeze(1)
            qi, first, n = sel(qi, 0, nz), sel(first, 0, nz), sel(n, 0, nz)
            if not exact:
                # every box of the runs: a few beyond the ellipse's edge cost a value each, no more
                pos = torch.repeat_interleave(first - (torch.cumsum(n, 0) - n), n)
                pos += torch.arange(pos.numel(), device=dev)
                boxes.append(sel(self.sorted_index, 0, pos))
                queries.append(torch.repeat_interleave(sel(q_all, 0, qi), n))
                continue
            run = torch.repeat_interleave(torch.arange(n.numel(), device=dev), n)
            pos = sel(first - (torch.cumsum(n, 0) - n), 0, run) + torch.arange(run.numel(), device=dev)
            local = sel(self.order, 0, pos)
            qq = sel(qi, 0, run)
            ux = _ratio(sel(self.cx, 0, local) - sel(qx, 0, qq), sel(rx, 0, qq))
            uy = _ratio(sel(self.cy, 0, local) - sel(qy, 0, qq), sel(ry, 0, qq))
            keep = (ux.square_().add_(uy.square_()) <= 1).nonzero().squeeze(1)
            boxes.append(sel(self.index, 0, sel(local, 0, keep)))
            queries.append(sel(q_all, 0, sel(qq, 0, keep)))
        if not boxes:
            empty = torch.zeros(0, dtype=torch.long, device=dev)
            return empty, empty
        return torch.cat(boxes), torch.cat(queries)


def _ratio(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """d / r for a distance d >= 0 or signed and a half-axis r >= 0 (may be 0 or inf), 0 / 0 = 0."""
    return torch.where(d == 0, 0.0, d / r)


def full_grid(pq: PairQuality) -> LayeredGrid:
    """A grid of all the boxes of ``pq``."""
    return LayeredGrid(pq.box_centres, pq.box_layer, pq.num_layers,
                       torch.arange(pq.num_boxes, device=pq.box_centres.device))


def sub_grid(pq: PairQuality, index: torch.Tensor) -> LayeredGrid:
    """A grid of the boxes ``index`` of ``pq``."""
    return LayeredGrid(pq.box_centres[index], pq.box_layer[index], pq.num_layers, index)


def gt_pairs(pq: PairQuality, grid: LayeredGrid, gts: torch.Tensor, *, level: torch.Tensor | None = None,
             r: torch.Tensor | None = None, layers: torch.Tensor | None = None, max_pairs: float | None = None
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Pairs (box [P], position in ``gts`` [P]) that may matter to GTs ``gts`` [g]: every box of ``grid``
    with a possible quality >= ``level`` ([g] or, per layer, [L, g]) with the GT, or (``r`` [g] or
    [L, g]) whose centre is within ``r`` of the GT's; a few more may come. ``layers``: only these
    layers (default: all). None when about more than ``max_pairs`` pairs would come back."""
    dev = pq.gt_centres.device
    lay = torch.arange(pq.num_layers, device=dev) if layers is None else layers
    n_l, g = lay.numel(), gts.numel()
    ql = lay.repeat_interleave(g)  # layer-major queries: (layer, gt)
    qg = torch.arange(g, device=dev).repeat(n_l)
    qj = gts[qg]
    if level is not None:
        lv = level[lay].reshape(-1) if level.dim() == 2 else level[qg]
        rad = pq.radius(ql, qj, lv)
    else:
        assert r is not None, "gt_pairs needs level or r"
        rad = (r[lay].reshape(-1) if r.dim() == 2 else r[qg])[:, None].expand(-1, 2)
    if max_pairs is not None and grid.estimate(ql, rad) > max_pairs:
        return None
    box, q = grid.query(ql, pq.gt_centres.index_select(0, qj), rad, exact=pq.costly)
    return box, qg[q]


# about 60 lines: the search rounds (grow the radius until k candidates beat the best possible outside)
# read best as one loop
def top_k_per_gt(
    pq: PairQuality,
    grid: LayeredGrid,
    k: int,
    *,
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None,
    cells: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each GT's ``k`` best boxes and every box tied with the k-th best, exactly as a dense ``topk`` over
    all boxes (k capped at N) followed by ``q >= kth``.

    Returns (boxes [P], GTs [P]) of those pairs and each GT's best quality [G].
    ``first``: pairs (box, GT, quality, level) holding every pair of every GT that may reach ``level``.
    Otherwise the search starts with the boxes of each layer within ``cells`` grid cells of each GT.

    A GT is settled by a round that saw every box within m cells of it (per layer) when its k-th best
    found needs no more, or by a round at a level when its k-th best is >= the level. A GT with k boxes
    found but not settled gets one more round at the level of its k-th best, which settles it; one with
    fewer than k found gets 4x as many cells (in the end: every box).
    """
    dev = pq.gt_centres.device
    n_gts = pq.num_gts
    k = min(k, pq.num_boxes)
    best = torch.full((n_gts,), -math.inf, device=dev)
    out_i, out_j = [], []
    todo = torch.arange(n_gts, device=dev)
    level = torch.full((n_gts,), math.nan, dtype=torch.float64, device=dev)  # NaN: by radius
    m = torch.full((n_gts,), float(cells), dtype=torch.float64, device=dev)  # radius in cells of a layer
    cell = grid.cell  # [L]
    span = float((pq.box_centres.amax(0) - pq.box_centres.amin(0)).norm()) if pq.num_boxes else 0.0
    m_all = span / float(cell.min()) + 1
    while todo.numel():
        g = todo.numel()
        lv, mg = level[todo], m[todo]
        by_level = ~lv.isnan()
        if first is not None:  # todo is every GT here: positions are GT indices
            i, jj, q, first_level = first
            first = None
            lv = torch.full_like(lv, first_level)
            by_level = torch.ones_like(by_level)
        else:
            i, jj = _mixed_pairs(pq, grid, todo, lv, mg, by_level)
            q = pq.values(i, todo.index_select(0, jj))
        top, kq, cnt = _kth_per_group(q, jj, g, k)
        has = cnt >= k
        seen_all = ~by_level & torch.isinf(mg)
        need = _radius_per_layer(pq, todo, kq.double())  # [L, g]
        fits = (need <= mg[None] * cell[:, None]).all(0)
        done = has & torch.where(by_level, kq.double() >= lv, fits) | seen_all
        sel = done[jj] & (q >= kq[jj])
        out_i.append(i[sel])
        out_j.append(todo[jj[sel]])
        best[todo[done]] = top[done]
        nd = ~done
        gn = todo[nd]
        # k found: one round at the level of the k-th best settles it; else a wider radius
        level[gn] = torch.where(has[nd], kq[nd].double(), math.nan)
        wider = torch.where(by_level[nd], float(cells), mg[nd] * 4)
        m[gn] = torch.where(wider >= m_all, math.inf, wider)
        todo = gn
    return torch.cat(out_i), torch.cat(out_j), best


def _kth_per_group(q: torch.Tensor, group: torch.Tensor, g: int, k: int):
    """Per group of ``group`` [P] (values in [0, g)): best q, k-th best q (-inf if fewer), count."""
    dev = q.device
    cnt = torch.bincount(group, minlength=g)
    top = torch.full((g,), -math.inf, device=dev).scatter_reduce_(0, group, q, reduce="amax")
    if k == 1:
        return top, top.clone(), cnt
    order = torch.argsort(q, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    start = torch.cumsum(cnt, 0) - cnt
    kq = torch.full((g,), -math.inf, device=dev)
    has = (cnt >= k).nonzero().squeeze(1)
    kq[has] = q[order[start[has] + k - 1]]
    return top, kq, cnt


def _mixed_pairs(pq, grid, gts, lv, m, by_level):
    """Pairs for GTs ``gts`` [g]: by level where ``by_level``, else within ``m`` cells of each layer.
    Returns (box, position in gts)."""
    dev = gts.device
    parts_i, parts_j = [], []
    pos = by_level.nonzero().squeeze(1)
    if pos.numel():
        i, jj = gt_pairs(pq, grid, gts[pos], level=lv[pos])
        parts_i.append(i)
        parts_j.append(pos[jj])
    pos = (~by_level).nonzero().squeeze(1)
    if pos.numel():
        r = m[pos][None, :] * grid.cell[:, None]  # [L, g]
        i, jj = gt_pairs(pq, grid, gts[pos], r=r)
        parts_i.append(i)
        parts_j.append(pos[jj])
    if not parts_i:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    return torch.cat(parts_i), torch.cat(parts_j)


def _radius_per_layer(pq: PairQuality, gts: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """[L, g]: per layer, the larger half-axis for ``level`` [g] (inf where level is -inf)."""
    n_l, g = pq.num_layers, gts.numel()
    ql = torch.arange(n_l, device=gts.device).repeat_interleave(g)
    return pq.radius(ql, gts.repeat(n_l), level.repeat(n_l)).amax(1).view(n_l, g)


def best_per_box(
    pq: PairQuality,
    *,
    grid: LayeredGrid | None = None,
    first: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    gap0: float = 1.0,
) -> torch.Tensor:
    """Each box's best quality over all GTs [N], exactly the dense ``amax(dim=1)``.

    ``grid``: a grid of all the boxes, if built. ``first``: pairs (box, quality, level) holding every
    pair that may reach ``level``. Then rounds over the boxes not yet settled, per layer at the level
    ``from_s(s_floor + gap)``, the gap growing 4x a round: a box is settled once its best found quality
    is >= its layer's level (every pair left out is below it). When a round would find more pairs than
    a fraction of all the pairs of the boxes left, those are computed densely instead.
    """
    dev = pq.box_centres.device
    n = pq.num_boxes
    best = torch.full((n,), -math.inf, device=dev)
    floor = pq.s_floor()  # [L]
    # a gap far below the floor's own scale moves no radius (a GT of no width: a KLD of 1e14)
    gap = torch.clamp(floor.abs() * 1e-3, min=float(gap0))
    todo = torch.arange(n, device=dev)
    if first is not None:
        fi, fq, first_level = first
        best.scatter_reduce_(0, fi, fq, reduce="amax")
        todo = (best.double() < first_level).nonzero().squeeze(1)
        s0 = pq.to_s(torch.tensor([first_level], dtype=torch.float64, device=dev))
        gap = torch.maximum(gap, (s0 - floor) * 4)
    all_gts = torch.arange(pq.num_gts, device=dev)
    while todo.numel():
        dense = todo.numel() * pq.num_gts
        pairs = None
        if dense > _DENSE_BELOW:
            if grid is None or todo.numel() * 2 < grid.index.numel():
                grid = sub_grid(pq, todo)  # else the grid holds some settled boxes: their pairs are dropped
            lay = torch.unique(pq.box_layer.index_select(0, todo))
            level = pq.from_s(floor + gap)  # [L]
            lv = level[:, None].expand(-1, pq.num_gts)
            pairs = gt_pairs(pq, grid, all_gts, level=lv, layers=lay, max_pairs=dense * _PAIRS_PER_DENSE)
        if pairs is None:  # the pairs would cost more than every pair of these boxes: all of them
            best[todo] = _dense_best(pq, todo)
            break
        i, jj = pairs
        assert grid is not None  # pairs come from a grid
        if grid.index.numel() != todo.numel():
            live = torch.zeros(n, dtype=torch.bool, device=dev)
            live[todo] = True
            keep = live.index_select(0, i).nonzero().squeeze(1)
            i, jj = i.index_select(0, keep), jj.index_select(0, keep)
        if i.numel():
            best.scatter_reduce_(0, i, pq.values(i, jj), reduce="amax")
        rad = _radius_all_layers_at(pq, lay, level[lay])
        layer_seen = torch.zeros(pq.num_layers, dtype=torch.bool, device=dev)
        layer_seen[lay] = torch.isinf(rad).all(2).all(1)
        bl = pq.box_layer.index_select(0, todo)
        settled = (best.index_select(0, todo).double() >= level[bl]) | layer_seen[bl]
        todo = todo[~settled]
        gap = gap * 4
    return best


def _dense_best(pq: PairQuality, rows: torch.Tensor) -> torch.Tensor:
    """Best quality over all GTs of boxes ``rows``, from dense blocks of the quality."""
    step = max(1, (1 << 22) // max(rows.numel(), 1))
    out = None
    for start in range(0, pq.num_gts, step):
        cols = torch.arange(start, min(start + step, pq.num_gts), device=rows.device)
        m = pq.block(rows, cols).amax(1)
        out = m if out is None else torch.maximum(out, m)
    assert out is not None, "no GT"  # callers have at least one GT
    return out


def _radius_all_layers_at(pq: PairQuality, lay: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """[len(lay), G, 2]: half-axes of every GT for layer ``lay[a]`` at ``level[a]``."""
    g = pq.num_gts
    ql = lay.repeat_interleave(g)
    qj = torch.arange(g, device=lay.device).repeat(lay.numel())
    return pq.radius(ql, qj, level.repeat_interleave(g)).view(lay.numel(), g, 2)
