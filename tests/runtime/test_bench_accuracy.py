"""adla bench accuracy: two models (FP32 and INT8 ONNX) scored on one COCO set through the tiled runtime."""

from __future__ import annotations

import argparse
import json

import pytest

from adla.data.synth import class_names, make_synth_dataset
from adla.errors import AdlaError
from adla.export.onnx_export import export_onnx
from adla.export.quantize import quantize_int8
from adla.runtime.bench_accuracy import _category_ids, add_accuracy_arguments, run_bench_accuracy


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_accuracy_arguments(p)
    return p.parse_args(list(argv))


def test_category_ids_by_name_then_by_position():
    gt = {"categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "truck"}]}
    assert _category_ids(("truck", "car"), gt) == [3, 7]
    assert _category_ids(("a", "b"), gt) == [3, 7]
    with pytest.raises(AdlaError, match="cannot be matched"):
        _category_ids(("a", "b", "c"), gt)


def test_fp32_vs_int8_accuracy_through_the_runtime(tiny_ckpt, tmp_path, capsys):
    ann = make_synth_dataset(tmp_path / "set", num_images=2, size=(96, 128), split_name="val")
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    export_onnx(tiny_ckpt, fp32, input_size=(64, 64), check=False)
    quantize_int8(fp32, int8, ann.parent / "val", max_tiles=4, batch=2, method="minmax")
    out = tmp_path / "acc.json"
    car = class_names(3)[0]
    args = _args("--ann", str(ann), "--images", str(ann.parent), "--model", str(fp32), "--model", str(int8),
                 "--classes", car, "--score", "0.01", "--out", str(out))
    assert run_bench_accuracy(args) == 0
    text = capsys.readouterr().out
    assert "m.int8.onnx: INT8" in text and "m.onnx: FP32" in text
    assert f"{car} AP50: m.int8.onnx" in text and "AP50" in text
    saved = json.loads(out.read_text())
    assert set(saved["metrics"]) == {"m.onnx", "m.int8.onnx"}
    assert all(m["num_images"] == 2 for m in saved["metrics"].values())


def test_accuracy_refusals(tiny_ckpt, tmp_path):
    with pytest.raises(AdlaError, match="two or more models"):
        run_bench_accuracy(_args("--ann", "a.json", "--images", str(tmp_path), "--model", "m.onnx"))
