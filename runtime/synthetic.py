"""A synthetic scene of any size, generated window by window (nothing on disk, nothing whole in memory), and
a stand-in model that fires densely: what ``adla bench tiled --scale-test`` runs on.

``SyntheticScene`` answers ``SceneReader``'s calls (``read_window``, ``read_overview``, ``info``). Its
pixels are a deterministic function of the position: grey ground with small bright "vehicles" placed per
64 px cell by a generator seeded with the cell, so neighbouring windows agree on the objects they share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adla.runtime.readers import SceneInfo

CELL = 64  # px: one random draw of objects per cell


class SyntheticScene:
    """A ``width`` x ``height`` RGB scene (UTM 32N, 0.5 m pixels) computed on demand."""

    def __init__(self, width: int, height: int, *, objects_per_cell: float = 1.5, seed: int = 0):
        from rasterio.crs import CRS
        from rasterio.transform import from_origin

        self.width, self.height, self.rate, self.seed = width, height, objects_per_cell, seed
        self.path = Path(f"synthetic_{width}x{height}")
        self.info = SceneInfo(path=self.path, width=width, height=height, count=3, dtype="uint8",
                              crs=CRS.from_epsg(32632), transform=from_origin(500000, 5000000, 0.5, 0.5),
                              georeferenced=True)

    def _objects(self, cx: int, cy: int) -> np.ndarray:
        """[n,4] int (x0, y0, x1, y1) scene px of the objects drawn for cell (cx, cy)."""
        rng = np.random.default_rng((self.seed, cx, cy))
        n = rng.poisson(self.rate)
        xy = rng.integers(0, CELL, (n, 2)) + np.array([cx * CELL, cy * CELL])
        wh = rng.integers(6, 24, (n, 2))
        return np.concatenate([xy, xy + wh], 1)

    def read_window(self, window: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = window
        rng = np.random.default_rng((self.seed, x0, y0, 1))
        out = np.full((3, y1 - y0, x1 - x0), 90, dtype=np.uint8)
        out += rng.integers(0, 30, out.shape, dtype=np.uint8)
        for cy in range(max(0, (y0 - 24) // CELL), (y1 - 1) // CELL + 1):
            for cx in range(max(0, (x0 - 24) // CELL), (x1 - 1) // CELL + 1):
                for bx0, by0, bx1, by1 in self._objects(cx, cy):
                    ox0, oy0, ox1, oy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
                    if ox0 < ox1 and oy0 < oy1:
                        out[:, oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = 230
        return out

    def read_overview(self, max_side: int) -> tuple[np.ndarray, float]:
        scale = max(1.0, max(self.height, self.width) / max_side)
        h, w = max(1, round(self.height / scale)), max(1, round(self.width / scale))
        return np.full((3, h, w), 100, dtype=np.uint8), self.width / w

    def close(self) -> None:
        pass


class DenseStubBackend:
    """The model's stand-in: random logits, about ``per_tile`` anchors per tile above ``score`` (a weak model at a
    low threshold). Same meta (anchors, classes, post-process) as ``like``; costs next to nothing."""

    def __init__(self, like, *, per_tile: int = 2000, score: float = 0.3, seed: int = 0):
        self.meta, self.device, self.name = like.meta, torch.device("cpu"), "stub"
        self.per_tile, self.score = per_tile, score
        self.gen = torch.Generator().manual_seed(seed)
        self._anchors: int | None = None

    def __call__(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        from adla.anchors import generate_anchors

        b, _, h, w = images.shape
        if self._anchors is None:
            self._anchors = generate_anchors(self.meta.anchors, h, w).shape[0]
        n, c = self._anchors, len(self.meta.class_names)
        logit = float(np.log(self.score / (1 - self.score)))
        cls = torch.full((b, n, c), logit - 6.0)
        for i in range(b):
            hot = torch.randint(0, n * c, (self.per_tile,), generator=self.gen)
            cls[i].view(-1)[hot] = logit + torch.rand(self.per_tile, generator=self.gen) * 4
        return cls, torch.randn((b, n, 4), generator=self.gen) * 0.1
