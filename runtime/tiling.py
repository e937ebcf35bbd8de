"""Tile geometry: a pure function of the scene size, SAHI's slicing convention.

``step = tile - int(overlap * tile)``; the last row and column are pulled back flush with the scene edge
(so every tile but those of a scene smaller than a tile is exactly ``tile`` x ``tile``); nothing is padded
here. A scene smaller than a tile in one dimension gets tiles as long as the scene in that dimension;
the batcher pads them.
"""

from __future__ import annotations

from adla.errors import AdlaError

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1/y1 exclusive


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets along one axis, as SAHI's ``get_slice_bboxes`` loop makes them."""
    starts: list[int] = []
    start = end = 0
    while end < length:
        end = start + tile
        starts.append(max(0, length - tile) if end > length else start)
        start = end - (tile - step)
    return starts


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[Window]:
    """Windows ``(x0, y0, x1, y1)`` covering a ``height`` x ``width`` scene, row-major (top row first).

    ``overlap`` is a fraction of ``tile`` in [0, 1); neighbours share ``int(overlap * tile)`` pixels.
    """
    if tile <= 0:
        raise AdlaError(f"tile size must be positive, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise AdlaError(f"tile overlap must be in [0, 1), got {overlap}")
    if height <= 0 or width <= 0:
        raise AdlaError(f"scene size must be positive, got {height} x {width}")
    step = tile - int(overlap * tile)
    if step <= 0:
        raise AdlaError(f"tile {tile} with overlap {overlap} gives no progress between tiles")
    ys, xs = _starts(height, tile, step), _starts(width, tile, step)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        i_str, n_str = spec.split("/")
        i, n = int(i_str), int(n_str)
    except ValueError as exc:
        raise AdlaError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from exc
    if n < 1 or not 0 <= i < n:
        raise AdlaError(f"--shard {spec}: need n >= 1 and 0 <= i < n")
    return i, n


def shard(items: list, index: int, count: int) -> list:
    """Items of shard ``index`` of ``count``: item k goes to shard k % count."""
    return [item for k, item in enumerate(items) if k % count == index]
