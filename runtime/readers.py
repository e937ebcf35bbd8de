"""Scene readers: windowed reads through rasterio (GeoTIFF, PNG, JPEG; anything GDAL opens).

A scene is never loaded whole: tiles come from windowed reads, the contrast stretch of 16-bit and float
scenes from a decimated read (overviews when the file has them). A GDAL dataset handle is not thread-safe,
so a ``SceneReader`` opens one handle per thread (``threading.local``).

Band mapping: 1 or 2 bands -> grey x 3; 3 or more -> the first three, or ``bands`` (1-based). uint8 data
passes unchanged; other types are stretched per band from the 2nd to the 98th percentile of valid pixels
to 0-255. Pixels flagged by the dataset mask (nodata value, alpha band, internal mask) are set to 0; a
tile with no valid pixel, or all zero, is reported empty and skipped.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from adla.errors import AdlaError

STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE_SIDE = 1024  # long side of the decimated read that the stretch is computed from
# GDAL's block cache defaults to 5 % of the machine's memory and fills up with every block a scene has
# given, so a large scene's run would grow to that size. Tiles are read once: a small cache suffices.
# A value the user set in the environment wins.
GDAL_CACHE_MB = "256"


def _rasterio():
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)
    import rasterio

    # a PNG/JPEG scene has no georeference: rasterio warns; the adla command filters that warning for its
    # process (adla.app.cli.process_settings), the library leaves the caller's warning filters alone
    return rasterio


@dataclass(frozen=True)
class SceneInfo:
    """What the writers need: size, georeference, band mapping."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: object | None  # rasterio.crs.CRS or None
    transform: object  # affine.Affine
    georeferenced: bool


class SceneSource(Protocol):
    """What tiled inference reads a scene through (``pipeline.infer_reader``): a ``SceneReader`` over a
    raster file, or a scene computed on demand (the benchmarks' ``SyntheticScene``)."""

    path: Path
    info: SceneInfo

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def read_window(self, window: tuple[int, int, int, int]) -> np.ndarray | None: ...

    def read_overview(self, max_side: int) -> tuple[np.ndarray, float]: ...


class SceneReader:
    """Windowed RGB uint8 reads of one scene; safe to share between threads (one handle per thread)."""

    def __init__(self, path: str | Path, bands: tuple[int, ...] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise AdlaError("scene not found", self.path)
        self._local = threading.local()
        self._handles: list = []
        self._lock = threading.Lock()
        try:
            ds = self._dataset()
            self.info = SceneInfo(
                path=self.path, width=ds.width, height=ds.height, count=ds.count, dtype=ds.dtypes[0],
                crs=ds.crs, transform=ds.transform,
                georeferenced=ds.crs is not None or not ds.transform.is_identity,
            )
            self.bands = self._band_map(ds.count, bands)
            self._masked = any(
                flags != [_rasterio().enums.MaskFlags.all_valid] for flags in ds.mask_flag_enums
            )
            self._lut = self._stretch(ds)
        except AdlaError:
            self.close()
            raise
        except Exception as exc:  # the library raises many kinds; all mean "cannot read this file"
            self.close()
            raise AdlaError(f"cannot read scene ({exc.__class__.__name__}: {exc})", self.path) from exc

    # -- handles ---------------------------------------------------------------------------------
    def _dataset(self):
        ds = getattr(self._local, "ds", None)
        if ds is None:
            rasterio = _rasterio()
            try:
                ds = rasterio.open(self.path)
            except rasterio.errors.RasterioIOError as exc:
                raise AdlaError(f"not a readable raster ({exc})", self.path) from exc
            self._local.ds = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def close(self) -> None:
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()
        self._local = threading.local()

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def width(self) -> int:
        return self.info.width

    # -- band mapping and stretch ----------------------------------------------------------------
    def _band_map(self, count: int, bands: tuple[int, ...] | None) -> tuple[int, int, int]:
        if bands is not None:
            if len(bands) != 3 or any(not 1 <= b <= count for b in bands):
                raise AdlaError(f"--bands {bands}: need three 1-based band numbers of {count} bands", self.path)
            return (bands[0], bands[1], bands[2])
        return (1, 1, 1) if count < 3 else (1, 2, 3)

    def _stretch(self, ds) -> list[tuple[float, float]] | None:
        """Per output channel (low, high) of the linear stretch, or None for uint8 (no stretch)."""
        if ds.dtypes[0] == "uint8":
            return None
        scale = max(1.0, max(ds.height, ds.width) / STRETCH_SAMPLE_SIDE)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        sample = ds.read(list(self.bands), out_shape=(3, *shape), masked=True)
        lut = []
        for band in sample:
            valid = band.compressed().astype(np.float64)
            valid = valid[np.isfinite(valid)]
            if valid.size == 0:
                lut.append((0.0, 1.0))
                continue
            lo, hi = np.percentile(valid, STRETCH_PERCENTILES)
            lut.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
        return lut

    def _to_uint8(self, data: np.ndarray) -> np.ndarray:
        if self._lut is None:
            return data
        out = np.empty(data.shape, dtype=np.uint8)
        for c, (lo, hi) in enumerate(self._lut):
            band = (data[c].astype(np.float32) - lo) * (255.0 / (hi - lo))
            np.clip(np.nan_to_num(band, nan=0.0), 0, 255, out=band)
            out[c] = band
        return out

    # -- reads -----------------------------------------------------------------------------------
    def read_window(self, window: tuple[int, int, int, int]) -> np.ndarray | None:
        """RGB uint8 [3, y1-y0, x1-x0] of pixel window (x0, y0, x1, y1), or None when it holds no data."""
        from rasterio.windows import Window

        x0, y0, x1, y1 = window
        ds = self._dataset()
        win = Window(x0, y0, x1 - x0, y1 - y0)
        data = ds.read(list(self.bands), window=win)
        if self._masked:
            valid = ds.read_masks(self.bands[0], window=win) > 0
            if not valid.any():
                return None
            out = self._to_uint8(data)
            out *= valid[None]
        else:
            out = self._to_uint8(data)
        if not out.any():
            return None
        return np.ascontiguousarray(out)

    def read_overview(self, max_side: int) -> tuple[np.ndarray, float]:
        """The whole scene scaled down so its long side is <= ``max_side``: (RGB uint8 [3,h,w], scale).

        ``scale`` = scene pixels per returned pixel (>= 1). Uses overviews when present.
        """
        ds = self._dataset()
        scale = max(1.0, max(ds.height, ds.width) / max_side)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        data = ds.read(list(self.bands), out_shape=(3, *shape))
        out = self._to_uint8(data)
        if self._masked:
            out *= (ds.read_masks(self.bands[0], out_shape=shape) > 0)[None]
        return np.ascontiguousarray(out), ds.width / shape[1]

    def read_all(self) -> np.ndarray:
        """The whole scene as RGB uint8 [3,H,W] (for the one-tile-at-a-time benchmark baseline only)."""
        return self._to_uint8(self._dataset().read(list(self.bands)))
