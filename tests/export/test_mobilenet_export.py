"""The pretrained MobileNetV2 detector (frozen BN backbone, GroupNorm FPN and heads) through the ONNX export:
parity with PyTorch, and the same graph whichever assigner trained it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_checkpoint

from adla.export.compare import graphs_identical
from adla.export.onnx_export import export_onnx
from adla.export.parity import RAW_ATOL

SHARED_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "mobilenet_v2-b0353104.pth"
SIZE = (128, 128)


@pytest.fixture(scope="module")
def mnv2_overrides() -> list[str]:
    if not SHARED_WEIGHTS.is_file():
        pytest.skip(f"{SHARED_WEIGHTS} is not present on this machine (`adla weights get mobilenet_v2` gets it)")
    return ["model.backbone=mobilenet_v2", f"model.backbone_weights={SHARED_WEIGHTS}", "model.norm=frozen_bn",
            "model.head_norm=gn"]


def test_mobilenet_detector_exports_with_parity_and_identical_graphs(mnv2_overrides, tmp_path):
    base = make_checkpoint(tmp_path / "maxiou.pt", mnv2_overrides, seed=0)
    adla = make_checkpoint(tmp_path / "adla.pt", mnv2_overrides + ["assigner.name=adla"], seed=1)
    reps = [export_onnx(ckpt, tmp_path / f"{ckpt.stem}.onnx", input_size=SIZE) for ckpt in (base, adla)]
    for rep in reps:
        (p,) = rep.parity
        assert p.ok, p
        assert p.max_abs_cls <= RAW_ATOL and p.max_abs_box <= RAW_ATOL
    same, diffs = graphs_identical(reps[0].path, reps[1].path)
    assert same and diffs == []
