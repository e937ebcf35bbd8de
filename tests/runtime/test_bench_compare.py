"""adla bench tiled with two models: scene time and one-tile latency side by side, interleaved."""

from __future__ import annotations

import numpy as np
from PIL import Image

from adla.data.synth import synth_image
from adla.export.onnx_export import export_onnx
from adla.export.quantize import quantize_int8
from adla.runtime.bench import _child_compare, compare_rows


def test_compare_fp32_and_int8_side_by_side(tiny_ckpt, tmp_path):
    img, _, _ = synth_image(160, 200, np.random.default_rng(0))
    scene = tmp_path / "scene.png"
    Image.fromarray(img).save(scene)
    calib = tmp_path / "calib"
    calib.mkdir()
    Image.fromarray(img).save(calib / "a.png")
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    export_onnx(tiny_ckpt, fp32, input_size=(64, 64), check=False)
    quantize_int8(fp32, int8, calib, max_tiles=4, batch=1, method="minmax")
    spec = {"scene": str(scene), "tile": 64, "overlap": 0.1, "batch": 4, "workers": 1, "score": 0.05,
            "device": "cpu", "runs": 3, "tile_runs": 4, "models": [str(fp32), str(int8)]}
    r = _child_compare(spec)
    assert [len(t) for t in r["times"]] == [3, 3] and [len(t) for t in r["tile_ms"]] == [4, 4]
    assert r["tile_size"] == [64, 64] and r["tiles"] > 1
    assert r["precision"][0] == "FP32" and r["precision"][1].startswith("INT8")
    rows = compare_rows(spec["models"], r)
    assert rows[1][:2] == ("m.onnx", "FP32") and rows[2][:2] == ("m.int8.onnx", "INT8")
