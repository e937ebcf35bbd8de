"""Cross-tile merging: hand-made detections of an object cut by a tile border."""

from __future__ import annotations

import torch

from adla.runtime.merge import (
    empty_detections,
    fuse_cut_boxes,
    intersection_over_smaller,
    merge_tiles,
    touches_tile_border,
)

# two tiles side by side on a 400 x 720 scene, overlapping on x 320..400
WINDOWS = torch.tensor([[0, 0, 400, 400], [320, 0, 720, 400]])
SCENE_HW = (400, 720)


def dets(boxes, scores, labels, tiles):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels), "tiles": torch.tensor(tiles)}


def test_intersection_over_smaller_literal():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 25, 10], [20.0, 20, 30, 30], [2.0, 2, 4, 4]])
    assert intersection_over_smaller(a, b).tolist() == [[0.5, 0.0, 1.0]]


def test_touches_inner_border_only():
    boxes = torch.tensor([[380.0, 10, 399, 50], [0.0, 10, 30, 50], [321.0, 10, 360, 50], [600.0, 10, 720, 50]])
    wins = WINDOWS[torch.tensor([0, 0, 1, 1])]
    # box 1 touches the scene's left edge (not a tile border), box 3 the scene's right edge
    assert touches_tile_border(boxes, wins, SCENE_HW).tolist() == [True, False, True, False]


def test_object_cut_by_border_fuses_into_one_box():
    # an object spanning x 350..460: tile 0 sees x 350..400 (cut at its right edge), tile 1 sees it whole
    d = dets([[350, 100, 400, 140], [350, 101, 460, 139], [10, 10, 30, 30]], [0.9, 0.8, 0.7], [1, 1, 1], [0, 1, 0])
    out = merge_tiles(d, WINDOWS, SCENE_HW, nms_iou=0.5, merge_cut=True)
    assert out["boxes"].tolist() == [[350, 100, 460, 140], [10, 10, 30, 30]]
    assert out["scores"].tolist() == [torch.tensor(0.9).item(), torch.tensor(0.7).item()]
    assert out["labels"].tolist() == [1, 1]
    # without --merge-cut, NMS alone keeps both pieces (IoU 50*40 / 110*40 < 0.5)
    assert merge_tiles(d, WINDOWS, SCENE_HW, nms_iou=0.5)["boxes"].shape[0] == 3


def test_pieces_on_both_sides_fuse_transitively():
    # object x 300..500 cut in both tiles: tile 0 has 300..400, tile 1 has 320..500; a third duplicate piece
    d = dets([[300, 50, 400, 90], [320, 50, 500, 90], [330, 52, 400, 88]], [0.6, 0.7, 0.5], [0, 0, 0], [0, 1, 0])
    out = fuse_cut_boxes(d, WINDOWS, SCENE_HW)
    assert out["boxes"].tolist() == [[300, 50, 500, 90]]
    assert out["scores"].tolist() == [torch.tensor(0.7).item()]


def test_no_fusion_across_classes_within_a_tile_or_away_from_borders():
    d = dets([[350, 100, 400, 140], [350, 100, 460, 140]], [0.9, 0.8], [0, 1], [0, 1])
    assert fuse_cut_boxes(d, WINDOWS, SCENE_HW)["boxes"].shape[0] == 2  # different classes
    d = dets([[350, 100, 400, 140], [360, 100, 400, 140]], [0.9, 0.8], [0, 0], [0, 0])
    assert fuse_cut_boxes(d, WINDOWS, SCENE_HW)["boxes"].shape[0] == 2  # same tile: two objects
    d = dets([[340, 100, 380, 140], [345, 100, 385, 140]], [0.9, 0.8], [0, 0], [0, 1])
    assert fuse_cut_boxes(d, WINDOWS, SCENE_HW)["boxes"].shape[0] == 2  # neither touches a border


def test_empty_input():
    d = empty_detections()
    out = merge_tiles(d, WINDOWS, SCENE_HW, nms_iou=0.5, merge_cut=True)
    assert out["boxes"].shape == (0, 4)
