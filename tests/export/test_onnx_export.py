"""ONNX export: round trip, metadata, parity with PyTorch, dynamic shapes, the NMS-in-graph variant."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import make_checkpoint, shared_data

from adla.checkpoint import load_checkpoint, load_model
from adla.errors import AdlaError
from adla.export.onnx_export import build_metadata, export_onnx, read_metadata
from adla.export.parity import RAW_ATOL, image_files, load_tiles, random_images, run_parity
from adla.export.session import make_session

SIZE = (128, 128)


@pytest.fixture(scope="module")
def raw_export(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_ckpt, out, input_size=SIZE)


def test_round_trip_checker_and_metadata(raw_export, tiny_ckpt):
    model = onnx.load(str(raw_export.path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["cls_logits", "box_deltas"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, *SIZE]
    assert not any(n.op_type in ("BatchNormalization", "Identity") for n in model.graph.node)  # folded
    meta = read_metadata(raw_export.path)
    assert meta == build_metadata(load_checkpoint(tiny_ckpt), tiny_ckpt, "raw", SIZE)
    assert meta["input_size"] == list(SIZE) and meta["variant"] == "raw" and meta["num_classes"] == 3
    assert meta["normalization"]["input"] == "RGB float32 0-255"


def test_raw_parity_random(raw_export):
    (p,) = raw_export.parity
    assert p.ok, p
    assert p.max_abs_cls <= RAW_ATOL and p.max_abs_box <= RAW_ATOL


def test_raw_parity_real_tile(raw_export, tiny_ckpt):
    files = image_files(shared_data("airbus_aircraft") / "valid")
    tiles = load_tiles(files, SIZE, limit=2)
    assert tiles.shape == (2, 3, *SIZE) and tiles.max() > 1  # real 0-255 pixels
    model, ckpt = load_model(tiny_ckpt)
    p = run_parity(model, ckpt, raw_export.path, tiles, "raw", "real")
    assert p.ok, p


@pytest.mark.parametrize("batch", [1, 4])
def test_dynamic_batch(raw_export, tiny_ckpt, batch):
    model, _ = load_model(tiny_ckpt)
    x = random_images(batch, SIZE, seed=batch)
    cls_o, box_o = make_session(raw_export.path, "cpu").run(None, {"images": x.numpy()})
    with torch.no_grad():
        cls_t, box_t = model(x)
    assert cls_o.shape == tuple(cls_t.shape) and cls_o.shape[0] == batch
    assert np.abs(cls_o - cls_t.numpy()).max() <= RAW_ATOL
    assert np.abs(box_o - box_t.numpy()).max() <= RAW_ATOL


def test_bad_requests_are_refused_and_write_nothing(tiny_ckpt, tmp_path):
    with pytest.raises(AdlaError, match="fixed input size"):
        export_onnx(tiny_ckpt, tmp_path / "a.onnx", input_size=SIZE, variant="nms", dynamic_hw=True)
    with pytest.raises(AdlaError, match="multiples of 32"):
        export_onnx(tiny_ckpt, tmp_path / "b.onnx", input_size=(100, 128))
    with pytest.raises(AdlaError, match="opset"):
        export_onnx(tiny_ckpt, tmp_path / "c.onnx", input_size=SIZE, opset=13)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_mismatched_checkpoints(tiny_ckpt, tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(AdlaError, match="garbage.pt"):
        export_onnx(bad, tmp_path / "x.onnx", input_size=SIZE)
    other = make_checkpoint(tmp_path / "wide.pt", ["model.head_channels=64"])
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["model"] = torch.load(other, weights_only=True)["model"]
    mixed = tmp_path / "mixed.pt"
    torch.save(ckpt, mixed)
    with pytest.raises(AdlaError, match="do not match"):
        export_onnx(mixed, tmp_path / "y.onnx", input_size=SIZE)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_read_metadata_errors(tmp_path):
    with pytest.raises(AdlaError, match="sidecar"):
        read_metadata(tmp_path / "m.engine")
    (tmp_path / "m.onnx").write_bytes(b"junk")
    with pytest.raises(AdlaError, match="m.onnx"):
        read_metadata(tmp_path / "m.onnx")


def test_make_session_device_choice(raw_export):
    sess = make_session(raw_export.path, "auto")
    expect_cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
    assert ("CUDAExecutionProvider" in sess.get_providers()) == expect_cuda
    assert make_session(raw_export.path, "cpu").get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(AdlaError):
        make_session(raw_export.path, "tpu")


def test_groupnorm_detector_exports_with_parity(tmp_path):
    # the from-scratch recipe's GroupNorm model (backbone, FPN and heads) goes through the same export
    ckpt = make_checkpoint(tmp_path / "gn.pt", ["model.norm=gn"])
    model, _ = load_model(ckpt)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) > 10
    rep = export_onnx(ckpt, tmp_path / "gn.onnx", input_size=SIZE)
    (p,) = rep.parity
    assert p.ok, p
    assert p.max_abs_cls <= RAW_ATOL and p.max_abs_box <= RAW_ATOL
