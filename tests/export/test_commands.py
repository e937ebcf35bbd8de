"""The export and bench-model command lines: parsing, messages, errors without tracebacks."""

from __future__ import annotations

import argparse

import pytest

from adla.errors import AdlaError
from adla.export.commands import register, register_bench
from adla.export.tensorrt_build import tensorrt_available


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adla")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    bench = sub.add_parser("bench").add_subparsers(dest="bench_command")
    register_bench(bench)
    return parser


def test_export_onnx_command_prints_parity(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "t.onnx"
    args = _parser().parse_args(["export", str(tiny_ckpt), "--input-size", "64", "64", "--out", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "opset" in text and "random x2" in text and "yes" in text


def test_bench_model_arguments(tiny_ckpt):
    args = _parser().parse_args(["bench", "model", str(tiny_ckpt), str(tiny_ckpt), "--input-size", "64", "96",
                                 "--runs", "5", "--backends", "torch"])
    assert args.input_size == [64, 96] and args.runs == 5 and len(args.ckpts) == 2 and callable(args.func)


def test_export_errors(tiny_ckpt, tmp_path):
    p = _parser()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    args = p.parse_args(["export", str(bad), "--out", str(tmp_path / "bad.onnx")])
    with pytest.raises(AdlaError, match="bad.pt"):
        args.func(args)
    args = p.parse_args(["export", str(tiny_ckpt), "--nms", "efficient", "--out", str(tmp_path / "e.onnx")])
    with pytest.raises(AdlaError, match="--format engine"):
        args.func(args)
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_engine_command_without_tensorrt(tiny_ckpt, tmp_path):
    out = tmp_path / "m.engine"
    args = _parser().parse_args(["export", str(tiny_ckpt), "--format", "engine", "--fp16", "--out", str(out)])
    with pytest.raises(AdlaError, match="TensorRT is not installed"):
        args.func(args)
    assert list(tmp_path.iterdir()) == []
