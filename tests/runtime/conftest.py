"""Fixtures of the runtime tests: a tiny detector that fires on random weights, small scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adla.checkpoint import load_model, save_checkpoint


@pytest.fixture(scope="session")
def det_ckpt(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint with its class head scaled and biased so that random weights give detections."""
    model, ckpt = load_model(tiny_ckpt)
    with torch.no_grad():
        model.cls_head.out.weight.mul_(300.0)
        model.cls_head.out.bias.fill_(-1.0)
    path = tmp_path_factory.mktemp("det") / "det.pt"
    return save_checkpoint(path, ckpt["run_config"], model, ckpt["class_names"])


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 [H,W,3]: random blobs (a low-resolution random image, upsampled bilinearly)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="session")
def scene_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenes") / "scene.png"
    Image.fromarray(smooth_image(200, 264)).save(path)
    return path


@pytest.fixture(scope="session")
def geo_tif(tmp_path_factory) -> Path:
    """200 x 264 RGB GeoTIFF in UTM 32N (EPSG:32632), origin (500000, 5000000), 0.5 m pixels."""
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path_factory.mktemp("scenes") / "geo.tif"
    data = smooth_image(200, 264, seed=1).transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=264, height=200, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(500000, 5000000, 0.5, 0.5)) as ds:
        ds.write(data)
    return path
