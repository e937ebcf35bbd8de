"""ONNX export variants: dynamic height/width, and decode + NMS inside the graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import make_checkpoint

from adla.anchors import generate_anchors
from adla.checkpoint import load_model
from adla.export.adapters import unpad_detections
from adla.export.onnx_export import export_onnx, read_metadata
from adla.export.parity import RAW_ATOL, detections_equal, random_images
from adla.export.session import make_session
from adla.postprocess import postprocess

SIZE = (128, 128)


@pytest.fixture(scope="module")
def busy_ckpt(tmp_path_factory):
    """Random weights whose scores sit near 0.06, above the 0.05 threshold: many candidates reach NMS."""
    return make_checkpoint(tmp_path_factory.mktemp("busy") / "busy.pt",
                           ["model.prior_prob=0.055", "eval.pre_nms_topk=600", "eval.max_dets=200"], seed=3)


def test_dynamic_hw_runs_other_sizes(tiny_ckpt, tmp_path):
    rep = export_onnx(tiny_ckpt, tmp_path / "dyn.onnx", input_size=(64, 64), dynamic_hw=True)
    assert read_metadata(rep.path)["input_size"] is None
    model, _ = load_model(tiny_ckpt)
    x = random_images(2, (96, 160), seed=1)
    cls_o, _ = make_session(rep.path, "cpu").run(None, {"images": x.numpy()})
    with torch.no_grad():
        cls_t, _ = model(x)
    assert cls_o.shape == (2, generate_anchors(model.cfg.anchors, 96, 160).shape[0], 3)
    assert np.abs(cls_o - cls_t.numpy()).max() <= RAW_ATOL


def test_nms_variant_equals_python_postprocess(busy_ckpt, tmp_path):
    rep = export_onnx(busy_ckpt, tmp_path / "nms.onnx", input_size=SIZE, variant="nms")
    assert rep.parity[0].ok, rep.parity[0]
    graph = onnx.load(str(rep.path)).graph
    assert sum(n.op_type == "NonMaxSuppression" for n in graph.node) == 1
    assert [o.name for o in graph.output] == ["num_dets", "boxes", "scores", "labels"]
    meta = read_metadata(rep.path)
    assert meta["variant"] == "nms" and meta["max_dets"] == 200

    model, ckpt = load_model(busy_ckpt)
    x = random_images(3, SIZE, seed=7)
    num, boxes, scores, labels = make_session(rep.path, "cpu").run(None, {"images": x.numpy()})
    assert boxes.shape == (3, 200, 4) and scores.shape == (3, 200) and labels.shape == (3, 200)
    with torch.no_grad():
        cls_t, box_t = model(x)
    anchors = generate_anchors(model.cfg.anchors, *SIZE)
    expected = postprocess(anchors, cls_t, box_t, [SIZE] * 3, ckpt["run_config"].eval)
    got = unpad_detections(num, boxes, scores, labels)
    for e, g in zip(expected, got):
        assert len(e["scores"]) > 10  # the check is not vacuous
        same, why = detections_equal(e, g)
        assert same, why
    k = int(num[0])
    assert (labels[0, k:] == -1).all() and (scores[0, k:] == 0).all()
    assert (np.diff(scores[0, :k]) <= 0).all()  # sorted by score


def test_detections_equal_pairs_boxes_clipped_to_zero_width():
    """A box clipped to zero width at the image edge has IoU 0 with itself: it must still pair, by its
    corners, and a real difference must still fail."""
    det = {"boxes": torch.tensor([[0.0, 262.54, 0.0, 265.85], [10.0, 10.0, 20.0, 20.0]]),
           "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([2, 1])}
    moved = {**det, "boxes": det["boxes"] + torch.tensor([[0.0, 0.001, 0.0, 0.001], [0.0, 0.0, 0.0, 0.0]])}
    assert detections_equal(det, moved) == (True, "")
    far = {**det, "boxes": det["boxes"] + torch.tensor([[0.0, 5.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])}
    same, why = detections_equal(det, far)
    assert not same and "label 2 has no counterpart" in why
