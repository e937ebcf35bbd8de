"""runtime/backends.py: metadata read without a session equals the backend's own, inputs of both kinds,
clear errors for unknown or missing model files and broken metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_checkpoint

from adla.errors import AdlaError
from adla.runtime.backends import ModelMeta, load_backend, read_model_meta


def test_checkpoint_meta_without_a_session_equals_the_backend_meta(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", overrides=["eval.nms_iou=0.6", "eval.score_thr=0.2"])
    backend = load_backend(ckpt, "cpu")
    meta = read_model_meta(ckpt)
    assert meta == backend.meta  # classes, anchors and the checkpoint's own eval settings
    assert (meta.post.nms_iou, meta.post.score_thr) == (0.6, 0.2)
    assert meta.input_size is None and meta.num_classes == 3


def test_onnx_meta_without_a_session_equals_the_backend_meta(det_ckpt, tmp_path):
    from adla.export.onnx_export import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(det_ckpt, path, input_size=(64, 96), variant="raw", check=False)
    backend = load_backend(path, "cpu")
    assert read_model_meta(path) == backend.meta
    assert backend.meta.input_size == (64, 96) and backend.name == "onnxruntime"


def test_torch_backend_takes_numpy_and_tensors(det_ckpt):
    backend = load_backend(det_ckpt, "cpu")
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 96), dtype=np.uint8)
    a_cls, a_box = backend(images)
    b_cls, b_box = backend(torch.from_numpy(images))
    anchors = sum(backend.meta.anchors.level_counts(64, 96))  # 9 anchors at each place of 8x12, 4x6, 2x3
    assert anchors == 9 * (8 * 12 + 4 * 6 + 2 * 3)
    assert a_cls.shape == (2, anchors, 3) and a_box.shape == (2, anchors, 4)
    assert a_cls.dtype == torch.float32
    assert torch.equal(a_cls, b_cls) and torch.equal(a_box, b_box)


def test_bad_model_files_are_named(tmp_path):
    with pytest.raises(AdlaError, match="unknown model file type '.bin'"):
        load_backend(tmp_path / "m.bin", "cpu")
    with pytest.raises(AdlaError, match="model file not found") as err:
        load_backend(tmp_path / "m.onnx", "cpu")
    assert "m.onnx" in str(err.value)
    with pytest.raises(AdlaError, match="metadata is incomplete or invalid") as err:
        ModelMeta.from_dict({"class_names": ["car"]}, tmp_path / "x.engine.json")
    assert "x.engine.json" in str(err.value)
