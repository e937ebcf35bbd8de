"""Cross-tile merging: the local merge equals class-wise NMS over the whole scene, on hand-made seams and
random dense scenes; cut-box fusion."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import batched_nms

from adla.errors import AdlaError
from adla.runtime.merge import (
    LocalMerger,
    TileGrid,
    cat_detections,
    empty_detections,
    intersection_over_smaller,
    merge_tiles,
    nms_merge,
    seam_leftovers,
)
from adla.runtime.pairs import overlapping_pairs
from adla.runtime.tiling import tile_windows

# two tiles side by side on a 400 x 720 scene, overlapping on x 320..400
WINDOWS = torch.tensor([[0, 0, 400, 400], [320, 0, 720, 400]])
SCENE_HW = (400, 720)


def dets(boxes, scores, labels, tiles):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels), "tiles": torch.tensor(tiles)}


def random_scene(height: int, width: int, tile: int, overlap: float, per_tile: int, seed: int,
                 classes: int = 3, max_side: float = 34.0, distinct: bool = True):
    """Tiled output of a dense random scene: per tile, random boxes clipped to the window, NMS-ed per tile."""
    g = torch.Generator().manual_seed(seed)
    windows = torch.tensor(tile_windows(height, width, tile, overlap))
    parts = []
    for t, (x0, y0, x1, y1) in enumerate(windows.tolist()):
        c = torch.rand(per_tile, 2, generator=g) * torch.tensor([x1 - x0, y1 - y0]) + torch.tensor([x0, y0])
        wh = torch.rand(per_tile, 2, generator=g) * (max_side - 2) + 2
        b = torch.cat([c - wh / 2, c + wh / 2], 1)
        b[:, 0::2] = b[:, 0::2].clamp(x0, x1)
        b[:, 1::2] = b[:, 1::2].clamp(y0, y1)
        s = torch.rand(per_tile, generator=g)
        lab = torch.randint(0, classes, (per_tile,), generator=g)
        k = batched_nms(b, s, lab, 0.5)
        parts.append({"boxes": b[k], "scores": s[k], "labels": lab[k], "tiles": torch.full((len(k),), t)})
    d = cat_detections(parts)
    if distinct:  # distinct scores: float32 rand collides about 75 times in 50k draws
        n = len(d["scores"])
        d["scores"] = (torch.randperm(n, generator=g).float() + 1) / n
    return d, windows


def assert_same(a, b):
    assert len(a["scores"]) == len(b["scores"])
    assert torch.equal(a["scores"], b["scores"])
    assert torch.equal(a["boxes"], b["boxes"])
    assert torch.equal(a["labels"], b["labels"])


def stream(d, windows, order, step_boxes=1, **kw):
    """Feed tiles one by one in ``order``, stepping as often as ``step_boxes`` allows; all outputs, by score."""
    m = LocalMerger(windows, step_boxes=step_boxes, **kw)
    uid = torch.arange(len(d["scores"]))
    out = []
    for t in order:
        sel = (d["tiles"] == t).nonzero().squeeze(1)
        out.append(m.add(t, d["boxes"][sel], d["scores"][sel], d["labels"][sel], uid[sel]))
        if m.ready():
            out.append(m.step())
    out.append(m.finish())
    res = cat_detections(out)
    return {k: v[res["scores"].argsort(descending=True, stable=True)] for k, v in res.items()}, m


def test_intersection_over_smaller_literal():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 25, 10], [20.0, 20, 30, 30], [2.0, 2, 4, 4]])
    assert intersection_over_smaller(a, b).tolist() == [[0.5, 0.0, 1.0]]


def test_tile_grid_ranges_literal():
    grid = TileGrid(WINDOWS)
    boxes = torch.tensor([[10.0, 10, 50, 50], [330, 10, 350, 50], [400, 10, 450, 50], [300, 10, 320, 50],
                          [5.0, 5, 5, 9]])
    # a box ending exactly at x 320 does not meet tile 1 (no area in common); a flat box meets nothing
    assert grid.ranges(boxes).tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, -1, 0, 0]]


def test_non_grid_windows_are_refused():
    with pytest.raises(AdlaError, match="grid"):
        LocalMerger(torch.tensor([[0, 0, 100, 100], [50, 50, 150, 150]]))


def test_overlapping_pairs_finds_each_overlapping_pair_once():
    g = torch.Generator().manual_seed(3)
    c = torch.rand(400, 2, generator=g) * 300
    b = torch.cat([c, c + torch.rand(400, 2, generator=g) * 60 + 1], 1)
    labels = torch.randint(0, 2, (400,), generator=g)
    is_new = torch.rand(400, generator=g) < 0.5
    pairs = torch.cat([torch.stack([i, j], 1) for i, j in overlapping_pairs(b, labels, is_new, cell=16,
                                                                            max_pairs=500)])
    got = {tuple(sorted(p)) for p in pairs.tolist()}
    assert len(got) == len(pairs)  # no duplicates
    overlap = intersection_over_smaller(b, b) > 0
    want = overlap & (labels[:, None] == labels[None]) & (is_new[:, None] | is_new[None])
    want.fill_diagonal_(False)
    i, j = want.nonzero(as_tuple=True)
    assert {(a, c) for a, c in zip(i.tolist(), j.tolist()) if a < c} <= got


def test_chain_across_a_seam():
    # A > B > C > D alternating tiles 0, 1, 0, 1; each overlaps the next with IoU > 0.5, A and C do not:
    # greedy NMS keeps A, suppresses B, keeps C (its only higher neighbour B is suppressed), suppresses D
    d = dets([[330, 100, 360, 130], [335, 100, 365, 130], [342, 100, 372, 130], [348, 100, 378, 130]],
             [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0], [0, 1, 0, 1])
    out = merge_tiles(d, WINDOWS, nms_iou=0.5)
    assert out["boxes"].tolist() == [[330, 100, 360, 130], [342, 100, 372, 130]]
    # the same when the tiles come in the other order, one step per tile
    res, _ = stream(d, WINDOWS, order=[1, 0])
    assert res["boxes"].tolist() == [[330, 100, 360, 130], [342, 100, 372, 130]]


def test_box_in_three_tiles():
    # three columns of width 100 at x 0, 40, 80 (overlap 0.6): x 80..100 lies in all three windows
    windows = torch.tensor([[0, 0, 100, 100], [40, 0, 140, 100], [80, 0, 180, 100]])
    d = dets([[82, 10, 98, 30], [83, 10, 99, 30], [81, 11, 97, 31], [10, 10, 20, 20]],
             [0.5, 0.9, 0.7, 0.3], [1, 1, 1, 1], [0, 1, 2, 0])
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        res, m = stream(d, windows, order)
        assert res["boxes"].tolist() == [[83, 10, 99, 30], [10, 10, 20, 20]]
        assert m.pending_peak <= 3


def test_interior_box_is_final_at_once_and_band_boxes_wait():
    m = LocalMerger(WINDOWS)
    # x 300..319 is 1 px from tile 1's window: interior; x 310..330 reaches into it: it waits
    out = m.add(0, torch.tensor([[300.0, 10, 319, 30], [310, 50, 330, 70]]), torch.tensor([0.9, 0.8]),
                torch.tensor([0, 0]))
    assert out["boxes"].tolist() == [[300, 10, 319, 30]]
    assert len(m.step()["scores"]) == 0  # tile 1 is not complete yet
    m.add(1, torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert m.step()["boxes"].tolist() == [[310, 50, 330, 70]]
    assert len(m.finish()["scores"]) == 0


def test_scene_edges_and_flat_boxes():
    # the last column is pulled back flush with the scene's right edge (x 720); boxes on the edges
    d = dets([[700, 0, 720, 20], [701, 0, 720, 19], [0, 380, 30, 400], [350, 5, 350, 30], [350, 5, 360, 30]],
             [0.9, 0.8, 0.7, 0.6, 0.5], [0, 0, 0, 0, 0], [1, 1, 0, 0, 1])
    # boxes 0 and 1 share a tile (per-tile NMS would have removed one; the merge leaves within-tile pairs be)
    out = merge_tiles(d, WINDOWS, nms_iou=0.5)
    assert out["scores"].tolist() == d["scores"].tolist()


@pytest.mark.parametrize(("size", "tile", "overlap", "per_tile", "step_boxes", "seed"), [
    ((900, 1100), 256, 0.2, 600, 1, 0),
    ((700, 700), 200, 0.55, 400, 500, 1),  # overlap > 0.5: a point lies in up to 3 x 3 windows
    ((600, 1000), 128, 0.0, 300, 10**9, 2),  # no overlap: nothing waits but boxes on the seams
    ((1500, 1800), 256, 0.2, 800, 20000, 3),  # about 55k boxes
])
def test_random_dense_scene_equals_global_nms(size, tile, overlap, per_tile, step_boxes, seed):
    d, windows = random_scene(*size, tile, overlap, per_tile, seed)
    want = nms_merge(d, 0.5)
    assert len(want["scores"]) < len(d["scores"])  # the seams did suppress boxes
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed)).tolist()
    got, _ = stream(d, windows, order, step_boxes=step_boxes)
    assert_same(got, want)
    assert_same(merge_tiles(d, windows, nms_iou=0.5), want)


def test_pending_stays_about_one_row_of_bands():
    d, windows = random_scene(2000, 600, 200, 0.2, 300, seed=5)  # 12 rows of 4 tiles, row-major
    got, m = stream(d, windows, range(len(windows)), step_boxes=1)
    assert_same(got, nms_merge(d, 0.5))
    per_tile = len(d["scores"]) / len(windows)
    assert m.pending_peak < 2.5 * 4 * per_tile  # a few tiles' worth, not the scene's


def test_equal_scores_break_ties_like_torchvision():
    d, windows = random_scene(600, 700, 160, 0.25, 300, seed=7, distinct=False)
    d["scores"] = (d["scores"] * 8).round() / 8  # many exact ties
    got, _ = stream(d, windows, range(len(windows)), step_boxes=1)
    want = nms_merge(d, 0.5)
    assert len(got["scores"]) == len(want["scores"])
    def key(r):
        return sorted(map(tuple, torch.cat([r["boxes"], r["scores"][:, None]], 1).tolist()))

    assert key(got) == key(want)


def test_whole_scene_pass_boxes_merge_exactly():
    d, windows = random_scene(800, 900, 256, 0.2, 400, seed=11)
    g = torch.Generator().manual_seed(12)
    c = torch.rand(60, 2, generator=g) * torch.tensor([900.0, 800.0])
    big = torch.cat([c, c + torch.rand(60, 2, generator=g) * 200 + 8], 1).clamp(max=800)
    full = {"boxes": big, "scores": torch.rand(60, generator=g), "labels": torch.randint(0, 3, (60,), generator=g)}
    keep = batched_nms(full["boxes"], full["scores"], full["labels"], 0.5)
    full = {k: v[keep] for k, v in full.items()}
    # some tile boxes copy whole-scene boxes, so both kinds suppress each other
    full["tiles"] = torch.full((len(keep),), len(windows))
    d = cat_detections([d, full])
    d["scores"] = (torch.randperm(len(d["scores"]), generator=g).float() + 1) / len(d["scores"])
    want = nms_merge(d, 0.5)
    assert_same(merge_tiles(d, windows, nms_iou=0.5, step_boxes=1000), want)


def test_object_cut_by_border_fuses_into_one_box():
    # an object spanning x 350..460: tile 0 sees x 350..400 (cut at its right edge), tile 1 sees it whole
    d = dets([[350, 100, 400, 140], [350, 101, 460, 139], [10, 10, 30, 30]], [0.9, 0.8, 0.7], [1, 1, 1], [0, 1, 0])
    out = merge_tiles(d, WINDOWS, SCENE_HW, nms_iou=0.5, merge_cut=True)
    assert out["boxes"].tolist() == [[350, 100, 460, 140], [10, 10, 30, 30]]
    assert out["scores"].tolist() == [torch.tensor(0.9).item(), torch.tensor(0.7).item()]
    assert out["labels"].tolist() == [1, 1]
    # without --merge-cut, NMS alone keeps both pieces (IoU 50*40 / 110*40 < 0.5)
    assert merge_tiles(d, WINDOWS, SCENE_HW, nms_iou=0.5)["boxes"].shape[0] == 3


def test_pieces_on_both_sides_fuse_into_the_best():
    # object x 300..500: tile 0 has 300..400 and a smaller piece, tile 1 has 320..500 (the best score)
    d = dets([[300, 50, 400, 90], [320, 50, 500, 90], [330, 52, 400, 88]], [0.6, 0.7, 0.5], [0, 0, 0], [0, 1, 0])
    out = merge_tiles(d, WINDOWS, nms_iou=0.5, merge_cut=True)
    assert out["boxes"].tolist() == [[300, 50, 500, 90]]
    assert out["scores"].tolist() == [torch.tensor(0.7).item()]


def test_no_fusion_across_classes_or_in_a_tile_interior():
    d = dets([[350, 100, 400, 140], [350, 100, 460, 140]], [0.9, 0.8], [0, 1], [0, 1])
    assert merge_tiles(d, WINDOWS, nms_iou=0.5, merge_cut=True)["boxes"].shape[0] == 2  # different classes
    d = dets([[200, 100, 250, 140], [210, 100, 250, 140]], [0.9, 0.8], [0, 0], [0, 0])
    assert merge_tiles(d, WINDOWS, nms_iou=0.5, merge_cut=True)["boxes"].shape[0] == 2  # interior: left be
    d = dets([[350, 100, 400, 140], [360, 100, 400, 140]], [0.9, 0.8], [0, 0], [0, 0])
    assert merge_tiles(d, WINDOWS, nms_iou=0.5, merge_cut=True)["boxes"].shape[0] == 1  # on a seam: fused


def test_merge_cut_streamed_equals_at_once():
    d, windows = random_scene(900, 1000, 256, 0.2, 500, seed=21)
    once = merge_tiles(d, windows, nms_iou=0.5, merge_cut=True, step_boxes=10**9)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(1)).tolist()
    got, _ = stream(d, windows, order, step_boxes=1, merge_cut=True)
    assert_same(got, once)
    plain = nms_merge(d, 0.5)
    assert len(once["scores"]) < len(plain["scores"])  # pieces were fused
    left_plain, left_cut = seam_leftovers(plain, windows), seam_leftovers(once, windows)
    assert left_plain > 50
    assert left_cut < left_plain / 2


def test_seam_leftovers_literal():
    # on the seam: IoS 1 and IoU 0.5 -> not counted (NMS's business); IoS 1, IoU 0.25 -> counted;
    # the same pair away from the seam (x < 320) -> not counted
    d = dets([[330, 0, 350, 20], [330, 0, 350, 10], [330, 50, 350, 70], [330, 50, 340, 60],
              [100, 0, 120, 20], [100, 0, 110, 10]], [0.9] * 6, [0] * 6, [0, 1, 0, 1, 0, 0])
    assert seam_leftovers(d, WINDOWS) == 1


def test_empty_input():
    out = merge_tiles(empty_detections(), WINDOWS, SCENE_HW, nms_iou=0.5, merge_cut=True)
    assert out["boxes"].shape == (0, 4)
