"""FLOP/parameter counting, graph comparison up to weights, and the baseline-vs-ADLA model bench."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_checkpoint

from adla.checkpoint import load_model
from adla.errors import AdlaError
from adla.export.compare import graphs_identical
from adla.export.onnx_export import export_onnx
from adla.export.profile import compare_models, count_flops, count_params, format_model_table

SIZE = (64, 64)


def test_flops_of_one_conv_hand_computed():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    # 8x8 outputs x 4 channels x (3 x 3 x 3) multiply-adds = 6,912 MACs = 13,824 FLOPs
    assert count_flops(conv, (8, 8)) == 13_824
    assert count_params(conv) == 4 * 27 + 4


def test_flops_and_params_identical_for_two_seeds(tmp_path):
    a, _ = load_model(make_checkpoint(tmp_path / "a.pt", seed=0))
    b, _ = load_model(make_checkpoint(tmp_path / "b.pt", seed=1))
    fa, fb = count_flops(a, SIZE), count_flops(b, SIZE)
    assert fa == fb > 0
    assert count_flops(a, SIZE, batch=2) == 2 * fa
    assert count_params(a) == count_params(b) > 1_000_000


def test_compare_models_same_architecture(tmp_path):
    base = make_checkpoint(tmp_path / "base.pt", seed=0)
    adla = make_checkpoint(tmp_path / "adla.pt", ["assigner.name=adla"], seed=1)
    res = compare_models([base, adla], input_size=SIZE, runs=3, warmup=1, out_dir=tmp_path / "bench")
    (cmp,) = res["comparison"]
    assert cmp["same_params"] and cmp["same_flops"] and cmp["graphs_identical"], cmp["graph_differences"]
    assert set(cmp["latency_ratio"]) == {"torch", "onnxruntime"}
    assert res["models"][0]["gmacs"] * 2 == pytest.approx(res["models"][0]["gflops"])
    assert "adds nothing at inference" in res["verdict"]
    table = format_model_table(res)
    assert "GMACs" in table and "base" in table and "adla" in table
    for name in ("model_bench.json", "model_bench.txt", "model_bench.png"):
        assert (tmp_path / "bench" / name).stat().st_size > 0
    assert json.loads((tmp_path / "bench" / "model_bench.json").read_text())["verdict"] == res["verdict"]
    with pytest.raises(AdlaError, match="backend"):
        compare_models([base], input_size=SIZE, backends=("tvm",))


def test_graphs_differ_for_other_head_width(tmp_path):
    a = export_onnx(make_checkpoint(tmp_path / "a.pt", seed=0), tmp_path / "a.onnx", input_size=SIZE, check=False)
    w = export_onnx(make_checkpoint(tmp_path / "w.pt", ["model.head_channels=64"]), tmp_path / "w.onnx",
                    input_size=SIZE, check=False)
    same, diffs = graphs_identical(a.path, a.path)
    assert same and diffs == []
    same, diffs = graphs_identical(a.path, w.path)
    assert not same
    assert any("head" in d and "64" in d for d in diffs), diffs
