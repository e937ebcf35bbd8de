"""One scene, one writer: scene locks, complete-only --resume, no links followed, leftovers cleaned, and two
``adla infer`` processes into one --out that split the scenes instead of corrupting them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adla.runtime.claims import SceneClaim, is_complete, lock_path, manifest_path
from adla.runtime.options import TileOptions
from adla.runtime.pipeline import claim_scene, infer_scenes, plan_scenes, summary_table


def smooth_image(height: int, width: int, seed: int):
    """RGB uint8 [H,W,3]: random blobs, upsampled (as the runtime fixtures' scenes)."""
    low = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((width, height), Image.BILINEAR))

OPTS = TileOptions(tile=128, overlap=0.2, score_thr=0.8)
RUN = {"device": "cpu", "preview_size": 0, "print_summary": False, "progress": False}


def test_a_scene_held_by_another_run_is_skipped_and_said(scene_png, det_ckpt, tmp_path):
    other = SceneClaim.take(tmp_path, "scene")
    assert isinstance(other, SceneClaim)
    try:
        (res,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, **RUN)
        assert res.skipped and res.error is None
        assert f"another adla run is writing it (pid {os.getpid()}" in res.note
        assert "another adla run is writing it" in summary_table([res])
        assert not (tmp_path / "scene.coco.json").exists() and not (tmp_path / "scene.partial.geojsonl").exists()
    finally:
        other.release()
    assert not lock_path(tmp_path, "scene").exists()
    (res,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, **RUN)
    assert not res.skipped and res.error is None and is_complete(tmp_path, "scene")
    assert not lock_path(tmp_path, "scene").exists()  # released after the scene


def test_a_scene_finished_by_another_run_meanwhile_is_not_redone(scene_png, tmp_path):
    (plan,) = plan_scenes([scene_png], tmp_path)
    manifest_path(tmp_path, "scene").write_text("{}")  # another run finished it after this one planned
    res = claim_scene(plan, tmp_path)
    assert not isinstance(res, SceneClaim) and res.skipped and "finished it meanwhile" in res.note


def test_resume_trusts_only_complete_outputs(scene_png, det_ckpt, tmp_path):
    (first,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, **RUN)
    coco = tmp_path / "scene.coco.json"
    manifest = json.loads(manifest_path(tmp_path, "scene").read_text())
    assert manifest["files"]["coco"] == {"name": "scene.coco.json", "bytes": coco.stat().st_size}
    assert manifest["detections"] == first.num_detections > 0
    coco.write_bytes(b"")  # a 0-byte output: not a finished scene
    (res,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, resume=True, **RUN)
    assert not res.skipped and len(json.loads(coco.read_text())["annotations"]) == first.num_detections
    manifest_path(tmp_path, "scene").unlink()  # outputs without a manifest (a run killed before it): redone
    (res,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, resume=True, **RUN)
    assert not res.skipped and is_complete(tmp_path, "scene")
    (res,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, resume=True, **RUN)
    assert res.skipped and res.note == "done before (--resume)"


def test_leftover_partial_files_of_a_finished_scene_are_cleaned(scene_png, det_ckpt, tmp_path):
    infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, **RUN)
    # as if the process died between the manifest and the clean-up
    (tmp_path / "scene.partial.geojsonl").write_text("{}\n")
    (tmp_path / "scene.partial.dets.f32").write_bytes(b"\0" * 24)
    (res,) = infer_scenes([scene_png], det_ckpt, tmp_path, OPTS, resume=True, **RUN)
    assert res.skipped
    assert not (tmp_path / "scene.partial.geojsonl").exists() and not (tmp_path / "scene.partial.dets.f32").exists()


@pytest.mark.parametrize("name", ["scene.partial.geojsonl", "scene.partial.dets.f32", "scene.coco.json",
                                  "scene.geojson", "scene.done.json"])
def test_links_planted_in_out_are_replaced_not_written_through(scene_png, det_ckpt, tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    (res,) = infer_scenes([scene_png], det_ckpt, out, OPTS, **RUN)
    assert res.error is None and victim.read_text() == "precious"
    assert is_complete(out, "scene")
    assert not any(p.is_symlink() for p in out.iterdir())


def test_a_link_planted_as_the_lock_fails_that_scene_only(scene_png, det_ckpt, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    lock_path(out, "scene").symlink_to(victim)
    other = tmp_path / "other.png"
    Image.fromarray(smooth_image(150, 150, seed=3)).save(other)
    res, ok = infer_scenes([scene_png, other], det_ckpt, out, OPTS, **RUN)
    assert res.error and "lock file is a symbolic link" in res.error and victim.read_text() == "precious"
    assert ok.error is None and is_complete(out, "other")


def test_two_processes_into_one_out_split_the_scenes_without_corruption(det_ckpt, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for k in range(6):
        Image.fromarray(smooth_image(768, 768, seed=10 + k)).save(scenes / f"s{k}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "adla.app.cli", "infer", str(scenes), "--model", str(det_ckpt), "--out",
                str(out), "--tile", "128", "--score", "0.8", "--device", "cpu", "--preview-size", "0", "-q"]

    subprocess.run(cmd(tmp_path / "ref"), check=True, env=env, capture_output=True)  # one process alone
    out = tmp_path / "out"
    first = subprocess.Popen(cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.3)
    second = subprocess.Popen(cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert "Traceback" not in outs[0][1] + outs[1][1]
    # they raced for the scenes (started 0.3 s apart, each scene ~1 s): one skipped what the other held
    assert "another adla run is writing it" in outs[0][0] + outs[1][0], outs

    def rows(anns):  # in the order tiles completed (reader threads): compared as sets
        return sorted((a["category_id"], *a["bbox"], a["score"]) for a in anns)

    for k in range(6):
        stem = f"s{k}"
        assert is_complete(out, stem)
        coco = json.loads((out / f"{stem}.coco.json").read_text())
        feats = json.loads((out / f"{stem}.geojson").read_text())["features"]
        want = json.loads((tmp_path / "ref" / f"{stem}.coco.json").read_text())["annotations"]
        assert len(coco["annotations"]) == len(feats) == len(want) > 0  # no duplicates, none missing
        assert rows(coco["annotations"]) == rows(want)
    assert not list(out.glob("*.partial.*")) and not list(out.glob(".*.lock"))
