"""predict_dataset on the tiny detector, and the data CLI commands (convert, synth); evaluate: tests/app."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers import data_cli
from PIL import Image

from adla.checkpoint import load_model
from adla.data.coco import CocoDetection
from adla.data.synth import make_synth_dataset
from adla.errors import AdlaError
from adla.metrics import evaluate_detections
from adla.postprocess import PostprocessConfig
from adla.predict import predict_dataset


def test_predict_dataset_results_are_valid_and_batch_independent(synth_dir, tiny_ckpt):
    model, _ = load_model(tiny_ckpt)
    ds = CocoDetection(synth_dir / "val.json", synth_dir)
    cfg = PostprocessConfig(score_thr=0.0, max_dets=50)
    torch.manual_seed(0)
    res2 = predict_dataset(model, ds, batch_size=2, post_cfg=cfg, progress=False)
    res1 = predict_dataset(model, ds, batch_size=1, post_cfg=cfg, progress=False)
    assert len(res2) == 3 * 50
    assert {r["image_id"] for r in res2} == set(ds.image_ids)
    assert {r["category_id"] for r in res2} <= set(ds.cat_ids)
    b = np.array([r["bbox"] for r in res2])
    assert (b[:, 0] >= 0).all() and (b[:, 0] + b[:, 2] <= 96.01).all() and (b[:, 1] + b[:, 3] <= 64.01).all()
    assert [r["image_id"] for r in res1] == [r["image_id"] for r in res2]
    np.testing.assert_allclose(np.array([r["score"] for r in res1]), np.array([r["score"] for r in res2]),
                               atol=1e-4)
    m = evaluate_detections(synth_dir / "val.json", res2)
    assert 0.0 <= m["AP50"] <= 1.0 and m["num_detections"] == 150


def test_predict_dataset_checks_classes_and_flips(synth_dir, tiny_ckpt):
    model, _ = load_model(tiny_ckpt)
    with pytest.raises(ValueError, match="train=False"):
        predict_dataset(model, CocoDetection(synth_dir / "val.json", synth_dir, train=True), progress=False)
    make_synth_dataset(synth_dir / "four", num_images=1, size=(64, 64), num_classes=4, split_name="val")
    with pytest.raises(AdlaError, match="3 classes but"):
        predict_dataset(model, CocoDetection(synth_dir / "four" / "val.json", synth_dir / "four"), progress=False)


def test_cli_convert_prints_summary(tmp_path, capsys):
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 x\n")
    assert data_cli(["data", "convert", "--format", "yolo", "--images", str(tmp_path), "--labels", str(tmp_path),
                     "--out", str(tmp_path / "o.json"), "--classes", "car,bus", "--downscale", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "boxes" in out and "a.txt:2" in out and re.search(r"median size \(px\) +5.0", out)
    assert json.loads((tmp_path / "o.json").read_text())["annotations"][0]["bbox"] == [7.5, 2.5, 5, 5]
    assert (tmp_path / "o_images" / "a.png").is_file()
