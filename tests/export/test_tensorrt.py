"""TensorRT engines: a clear error and no file without TensorRT; a real build and run with it; the
module type-checks against tensorrt-stubs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adla.checkpoint import load_model
from adla.errors import AdlaError
from adla.export.onnx_export import read_metadata
from adla.export.tensorrt_build import EngineOptions, EngineRunner, build_engine, tensorrt_available

HAS_TRT = tensorrt_available()
_spec = importlib.util.spec_from_file_location("trt_stubs", Path(__file__).with_name("trt_stubs.py"))
trt_stubs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trt_stubs)
SIZE = (128, 128)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: the no-TensorRT path cannot be exercised")
def test_engine_without_tensorrt_raises_and_writes_nothing(tiny_ckpt, tmp_path):
    out = tmp_path / "m.engine"
    with pytest.raises(AdlaError, match="pip install tensorrt"):
        build_engine(tiny_ckpt, out, EngineOptions(input_size=SIZE))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()), reason="needs TensorRT and a CUDA GPU")
@pytest.mark.parametrize("nms", [None, "native", "efficient"])
def test_build_and_run_engine(tiny_ckpt, tmp_path, nms):
    out = tmp_path / "m.engine"
    rep = build_engine(tiny_ckpt, out, EngineOptions(input_size=SIZE, nms=nms, min_batch=1, opt_batch=2,
                                                     max_batch=4, workspace_gb=1))
    meta = read_metadata(out)
    assert meta["precision"] == "fp32" and meta["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    assert rep.sidecar == out.with_name("m.engine.json") and json.loads(rep.sidecar.read_text()) == meta
    x = torch.rand(2, 3, *SIZE, device="cuda") * 255
    outs = EngineRunner(out)(x)
    assert set(outs) == set(meta["output_names"])
    if nms is None:
        model, _ = load_model(tiny_ckpt, "cuda")
        with torch.no_grad():
            cls_t, box_t = model(x)
        assert (outs["cls_logits"] - cls_t).abs().max() < 1e-3
        assert (outs["box_deltas"] - box_t).abs().max() < 1e-3


def test_tensorrt_build_typechecks_against_stubs(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    try:
        stubs = trt_stubs.make_stub_dir(tmp_path / "stubs")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(stubs / "mypy.ini"), "--cache-dir",
         str(tmp_path / "cache"), "export/tensorrt_build.py"],
        check=False, cwd=repo, env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout
