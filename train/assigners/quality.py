"""Quality measures between boxes and GTs, and their computation one chunk of GTs at a time.

A :class:`Quality` is a pairwise function plus one fact about it: whether it is exactly 0 for boxes
that do not overlap. Only then may :func:`iter_quality` leave out the anchors far from a chunk of GTs
(k-d pruning); any other measure (NWD, RFD) sees every anchor there. Those two are pruned instead by
the distance of the centres, on lists of pairs (:class:`NWDPairs`, :mod:`.spatial`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from adla.assigner_params import NWDParams
from adla.boxes import centers_sizes, paired_iou, pairwise_iou
from adla.train.assigners.spatial import shape_layers


@dataclass(frozen=True)
class Quality:
    """A pairwise quality ``fn(boxes [N,4], gt_boxes [M,4]) -> [N, M]`` (xyxy px; higher is better), and
    the same element by element, ``paired(a [..., 4], b [..., 4]) -> [...]`` (broadcast), for assigners that
    score chosen candidates only (ATSS)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    zero_off_overlap: bool  # exactly 0 for every pair of boxes with no positive-area intersection
    paired: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


IOU = Quality("iou", pairwise_iou, zero_off_overlap=True, paired=paired_iou)

NWD_CONSTANT = NWDParams.constant  # C of Wang et al. 2021 on AI-TOD (declared with the nwd assigner's parameters)


def pairwise_nwd(boxes: torch.Tensor, gt_boxes: torch.Tensor, constant: float = NWD_CONSTANT) -> torch.Tensor:
    """Normalized Gaussian Wasserstein distance [N, M] of xyxy boxes [N,4] and [M,4] (Wang et al. 2021).

    A box is the Gaussian N((cx, cy), diag(w^2/4, h^2/4)); the 2-Wasserstein distance of two of them is
    the Euclidean distance of (cx, cy, w/2, h/2), and NWD = exp(-W2 / C). In (0, 1], never 0.
    """
    p1 = centers_sizes(boxes.float()) * torch.tensor([1.0, 1.0, 0.5, 0.5], device=boxes.device)
    p2 = centers_sizes(gt_boxes.float()) * torch.tensor([1.0, 1.0, 0.5, 0.5], device=gt_boxes.device)
    # The direct kernel: no |a|^2 + |b|^2 - 2ab cancellation, and every element independent of the chunk.
    w2 = torch.cdist(p1, p2, compute_mode="donot_use_mm_for_euclid_dist")
    return w2.mul_(-1.0 / constant).exp_()


def paired_nwd(a: torch.Tensor, b: torch.Tensor, constant: float = NWD_CONSTANT) -> torch.Tensor:
    """NWD of xyxy boxes ``a`` [..., 4] with ``b`` [..., 4], element by element (broadcast)."""
    half = torch.tensor(_HALF, device=a.device)

    def gauss(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return torch.cat([(x[..., :2] + x[..., 2:]) * 0.5, x[..., 2:] - x[..., :2]], dim=-1) * half

    return torch.linalg.vector_norm(gauss(a) - gauss(b), dim=-1).mul_(-1.0 / constant).exp_()


def nwd_quality(constant: float = NWD_CONSTANT) -> Quality:
    return Quality("nwd", lambda b, g: pairwise_nwd(b, g, constant), zero_off_overlap=False,
                   paired=lambda a, b: paired_nwd(a, b, constant))


_HALF = (1.0, 1.0, 0.5, 0.5)


class NWDPairs:
    """NWD of boxes [N,4] and GTs [G,4] on lists of pairs, for exact spatial pruning
    (:class:`~adla.train.assigners.spatial.PairQuality`); build with :meth:`build`.

    :meth:`values` runs the very kernel of :func:`pairwise_nwd` (``cdist``, one pair per batch entry),
    so its values equal the dense matrix's to the last bit. Bound: W2^2 = |c1 - c2|^2 + |s1 - s2|^2 with
    s = (w/2, h/2); a layer's s lie in a narrow range S_l, so a box of layer l reaches NWD q with GT j
    only within centre distance sqrt(R(q)^2 - dist(s_j, S_l)^2), R(q) = -C ln q plus a margin that
    covers the float32 rounding of W2, of -1/C and of exp.
    """

    def __init__(self, pb: torch.Tensor, pg: torch.Tensor, constant: float, layer: torch.Tensor,
                 lo: torch.Tensor, hi: torch.Tensor):
        self.pb, self.pg, self.constant = pb, pg, float(constant)
        self.num_boxes, self.num_gts = pb.shape[0], pg.shape[0]
        self.box_centres, self.gt_centres = pb[:, :2].double(), pg[:, :2].double()
        self.box_layer, self.num_layers = layer, lo.shape[0]
        # |s_box - s_gt|^2 >= the squared distance of s_gt to the layer's range of half sizes: [L, G]
        s = pg[None, :, 2:].double()
        self.size_gap2 = (lo[:, None] - s).clamp(min=0).add_((s - hi[:, None]).clamp(min=0)).square().sum(-1)

    @classmethod
    def build(cls, boxes: torch.Tensor, gt_boxes: torch.Tensor, constant: float = NWD_CONSTANT):
        """None when the boxes have too many distinct shapes to prune by layer."""
        half = torch.tensor(_HALF, device=boxes.device)
        pb = centers_sizes(boxes.float()) * half  # exactly as pairwise_nwd
        pg = centers_sizes(gt_boxes.float()) * half
        layers = shape_layers(pb[:, 2:])
        if layers is None or not (pb.isfinite().all() and pg.isfinite().all()):
            return None
        return cls(pb, pg, constant, *layers)

    costly = False  # see PairQuality

    def values(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        w2 = torch.cdist(self.pb.index_select(0, i).unsqueeze(1), self.pg.index_select(0, j).unsqueeze(1),
                         compute_mode="donot_use_mm_for_euclid_dist").view(-1)
        return w2.mul_(-1.0 / self.constant).exp_()

    def block(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        w2 = torch.cdist(self.pb.index_select(0, rows), self.pg.index_select(0, cols),
                         compute_mode="donot_use_mm_for_euclid_dist")
        return w2.mul_(-1.0 / self.constant).exp_()

    def _reach(self, level: torch.Tensor) -> torch.Tensor:
        """W2 beyond which the computed NWD is < ``level`` (float64): -C ln(level) with a margin."""
        c = self.constant
        w = -c * torch.log(level)
        return torch.where(level > 0, w * (1 + 1e-5) + 1e-5 * c, math.inf)

    def radius(self, layer: torch.Tensor, j: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        reach = self._reach(level)
        r2 = reach.square() - self.size_gap2[layer, j]
        r = torch.where((reach >= 0) & (r2 >= 0), r2.clamp(min=0).sqrt(), -1.0)
        return torch.where(torch.isinf(reach), math.inf, r)[:, None].expand(-1, 2)

    def to_s(self, q: torch.Tensor) -> torch.Tensor:
        return (-self.constant * torch.log(q)).clamp(min=0).square()

    def from_s(self, s: torch.Tensor) -> torch.Tensor:
        return torch.exp(-s.sqrt() / self.constant)

    def s_floor(self) -> torch.Tensor:
        return self.size_gap2.amin(1)


@dataclass
class QualityChunk:
    """Qualities of one chunk of GTs. Anchors not in ``rows`` overlap none of these GTs (quality 0)."""

    gt_index: torch.Tensor  # [g] int64, ascending
    rows: torch.Tensor | None  # [r] int64 ascending anchor indices; None: all A anchors, in order
    anchor_iou: torch.Tensor  # [r, g] quality(anchor, GT)
    pred_iou: torch.Tensor | None  # [r, g] quality(regressed anchor, GT), when pred boxes were given


def _meets(boxes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Mask [N]: box [N,4+] has a positive-area intersection with the region [lo, hi] (xy pairs)."""
    return (boxes[:, 0] < hi[0]) & (boxes[:, 2] > lo[0]) & (boxes[:, 1] < hi[1]) & (boxes[:, 3] > lo[1])


def _kd_chunks(
    gt_boxes: torch.Tensor, hull: torch.Tensor, chunk_size: int, leaf_extent: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Split the GTs like a k-d tree into chunks of at most ``chunk_size`` GTs spanning at most
    ``leaf_extent`` px (or of one GT). ``hull`` [A,4]: per anchor, a box that meets every GT the anchor
    could match. Yields (GT indices [g] ascending, their boxes [g,4], indices [r] ascending of the
    anchors whose hull meets the chunk's bounding region).

    Each node halves its GTs along the longer side of their region and filters only its parent's rows,
    so the filtering work stays near O(A log G) instead of O(A G / chunk_size).
    """
    centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) * 0.5
    stack: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = [
        (torch.arange(gt_boxes.shape[0], device=gt_boxes.device), None, hull)
    ]
    while stack:
        idx, rows, sub = stack.pop()
        gts = gt_boxes.index_select(0, idx)
        lo, hi = gts[:, :2].amin(dim=0), gts[:, 2:].amax(dim=0)
        extent = hi - lo
        leaf = idx.shape[0] == 1 or (idx.shape[0] <= chunk_size and float(extent.max()) <= leaf_extent)
        if rows is not None or leaf:  # the root's region is most often the whole image: split it unfiltered
            keep = _meets(sub, lo, hi).nonzero().squeeze(1)
            rows = keep if rows is None else rows.index_select(0, keep)
            sub = sub.index_select(0, keep)
        if leaf:
            idx, order = torch.sort(idx)  # ascending: ties then resolve to the lowest GT index
            assert rows is not None  # set just above for a leaf
            yield idx, gts.index_select(0, order), rows
            continue
        order = centers.index_select(0, idx)[:, int(extent.argmax())].argsort()
        half = idx.shape[0] // 2
        stack.append((idx.index_select(0, order[half:]), rows, sub))
        stack.append((idx.index_select(0, order[:half]), rows, sub))


def iter_quality(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    pred_boxes: torch.Tensor | None = None,
    *,
    quality: Quality = IOU,
    chunk_size: int = 32,
    prune: bool = True,
    leaf_extent: float = 128.0,
) -> Iterator[QualityChunk]:
    """Yield ``quality`` of anchors [A,4] (and of ``pred_boxes`` [A,4]) with chunks of ``gt_boxes`` [G,4].

    All boxes xyxy pixels. Each chunk holds at most ``chunk_size`` GTs and every GT is in exactly one.
    With ``prune``, and only when ``quality.zero_off_overlap``, the GTs are split by position (k-d tree,
    chunks spanning at most ``leaf_extent`` px) and a chunk keeps only the anchors whose box or regressed
    box meets its bounding region: the others have quality exactly 0 with all of its GTs.
    Otherwise chunks follow GT index order and hold every anchor (at most A x ``chunk_size``).
    """
    anchors = anchors.float()
    gt_boxes = gt_boxes.float()
    pred = None if pred_boxes is None else pred_boxes.float()
    fn = quality.fn
    if not (prune and quality.zero_off_overlap):
        for idx in torch.arange(gt_boxes.shape[0], device=gt_boxes.device).split(chunk_size):
            gts = gt_boxes.index_select(0, idx)
            yield QualityChunk(gt_index=idx, rows=None, anchor_iou=fn(anchors, gts),
                               pred_iou=None if pred is None else fn(pred, gts))
        return
    hull = anchors
    if pred is not None:  # the hull of anchor and regressed box meets a region whenever either does
        hull = torch.minimum(anchors, pred)
        hull[:, 2:] = torch.maximum(anchors[:, 2:], pred[:, 2:])
    for idx, gts, rows in _kd_chunks(gt_boxes, hull, chunk_size, leaf_extent):
        yield QualityChunk(
            gt_index=idx,
            rows=rows,
            anchor_iou=fn(anchors.index_select(0, rows), gts),
            pred_iou=None if pred is None else fn(pred.index_select(0, rows), gts),
        )
