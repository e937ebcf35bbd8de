"""``adla evaluate`` (app/evaluate.py): COCO results or a checkpoint against a COCO ground truth."""

from __future__ import annotations

import argparse
import json

import pytest
from helpers import data_cli

from adla.app import evaluate
from adla.errors import AdlaError


def test_cli_synth_and_evaluate_results(tmp_path, capsys):
    assert data_cli(["data", "synth", "--out", str(tmp_path), "--train", "2", "--val", "2", "--size", "64"]) == 0
    assert "train" in capsys.readouterr().out
    gt = json.loads((tmp_path / "val.json").read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    (tmp_path / "dets.json").write_text(json.dumps({"detections": perfect}))
    assert data_cli(["evaluate", "--ann", str(tmp_path / "val.json"), "--results", str(tmp_path / "dets.json"),
                     "--out", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "100.0" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["AP50"] == pytest.approx(1.0) and set(metrics["per_class_AP50"]) == {"car", "truck", "boat"}
    (tmp_path / "wrong.json").write_text(json.dumps([dict(perfect[0], image_id=999)]))
    with pytest.raises(AdlaError, match="not in the ground truth"):
        data_cli(["evaluate", "--ann", str(tmp_path / "val.json"), "--results", str(tmp_path / "wrong.json")])


def test_cli_evaluate_checkpoint(synth_dir, tiny_ckpt, tmp_path, capsys):
    with pytest.warns(UserWarning, match="differ"):  # class0.. in the checkpoint, car.. in the data
        assert data_cli(["evaluate", "--ann", str(synth_dir / "val.json"), "--ckpt", str(tiny_ckpt), "--images",
                         str(synth_dir), "--score", "0.0", "--save-results", str(tmp_path / "r.json"),
                         "--out", str(tmp_path / "m.json")]) == 0
    assert "AP_vt" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "r.json").read_text())) > 0
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 3
    with pytest.raises(AdlaError, match="needs --images"):
        data_cli(["evaluate", "--ann", str(synth_dir / "val.json"), "--ckpt", str(tiny_ckpt)])


def test_score_is_spelt_as_in_infer_and_the_old_name_still_works():
    for flag in ("--score", "--score-thr"):
        parser = argparse.ArgumentParser(prog="adla")
        evaluate.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["evaluate", "--ann", "gt.json", "--results", "r.json", flag, "0.25"])
        assert args.score_thr == 0.25
