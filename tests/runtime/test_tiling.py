"""Tile geometry (SAHI's convention) by hand-computed cases, and the shard split."""

from __future__ import annotations

import random

import pytest

from adla.errors import AdlaError
from adla.runtime.tiling import parse_shard, shard, tile_windows


def sahi_get_slice_bboxes(h: int, w: int, tile: int, overlap: float) -> list[list[int]]:
    """SAHI 0.12 ``get_slice_bboxes`` (square slices), copied loop for loop, as the reference."""
    boxes = []
    y_max = y_min = 0
    y_overlap = int(overlap * tile)
    x_overlap = int(overlap * tile)
    while y_max < h:
        x_min = x_max = 0
        y_max = y_min + tile
        while x_max < w:
            x_max = x_min + tile
            if y_max > h or x_max > w:
                xmax, ymax = min(w, x_max), min(h, y_max)
                boxes.append([max(0, xmax - tile), max(0, ymax - tile), xmax, ymax])
            else:
                boxes.append([x_min, y_min, x_max, y_max])
            x_min = x_max - x_overlap
        y_min = y_max - y_overlap
    return boxes


def test_overlap_last_row_and_column_pulled_back():
    # step = 128 - int(0.2 * 128) = 103; x: 0, 103, 206, then 309 + 128 > 400 -> 272; y: 0, 103, 172
    wins = tile_windows(300, 400, 128, 0.2)
    xs = sorted({w[0] for w in wins})
    ys = sorted({w[1] for w in wins})
    assert xs == [0, 103, 206, 272]
    assert ys == [0, 103, 172]
    assert wins[:4] == [(0, 0, 128, 128), (103, 0, 231, 128), (206, 0, 334, 128), (272, 0, 400, 128)]
    assert wins[-1] == (272, 172, 400, 300)
    assert len(wins) == 12


def test_overlap_zero_exact_multiple():
    assert tile_windows(256, 384, 128, 0.0) == [
        (0, 0, 128, 128), (128, 0, 256, 128), (256, 0, 384, 128),
        (0, 128, 128, 256), (128, 128, 256, 256), (256, 128, 384, 256),
    ]


def test_scene_smaller_than_tile_is_one_unpadded_tile():
    assert tile_windows(100, 50, 128, 0.2) == [(0, 0, 50, 100)]
    assert tile_windows(128, 128, 128, 0.2) == [(0, 0, 128, 128)]


def test_one_dimension_smaller_than_tile():
    # step 96: x 0, 96, then 192 + 128 > 300 -> 172; the rows are as tall as the scene
    assert tile_windows(100, 300, 128, 0.25) == [(0, 0, 128, 100), (96, 0, 224, 100), (172, 0, 300, 100)]


def test_matches_sahi_reference_on_random_sizes():
    rng = random.Random(0)
    for _ in range(200):
        h, w, tile = rng.randint(1, 3000), rng.randint(1, 3000), rng.choice([64, 128, 512, 800])
        overlap = rng.choice([0.0, 0.1, 0.2, 0.25, 0.5])
        assert [list(b) for b in tile_windows(h, w, tile, overlap)] == sahi_get_slice_bboxes(h, w, tile, overlap)


def test_windows_cover_the_scene():
    wins = tile_windows(777, 1234, 200, 0.2)
    covered = [[False] * 1234 for _ in range(777)]
    for x0, y0, x1, y1 in wins:
        assert x1 - x0 == 200 and y1 - y0 == 200
        for y in range(y0, y1):
            covered[y][x0:x1] = [True] * (x1 - x0)
    assert all(all(row) for row in covered)


@pytest.mark.parametrize("args", [(100, 100, 0, 0.2), (100, 100, 64, 1.0), (100, 100, 64, -0.1), (0, 10, 64, 0.2)])
def test_bad_arguments(args):
    with pytest.raises(AdlaError):
        tile_windows(*args)


def test_shard_split():
    scenes = ["a", "b", "c", "d", "e", "f", "g"]
    assert shard(scenes, 0, 3) == ["a", "d", "g"]
    assert shard(scenes, 1, 3) == ["b", "e"]
    assert shard(scenes, 2, 3) == ["c", "f"]
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(AdlaError):
            parse_shard(bad)
