"""Candidate pairs of overlapping boxes through a uniform grid of cells: cost O(boxes x cell occupancy),
never O(boxes^2), in bounded memory.

Boxes are xyxy scene pixels. A box covers the cells its area touches; two boxes of the same group (class)
that overlap share the cell holding the top-left corner of their intersection, and are reported there
only, so every overlapping pair comes out exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

MAX_PAIRS_PER_CHUNK = 4_000_000  # candidate pairs materialised at once (~100 MB of indices and boxes)


def cell_size(boxes: torch.Tensor) -> int:
    """A power of two near the median box side, in [16, 512]: a few boxes per cell, few cells per box."""
    if boxes.shape[0] == 0:
        return 32
    side = (boxes[:, 2:] - boxes[:, :2]).amax(1).median().item()
    size = 16
    while size < side and size < 512:
        size *= 2
    return size


def _entries(boxes: torch.Tensor, cell: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(box index [M], cell x [M], cell y [M]): one entry per (box, cell the box touches)."""
    c0 = torch.div(boxes[:, :2], cell, rounding_mode="floor").long()  # [N,2]
    c1 = torch.maximum(torch.ceil(boxes[:, 2:] / cell).long() - 1, c0)
    span = c1 - c0 + 1  # [N,2] cells along x, y
    n = span[:, 0] * span[:, 1]
    box = torch.repeat_interleave(torch.arange(boxes.shape[0]), n)
    k = torch.arange(box.numel()) - torch.repeat_interleave(n.cumsum(0) - n, n)
    nx = span[box, 0]
    return box, c0[box, 0] + k % nx, c0[box, 1] + torch.div(k, nx, rounding_mode="floor")


def overlapping_pairs(boxes: torch.Tensor, groups: torch.Tensor, is_new: torch.Tensor, *, cell: int | None = None,
                      max_pairs: int = MAX_PAIRS_PER_CHUNK) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Chunks of candidate pairs (i [E], j [E]) with i != j, same ``groups`` value, at least one of them
    ``is_new``, and a common cell at the top-left corner of their (possibly empty) intersection.

    boxes [N,4] xyxy; groups [N] int64 (the class); is_new [N] bool. Every pair of same-group boxes with
    an intersection of positive area, one of them new, is yielded exactly once; a few non-overlapping
    pairs come too (callers test the overlap they need).
    """
    if boxes.shape[0] < 2 or not bool(is_new.any()):
        return
    cell = cell or cell_size(boxes[is_new])
    box, cx, cy = _entries(boxes, cell)
    ox, oy = int(cx.min()), int(cy.min())
    cx, cy = cx - ox, cy - oy
    width, height = int(cx.max()) + 1, int(cy.max()) + 1
    key = (groups[box] * height + cy) * width + cx
    key, order = key.sort()
    box, cx, cy = box[order], cx[order], cy[order]
    _, group_of, counts = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    # only cells holding a new box can hold a new pair
    has_new = torch.zeros(counts.numel(), dtype=torch.bool).index_put_((group_of,), is_new[box], accumulate=True)
    keep = has_new[group_of] & (counts[group_of] > 1)
    key, box, cx, cy = key[keep], box[keep], cx[keep], cy[keep]
    if box.numel() == 0:
        return
    _, group_of, counts = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    start = (counts.cumsum(0) - counts)[group_of]  # [M] first position of each entry's cell
    pos = torch.arange(box.numel())
    partners = start + counts[group_of] - 1 - pos  # entries after this one in its cell
    # cell of each box's top-left corner, relative like cx, cy: the corner of an intersection is the
    # larger of the two boxes' corners, so its cell is the larger of their corner cells
    x0c = torch.div(boxes[:, 0], cell, rounding_mode="floor").long() - ox
    y0c = torch.div(boxes[:, 1], cell, rounding_mode="floor").long() - oy
    new_c = is_new.contiguous()
    cum = partners.cumsum(0)
    total = int(cum[-1])
    if total == 0:
        return
    ends = torch.searchsorted(cum, torch.arange(max_pairs, total + max_pairs, max_pairs), right=True).tolist()
    first = 0
    for last in ends:  # entries [first, last) form one chunk of about max_pairs pairs at most
        last = max(min(last, box.numel()), first + 1)
        if first >= box.numel():
            break
        cnt = partners[first:last]
        src = torch.repeat_interleave(pos[first:last], cnt)
        off = torch.arange(src.numel()) - torch.repeat_interleave(cnt.cumsum(0) - cnt, cnt)
        dst = src + 1 + off
        first = last
        i, j = box.index_select(0, src), box.index_select(0, dst)
        # report a pair only in the cell of its intersection's top-left corner
        ok = new_c.index_select(0, i) | new_c.index_select(0, j)
        ok &= torch.maximum(x0c.index_select(0, i), x0c.index_select(0, j)) == cx.index_select(0, src)
        ok &= torch.maximum(y0c.index_select(0, i), y0c.index_select(0, j)) == cy.index_select(0, src)
        i, j = i[ok], j[ok]
        yield i, j
