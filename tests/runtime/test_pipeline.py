"""Tiled inference end to end: batching, backends, outputs, georeference, failures, CLI."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest
import torch
from torchvision.ops import box_iou

from adla.errors import AdlaError
from adla.runtime import commands
from adla.runtime.backends import load_backend
from adla.runtime.options import TileOptions
from adla.runtime.pipeline import infer_scene, infer_scenes, input_size
from adla.runtime.writers import geojson_dict

OPTS = TileOptions(tile=128, overlap=0.2, score_thr=0.8)


def assert_same_detections(a, b, atol: float = 1e-3) -> None:
    """Same boxes, labels and scores up to float noise (order may differ between near-equal scores)."""
    assert a.num_detections > 0
    assert a.num_detections == b.num_detections
    iou = box_iou(a.boxes, b.boxes)
    iou[a.labels[:, None] != b.labels[None]] = 0
    best, idx = iou.max(dim=1)
    assert best.min() > 0.999
    assert torch.allclose(a.scores, b.scores[idx], atol=atol)
    assert idx.unique().numel() == idx.numel()


@pytest.fixture(scope="module")
def torch_backend(det_ckpt):
    return load_backend(det_ckpt, "cpu")


@pytest.fixture(scope="module")
def base_result(scene_png, torch_backend):
    """The 200 x 264 scene in 128-px tiles, batch 8: 3 columns (x 0, 103, 136) x 2 rows (y 0, 72)."""
    return infer_scene(scene_png, torch_backend, replace(OPTS, batch=8, workers=2), progress=False)


def test_batch_1_equals_batch_8(scene_png, torch_backend, base_result):
    r1 = infer_scene(scene_png, torch_backend, replace(OPTS, batch=1, workers=1), progress=False)
    r8 = base_result
    assert (r8.width, r8.height, r8.tiles, r8.tiles_run) == (264, 200, 6, 6)
    assert_same_detections(r1, r8)
    assert r8.boxes[:, 0].min() >= 0 and r8.boxes[:, 2].max() <= 264 and r8.boxes[:, 3].max() <= 200


def test_torch_and_onnxruntime_agree(scene_png, base_result, torch_backend, det_ckpt, tmp_path):
    export_onnx = pytest.importorskip("adla.export.onnx_export").export_onnx
    onnx_path = tmp_path / "det.onnx"
    export_onnx(det_ckpt, onnx_path, input_size=(128, 128), variant="raw", check=False)
    onnx_backend = load_backend(onnx_path, "cpu")
    assert onnx_backend.name == "onnxruntime"
    assert onnx_backend.meta.class_names == torch_backend.meta.class_names
    assert onnx_backend.meta.input_size == (128, 128)
    assert_same_detections(base_result, infer_scene(scene_png, onnx_backend, OPTS, progress=False))
    with pytest.raises(AdlaError, match="fixed input size"):
        infer_scene(scene_png, onnx_backend, replace(OPTS, tile=256), progress=False)


def test_input_size_rounds_up_to_the_given_stride():
    windows = [(0, 0, 100, 70), (100, 0, 130, 70)]  # x0, y0, x1, y1: the largest is 100 wide, 70 high
    assert input_size(None, windows, 100, stride=32) == (96, 128)
    assert input_size(None, windows, 100, stride=64) == (128, 128)
    assert input_size((128, 128), windows, 100, stride=64) == (128, 128)
    with pytest.raises(AdlaError, match="larger than the model's fixed input size"):
        input_size((64, 64), windows, 100, stride=32)


def test_geojson_coordinates_by_hand():
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    gj = geojson_dict(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), torch.tensor([0.75]), torch.tensor([1]),
                      ["car", "plane"], crs=CRS.from_epsg(32632),
                      transform=from_origin(500000, 5000000, 0.5, 0.5), georeferenced=True)
    assert gj["crs"] == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32632"}}
    feat = gj["features"][0]
    assert feat["properties"] == {"class": "plane", "class_id": 1, "score": 0.75}
    # x = 500000 + 0.5 px, y = 5000000 - 0.5 py; counter-clockwise from the top-left corner
    assert feat["geometry"]["coordinates"] == [[[500005.0, 4999990.0], [500005.0, 4999970.0],
                                                [500015.0, 4999970.0], [500015.0, 4999990.0],
                                                [500005.0, 4999990.0]]]


def test_outputs_of_a_georeferenced_scene(geo_tif, det_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    (res,) = infer_scenes([geo_tif], det_ckpt, out, replace(OPTS, merge_cut=True), device="cpu", preview_size=200,
                          progress=False)
    assert res.error is None and res.num_detections > 0
    assert "geo.tif" in capsys.readouterr().out  # the summary table
    coco = json.loads((out / "geo.coco.json").read_text())
    gj = json.loads((out / "geo.geojson").read_text())
    assert coco["images"] == [{"id": 1, "file_name": "geo.tif", "width": 264, "height": 200}]
    assert len(coco["annotations"]) == len(gj["features"]) == res.num_detections
    assert gj["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32632"
    for ann, feat in zip(coco["annotations"], gj["features"]):
        x, y, w, h = ann["bbox"]
        ring = feat["geometry"]["coordinates"][0]
        assert ring[0] == pytest.approx([500000 + 0.5 * x, 5000000 - 0.5 * y], abs=0.01)
        assert ring[2] == pytest.approx([500000 + 0.5 * (x + w), 5000000 - 0.5 * (y + h)], abs=0.01)
        assert feat["properties"]["class_id"] == ann["category_id"] - 1
    from PIL import Image

    assert Image.open(out / "geo.preview.jpg").size == (200, 152)


def test_corrupt_scene_is_reported_and_others_finish(scene_png, det_ckpt, tmp_path, capsys):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"\x00\xff garbage " * 500)
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["infer", str(bad), str(scene_png), "--model", str(det_ckpt), "--out", str(out),
                              "--tile", "128", "--score", "0.8", "--device", "cpu", "-q"])
    assert args.func(args) == 1
    printed = capsys.readouterr()
    assert "corrupt.tif" in printed.err and "1 of 2 scenes failed" in printed.out
    assert (out / "scene.coco.json").is_file() and not (out / "corrupt.coco.json").exists()
    # sharded: scene k goes to shard k % 2, so shard 0/2 holds only the corrupt scene
    out0 = tmp_path / "out0"
    args = parser.parse_args(["infer", str(bad), str(scene_png), "--model", str(det_ckpt), "--out", str(out0),
                              "--tile", "128", "--score", "0.8", "--device", "cpu", "-q", "--shard", "0/2"])
    assert args.func(args) == 1
    assert not out0.exists() or not any(out0.iterdir())


def test_full_pass_and_class_filter(scene_png, torch_backend, base_result):
    base = base_result
    only = infer_scene(scene_png, torch_backend, replace(OPTS, classes=["class1"]), progress=False)
    assert only.num_detections > 0 and set(only.labels.tolist()) == {1}
    assert only.num_detections == int((base.labels == 1).sum())
    full = infer_scene(scene_png, torch_backend, replace(OPTS, full_pass=True), progress=False)
    assert full.num_detections >= 1
    with pytest.raises(AdlaError, match="unknown class"):
        infer_scene(scene_png, torch_backend, replace(OPTS, classes=["boat"]), progress=False)


def test_unknown_model_type_and_missing_tensorrt(tmp_path):
    with pytest.raises(AdlaError, match="unknown model file type"):
        load_backend(tmp_path / "model.xyz")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    try:
        import tensorrt

        has_trt = hasattr(tensorrt, "Runtime")
    except ImportError:
        has_trt = False
    if has_trt:
        pytest.skip("tensorrt is installed: the missing-tensorrt error cannot be shown")
    with pytest.raises(AdlaError, match="tensorrt"):
        load_backend(engine)
