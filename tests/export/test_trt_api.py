"""Every TensorRT attribute adla uses exists in the REAL TensorRT 10.x and 11.x Python bindings
(scripts/trt_api_check.py; the bindings are installed by `python scripts/trt_api_check.py --install-only`)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "trt_api_check", Path(__file__).resolve().parents[2] / "scripts" / "trt_api_check.py")
api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api)

INSTALLED = [v for v in api.VERSIONS if (api.ROOT / v / "tensorrt_bindings" / "tensorrt.so").is_file()]
HAVE = pytest.mark.skipif(
    not INSTALLED or not (shutil.which("cc") or shutil.which("gcc")),
    reason="TensorRT bindings not installed (python scripts/trt_api_check.py --install-only) or no C compiler")


def test_the_scan_finds_the_builder_calls_and_their_version_markers():
    uses = {(u["name"], u["max_major"]) for u in api.usages(api.source_files())}
    assert ("IBuilderConfig.set_memory_pool_limit", None) in uses
    assert ("IExecutionContext.execute_async_v3", None) in uses  # runtime/backends.py and EngineRunner
    assert ("BuilderFlag.INT8", 10) in uses and ("IBuilderConfig.int8_calibrator", 10) in uses
    assert ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", None) in uses


@HAVE
def test_every_used_attribute_exists_in_the_real_bindings(capsys):
    assert api.check(INSTALLED) == []
    text = capsys.readouterr().out
    assert all(f"TensorRT {v}:" in text for v in INSTALLED)


@HAVE
@pytest.mark.skipif("11.4.0.106" not in INSTALLED, reason="TensorRT 11.4 bindings not installed")
def test_the_check_fails_on_what_tensorrt_11_removed(tmp_path):
    src = tmp_path / "old_builder.py"
    src.write_text("def f(trt, builder, config, registry):\n"
                   "    config.set_flag(trt.BuilderFlag.INT8)\n"
                   "    registry.get_plugin_creator('EfficientNMS_TRT', '1', '')\n"
                   "    return trt.IInt8EntropyCalibrator2, builder.no_such_method\n")
    problems = api.check(["11.4.0.106"], paths=[src])
    for name in ("BuilderFlag.INT8", "IPluginRegistry.get_plugin_creator", "IInt8EntropyCalibrator2",
                 "Builder.no_such_method"):
        assert any(f"has no {name} " in p for p in problems), (name, problems)
    assert not any("IBuilderConfig.set_flag" in p for p in problems)  # still there in 11
