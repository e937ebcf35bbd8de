"""Streamed outputs: the assembled files equal the in-memory ones; a killed run leaves valid partial
outputs; --resume skips finished scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adla.runtime import pipeline
from adla.runtime.options import TileOptions
from adla.runtime.pipeline import infer_scenes, summary_table
from adla.runtime.readers import SceneInfo
from adla.runtime.writers import SceneWriter, coco_dict, geojson_dict

OPTS = TileOptions(tile=128, overlap=0.2, score_thr=0.8)


def info(tmp_path: Path, crs=None, transform=None) -> SceneInfo:
    from affine import Affine

    return SceneInfo(path=tmp_path / "s.tif", width=300, height=200, count=3, dtype="uint8", crs=crs,
                     transform=transform or Affine.identity(), georeferenced=crs is not None)


def batches():
    a = {"boxes": torch.tensor([[10.0, 20.0, 30.5, 60.25], [0.0, 0.0, 4.0, 4.0]]),
         "scores": torch.tensor([0.75, 0.123456789]), "labels": torch.tensor([1, 0])}
    b = {"boxes": torch.tensor([[100.0, 50.0, 120.0, 70.0]]), "scores": torch.tensor([0.5]),
         "labels": torch.tensor([2])}
    return a, b


@pytest.mark.parametrize("georef", [False, True])
def test_streamed_files_equal_the_in_memory_dicts(tmp_path, georef):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    crs, tr = (CRS.from_epsg(32632), from_origin(500000, 5000000, 0.5, 0.5)) if georef else (None, None)
    inf = info(tmp_path, crs, tr)
    names = ["car", "plane", "ship"]
    w = SceneWriter(tmp_path, "s", class_names=names, info=inf)
    a, b = batches()
    w.write(a)
    w.write(b)
    outs = w.close()
    allb = {k: torch.cat([a[k], b[k]]) for k in a}
    want_coco = coco_dict(allb["boxes"], allb["scores"], allb["labels"], names, file_name="s.tif", width=300,
                          height=200)
    want_gj = geojson_dict(allb["boxes"], allb["scores"], allb["labels"], names, crs=inf.crs,
                           transform=inf.transform, georeferenced=inf.georeferenced)
    assert json.loads(outs["coco"].read_text()) == want_coco
    assert json.loads(outs["geojson"].read_text()) == want_gj
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.coco.json", "s.done.json", "s.geojson"]  # partials gone


def test_empty_scene_gives_valid_empty_outputs(tmp_path):
    outs = SceneWriter(tmp_path, "e", class_names=["a"], info=info(tmp_path)).close()
    assert json.loads(outs["coco"].read_text())["annotations"] == []
    assert json.loads(outs["geojson"].read_text())["features"] == []


def test_killed_run_leaves_a_valid_partial_geojsonseq(tmp_path):
    w = SceneWriter(tmp_path, "k", class_names=["a", "b", "c"], info=info(tmp_path))
    a, b = batches()
    w.write(a)
    w.write(b)
    # no close(): as if the process were killed here; the partial file is flushed after every batch
    lines = (tmp_path / "k.partial.geojsonl").read_text().splitlines()
    feats = [json.loads(line) for line in lines]
    assert [f["properties"]["class_id"] for f in feats] == [1, 0, 2]
    assert feats[0]["geometry"]["coordinates"][0][0] == [10.0, 20.0]
    assert not (tmp_path / "k.coco.json").exists() and not (tmp_path / "k.geojson").exists()
    w.abort()


def test_failure_mid_scene_keeps_partial_and_resume_reruns_it(scene_png, det_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_write = SceneWriter.write
    calls = {"n": 0}

    def failing_write(self, dets):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        real_write(self, dets)

    monkeypatch.setattr(SceneWriter, "write", failing_write)
    (res,) = infer_scenes([scene_png], det_ckpt, out, OPTS, device="cpu", preview_size=0, print_summary=False, progress=False)
    assert res.error and "disk full" in res.error
    partial = out / "scene.partial.geojsonl"
    assert partial.is_file() and all(json.loads(line)["type"] == "Feature"
                                     for line in partial.read_text().splitlines())
    assert not (out / "scene.coco.json").exists()
    monkeypatch.setattr(SceneWriter, "write", real_write)
    (res,) = infer_scenes([scene_png], det_ckpt, out, OPTS, device="cpu", preview_size=0, print_summary=False,
                          resume=True, progress=False)
    assert res.error is None and not res.skipped and res.num_detections > 0  # unfinished: run again
    coco = out / "scene.coco.json"
    assert len(json.loads(coco.read_text())["annotations"]) == res.num_detections
    assert not partial.exists()
    stamp = coco.stat().st_mtime_ns
    (res,) = infer_scenes([scene_png], det_ckpt, out, OPTS, device="cpu", preview_size=0, print_summary=False,
                          resume=True, progress=False)
    assert res.skipped and coco.stat().st_mtime_ns == stamp
    assert "done before (--resume)" in summary_table([res])


def test_phases_are_timed(scene_png, det_ckpt, tmp_path):
    (res,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, device="cpu", preview_size=0, print_summary=False,
                          progress=False)
    assert set(res.phases) == set(pipeline.Phases.NAMES)
    assert res.phases["model"] > 0 and res.phases["write"] > 0
    assert sum(res.phases.values()) <= res.seconds * 1.01
    assert "read/model/decode/merge/write" in summary_table([res])


def test_preview_draws_boxes_above_the_display_score_in_class_colours_with_a_legend(tmp_path):
    import numpy as np
    from PIL import Image

    from adla.runtime.writers import PALETTE

    image = np.zeros((3, 100, 150), dtype=np.uint8)  # the 300 x 200 scene at half size
    w = SceneWriter(tmp_path, "p", class_names=["car", "plane", "ship"], info=info(tmp_path),
                    preview=(image, 2.0), preview_score=0.3)
    w.write({"boxes": torch.tensor([[200.0, 140.0, 240.0, 180.0], [100.0, 150.0, 140.0, 190.0],
                                    [250.0, 20.0, 290.0, 60.0]]),
             "scores": torch.tensor([0.75, 0.12, 0.5]), "labels": torch.tensor([1, 0, 2])})
    outs = w.close()
    pic = np.asarray(Image.open(outs["preview"]).convert("RGB")).astype(int)

    def near(x, y, colour):  # JPEG blurs a 1-px line's colour: the same dominant channel, and bright
        return pic[y, x].argmax() == int(np.argmax(colour)) and pic[y, x].max() > 150

    assert near(100, 80, PALETTE[1])  # plane (0.75): left edge of (100,70)-(120,90) in the preview
    assert near(125, 20, PALETTE[2])  # ship (0.5): left edge of (125,10)-(145,30)
    assert pic[75:95, 50].max() < 60  # car (0.12) at (50,75)-(70,95): in the outputs, not drawn
    assert w._drawn.tolist() == [0, 1, 1]
    assert len(json.loads(outs["coco"].read_text())["annotations"]) == 3
    assert pic[8:60, 4:40].max() > 200  # the legend's white text on its black box
