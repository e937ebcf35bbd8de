"""Scene readers: 16-bit multi-band with nodata, band mapping, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from adla.errors import AdlaError
from adla.runtime.readers import SceneReader


@pytest.fixture()
def uint16_tif(tmp_path):
    """5 bands uint16, 300 x 400, nodata 0 on the left half (x < 200); band b holds 1000*b + x*10 elsewhere."""
    data = np.zeros((5, 300, 400), dtype=np.uint16)
    xs = np.arange(200, 400, dtype=np.uint16)
    for b in range(5):
        data[b, :, 200:] = 1000 * (b + 1) + (xs - 200) * 10
    path = tmp_path / "ms.tif"
    with rasterio.open(path, "w", driver="GTiff", width=400, height=300, count=5, dtype="uint16", nodata=0,
                       crs="EPSG:32632", transform=from_origin(500000, 5000000, 0.5, 0.5)) as ds:
        ds.write(data)
    return path


def test_uint16_multiband_with_nodata(uint16_tif):
    reader = SceneReader(uint16_tif)
    try:
        assert (reader.height, reader.width, reader.info.count) == (300, 400, 5)
        assert reader.bands == (1, 2, 3)
        assert reader.read_window((0, 0, 128, 128)) is None  # all nodata: skipped
        tile = reader.read_window((150, 0, 278, 128))  # half nodata, half data
        assert tile is not None and tile.dtype == np.uint8 and tile.shape == (3, 128, 128)
        assert (tile[:, :, :50] == 0).all()  # nodata pixels are black
        # stretch of band 1: values 1000..2990 step 10 over x; 2nd/98th percentiles ~ 1040 / 2950
        row = tile[0, 0, 50:].astype(int)  # x = 200..277 -> values 1000..1770
        assert row[0] == 0 and np.all(np.diff(row) >= 0) and row[-1] > 80
        right = reader.read_window((272, 172, 400, 300))
        assert right is not None and right[0, 0, -1] == 255  # 2990 is above the 98th percentile
    finally:
        reader.close()


def test_band_selection_and_grey(uint16_tif, tmp_path):
    reader = SceneReader(uint16_tif, bands=(5, 4, 3))
    assert reader.bands == (5, 4, 3)
    reader.close()
    with pytest.raises(AdlaError, match="bands"):
        SceneReader(uint16_tif, bands=(6, 1, 2))
    grey = tmp_path / "grey.tif"
    with rasterio.open(grey, "w", driver="GTiff", width=64, height=32, count=1, dtype="uint8") as ds:
        ds.write(np.full((1, 32, 64), 77, dtype=np.uint8))
    reader = SceneReader(grey)
    tile = reader.read_window((0, 0, 64, 32))
    reader.close()
    assert tile is not None and tile.shape == (3, 32, 64) and (tile == 77).all()
    assert not reader.info.georeferenced


def test_all_zero_tile_is_skipped(tmp_path):
    path = tmp_path / "zeros.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as ds:
        ds.write(np.zeros((3, 64, 64), dtype=np.uint8))
    reader = SceneReader(path)
    assert reader.read_window((0, 0, 64, 64)) is None
    reader.close()


def test_overview_read_is_downscaled(scene_png):
    reader = SceneReader(scene_png)
    image, scale = reader.read_overview(132)  # the scene is 264 x 200
    reader.close()
    assert image.shape == (3, 100, 132) and scale == pytest.approx(2.0)


def test_corrupt_and_missing_scenes_raise_adla_error(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage" * 100)
    with pytest.raises(AdlaError, match="bad.tif"):
        SceneReader(bad)
    with pytest.raises(AdlaError, match="not found"):
        SceneReader(tmp_path / "missing.tif")
