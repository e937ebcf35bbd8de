"""Which precision path the engine builder takes on TensorRT 10 (calibrator, precision flags) and 11 (QDQ
model, strongly typed), with stand-in modules shaped as the real bindings (see scripts/trt_api_check.py)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from adla.errors import AdlaError
from adla.export.tensorrt_build import (
    EngineOptions,
    build_engine,
    choose_int8_path,
    describe_plan,
    precision_plan,
)


def _trt(version: str) -> SimpleNamespace:
    """The attributes the builder decides on, as in the 10.x and 11.x bindings."""
    major = int(version.split(".")[0])
    mod = SimpleNamespace(__version__=version, Builder=object)
    if major <= 10:
        mod.IInt8EntropyCalibrator2 = object
        mod.BuilderFlag = SimpleNamespace(FP16=0, INT8=1, TF32=8)
    else:
        mod.BuilderFlag = SimpleNamespace(TF32=8)  # 11.x: no FP16/INT8 flags, no calibrators
    return mod


TRT10, TRT11, TRT7 = _trt("10.16.1.11"), _trt("11.4.0.106"), _trt("7.2.3")


def test_int8_path_auto_follows_the_calibrator():
    assert choose_int8_path(TRT10) == "calibrator"
    assert choose_int8_path(TRT11) == "qdq"
    assert choose_int8_path(TRT10, "qdq") == "qdq"  # TensorRT 10 builds QDQ models too


def test_int8_path_refusals_say_what_to_do():
    with pytest.raises(AdlaError, match=r"TensorRT 11.4.0.106 has no INT8 calibrator.*--int8-path qdq"):
        choose_int8_path(TRT11, "calibrator")
    with pytest.raises(AdlaError, match=r"TensorRT 7.2.3 is too old for QDQ.*--int8-path calibrator"):
        choose_int8_path(TRT7, "qdq")
    with pytest.raises(AdlaError, match="unknown INT8 path"):
        choose_int8_path(TRT10, "fp8")


@pytest.mark.parametrize(("trt", "opts", "expected"), [
    (TRT10, EngineOptions(fp16=True), {"int8_path": None, "graph": "fp32", "flags": ["FP16"], "strongly_typed": False}),
    (TRT11, EngineOptions(fp16=True), {"int8_path": None, "graph": "fp16", "flags": [], "strongly_typed": True}),
    (TRT10, EngineOptions(int8=True), {"int8_path": "calibrator", "graph": "fp32", "flags": ["FP16", "INT8"],
                                       "strongly_typed": False}),
    (TRT10, EngineOptions(int8=True, int8_path="qdq"), {"int8_path": "qdq", "graph": "int8",
                                                        "flags": ["FP16", "INT8"], "strongly_typed": False}),
    (TRT11, EngineOptions(int8=True), {"int8_path": "qdq", "graph": "int8", "flags": [], "strongly_typed": True}),
    (TRT11, EngineOptions(), {"int8_path": None, "graph": "fp32", "flags": [], "strongly_typed": True}),
])
def test_precision_plan(trt, opts, expected):
    plan = precision_plan(trt, opts)
    assert plan == expected
    line = describe_plan(trt, plan)
    assert line.startswith(f"TensorRT {trt.__version__}: ")
    if plan["int8_path"] == "qdq":
        assert "QDQ model (explicit quantization, no calibrator)" in line


def test_build_engine_on_trt11_refuses_the_calibrator_and_writes_nothing(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", TRT11)
    out = tmp_path / "m.engine"
    with pytest.raises(AdlaError, match="no INT8 calibrator"):
        build_engine(tiny_ckpt, out, EngineOptions(input_size=(64, 64), int8=True, int8_path="calibrator",
                                                    calib_images=str(tmp_path)))
    with pytest.raises(AdlaError, match="QDQ model needs --calib-images"):
        build_engine(tiny_ckpt, out, EngineOptions(input_size=(64, 64), int8=True, calib_cache=str(tiny_ckpt)))
    with pytest.raises(AdlaError, match="no calibration images"):
        build_engine(tiny_ckpt, out, EngineOptions(input_size=(64, 64), int8=True, calib_images=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("nms", ["native", "efficient"])  # the raw graph is test_quantize's
def test_the_graph_tensorrt_11_parses_is_the_qdq_or_fp16_model(tiny_ckpt, tmp_path, nms):
    import numpy as np
    import onnx
    from PIL import Image

    from adla.data.synth import synth_image
    from adla.export.quantize import count_ops, precision_of
    from adla.export.tensorrt_build import _export_graph

    calib = tmp_path / "calib"
    calib.mkdir()
    Image.fromarray(synth_image(64, 64, np.random.default_rng(0))[0]).save(calib / "a.png")
    opts = EngineOptions(input_size=(64, 64), nms=nms, int8=True, calib_images=str(calib), calib_batch=1,
                         calib_max_images=2, calib_method="minmax")
    for graph in ("int8", "fp16"):
        path = tmp_path / graph / "model.onnx"
        path.parent.mkdir()
        _export_graph(tiny_ckpt, path, opts, graph)
        model = onnx.load(str(path))
        assert precision_of(model) == graph
        if graph == "int8":
            assert count_ops(model) > 0
            if nms is not None:  # the decode / NMS part stays float: no QDQ feeds its ops
                ops = {n.op_type for n in model.graph.node}
                assert ("NonMaxSuppression" in ops) == (nms == "native") and "Sigmoid" in ops
