"""``adla infer --ray``: the same detections as one process, a killed worker costs a retry, resume, errors.

One local Ray instance (2 CPUs) serves the module; the pipeline joins it instead of starting its own.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from adla.errors import AdlaError
from adla.runtime import commands
from adla.runtime.options import TileOptions

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'adla[ray]')")
pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install 'adla[ray]')")

from adla.runtime.ray_infer import FAULT_ENV, infer_scenes_ray

OPTS = TileOptions(tile=128, overlap=0.2, score_thr=0.8, batch=2)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)  # a CPU cluster
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(scene_png, geo_tif, tmp_path_factory):
    """Three scenes of two sizes (one georeferenced): 6 + 6 + 15 tiles of 128 px."""
    rng = np.random.default_rng(7)
    low = rng.integers(0, 256, (300 // 16, 500 // 16, 3), dtype=np.uint8)
    wide = tmp_path_factory.mktemp("ray-scenes") / "wide.jpg"
    Image.fromarray(low).resize((500, 300), Image.BILINEAR).save(wide, quality=95)
    return [scene_png, geo_tif, wide]


@pytest.fixture(scope="module")
def single(scenes, det_ckpt, tmp_path_factory):
    """The single-process outputs: the reference."""
    out = tmp_path_factory.mktemp("single")
    assert _infer_cli(scenes, det_ckpt, out) == 0
    return out


STEMS = ("scene", "geo", "wide")


def _infer_cli(scenes, model, out, *extra) -> int:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["infer", *map(str, scenes), "--model", str(model), "--out", str(out), "--tile", "128",
                              "--batch", "2", "--score", "0.3", "--device", "cpu", "-q", *extra])
    return args.func(args)


def _annotations(path) -> np.ndarray:
    """[K,6] category, x, y, w, h, score of a COCO output, sorted (the order of the file is the merge's)."""
    anns = json.loads(path.read_text())["annotations"]
    return np.array(sorted([a["category_id"], *a["bbox"], a["score"]] for a in anns)).reshape(-1, 6)


def assert_same_outputs(out_a, out_b, stems) -> None:
    """Per scene the same detections, matched one to one by box (the merge's output order may differ), up
    to the rounding of the files (boxes to 0.01 px, scores to 1e-5); GeoJSON and preview written too."""
    for stem in stems:
        a, b = _annotations(out_a / f"{stem}.coco.json"), _annotations(out_b / f"{stem}.coco.json")
        assert len(a) > 0 and a.shape == b.shape, stem
        xyxy = lambda m: torch.from_numpy(np.c_[m[:, 1:3], m[:, 1:3] + m[:, 3:5]])
        iou = box_iou(xyxy(a), xyxy(b))
        iou[torch.from_numpy(a[:, 0:1] != b[None, :, 0])] = 0
        best, idx = iou.max(dim=1)
        assert best.min() > 0.99 and idx.unique().numel() == len(a), stem
        np.testing.assert_allclose(a[:, 5], b[idx.numpy(), 5], atol=2e-5)
        ga = json.loads((out_a / f"{stem}.geojson").read_text())
        gb = json.loads((out_b / f"{stem}.geojson").read_text())
        assert len(ga["features"]) == len(gb["features"]) == len(a)
        assert ga.get("crs") == gb.get("crs")
        assert (out_b / f"{stem}.preview.jpg").is_file()
        assert not (out_b / f"{stem}.partial.geojsonl").exists()


def test_ray_writes_the_same_detections_as_one_process(local_ray, scenes, det_ckpt, single, tmp_path, capsys):
    out = tmp_path / "ray"
    assert _infer_cli(scenes, det_ckpt, out, "--ray") == 0
    assert_same_outputs(single, out, STEMS)
    printed = capsys.readouterr().out
    assert "on Ray Data" in printed and printed.count(" ok") == 3


def test_two_actors_and_small_batches_change_nothing(local_ray, scenes, det_ckpt, single, tmp_path):
    results = infer_scenes_ray(scenes, det_ckpt, tmp_path, TileOptions(tile=128, score_thr=0.3, batch=1),
                               actors=2, device="cpu", print_summary=False, progress=False)
    assert [r.error for r in results] == [None] * 3
    assert [(r.tiles, r.tiles_run) for r in results] == [(6, 6), (6, 6), (15, 15)]
    assert_same_outputs(single, tmp_path, STEMS)


@pytest.mark.parametrize("stage", ["model", "read"])
def test_a_killed_worker_costs_a_retry_not_a_scene(stage, local_ray, scenes, det_ckpt, single, tmp_path,
                                                   monkeypatch):
    """SIGKILL of the model actor (or of a read task's worker) at its 3rd call: Ray restarts it and
    retries that batch; every scene completes, nothing lost or duplicated."""
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"{stage}:3:{marker}")
    out = tmp_path / "out"
    results = infer_scenes_ray(scenes, det_ckpt, out, TileOptions(tile=128, score_thr=0.3, batch=2),
                               device="cpu", print_summary=False, progress=False)
    assert marker.is_file() and f"{stage} pid" in marker.read_text()  # a worker really died
    assert [r.error for r in results] == [None] * 3
    assert_same_outputs(single, out, STEMS)


def test_resume_skips_finished_scenes(local_ray, scenes, det_ckpt, tmp_path):
    opts = TileOptions(tile=128, score_thr=0.3, batch=2)
    first = infer_scenes_ray(scenes, det_ckpt, tmp_path, opts, device="cpu", print_summary=False, progress=False)
    assert not any(r.skipped for r in first)
    stamp = (tmp_path / "scene.coco.json").stat().st_mtime_ns
    (tmp_path / "wide.coco.json").unlink()  # as if the run had died during that scene
    again = infer_scenes_ray(scenes, det_ckpt, tmp_path, opts, device="cpu", resume=True, print_summary=False,
                             progress=False)
    assert [r.skipped for r in again] == [True, True, False]
    assert again[2].error is None and again[2].num_detections == first[2].num_detections
    assert (tmp_path / "scene.coco.json").stat().st_mtime_ns == stamp


def test_a_scene_another_run_holds_is_skipped(local_ray, scenes, det_ckpt, tmp_path):
    from adla.runtime.claims import SceneClaim, is_complete, lock_path

    held = SceneClaim.take(tmp_path, "wide")  # as another adla infer (or Ray driver) writing it now
    assert isinstance(held, SceneClaim)
    try:
        results = infer_scenes_ray(scenes, det_ckpt, tmp_path, TileOptions(tile=128, score_thr=0.3, batch=2),
                                   device="cpu", print_summary=False, progress=False)
        assert [r.skipped for r in results] == [False, False, True] and [r.error for r in results] == [None] * 3
        assert "another adla run is writing it" in results[2].note
        assert not (tmp_path / "wide.coco.json").exists() and is_complete(tmp_path, "scene")
        assert lock_path(tmp_path, "wide").exists() and not lock_path(tmp_path, "scene").exists()
    finally:
        held.release()


def test_a_bad_scene_fails_alone(local_ray, scenes, det_ckpt, tmp_path, capsys):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"\x00\xff garbage " * 500)
    results = infer_scenes_ray([bad, scenes[0]], det_ckpt, tmp_path / "out", OPTS, device="cpu", progress=False)
    assert results[0].error and "corrupt.tif" in results[0].error
    assert results[1].error is None and (tmp_path / "out" / "scene.coco.json").is_file()
    assert "1 of 2 scenes failed" in capsys.readouterr().out


def test_without_ray_the_error_says_what_to_install(scenes, det_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(AdlaError, match=r"pip install 'adla\[ray\]'"):
        _infer_cli(scenes[:1], det_ckpt, tmp_path, "--ray")
    with pytest.raises(AdlaError, match="--full-pass is not supported with --ray"):
        _infer_cli(scenes[:1], det_ckpt, tmp_path, "--ray", "--full-pass")


def test_bench_tiled_ray_times_one_process_and_the_actors(local_ray, scene_png, det_ckpt, capsys):
    from adla.runtime.bench import add_bench_arguments
    from adla.runtime.bench_ray import run_bench_ray

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args([str(scene_png), "--model", str(det_ckpt), "--ray", "--ray-scenes", "2",
                              "--actors", "1", "--tile", "128", "--score", "0.8", "--device", "cpu"])
    rows = run_bench_ray(args, str(det_ckpt))
    assert [r[0] for r in rows] == ["variant", "single process", "ray, 1 actor"]
    assert [r[1:3] for r in rows[1:]] == [("2", "12"), ("2", "12")]  # scenes, tiles (6 a scene)
    assert float(rows[2][3]) > 0 and rows[2][6].startswith(("+", "-"))
    assert "joined the running instance" in capsys.readouterr().out
    assert ray.is_initialized()  # the test's instance is left running


def test_a_failed_ray_run_is_one_line_and_says_resume(local_ray, scenes, det_ckpt, tmp_path, monkeypatch):
    from adla.runtime import ray_infer

    def broken(*args, **kwargs):
        raise RuntimeError("The actor died unexpectedly before finishing this task.\n  (a long Ray traceback)")

    monkeypatch.setattr(ray_infer, "_run_ray", broken)
    with pytest.raises(AdlaError, match=r"the Ray Data run failed after 0 scene\(s\) were written "
                                        r"\(RuntimeError: The actor died .*\); rerun with --resume") as err:
        infer_scenes_ray(scenes[:1], det_ckpt, tmp_path, OPTS, device="cpu", progress=False)
    assert "\n" not in str(err.value)


def test_cuda_is_checked_against_the_cluster_not_this_machine(local_ray, scenes, det_ckpt, tmp_path):
    """With --ray the GPUs are the cluster's: the name is checked here, the GPU count on the cluster."""
    with pytest.raises(AdlaError, match="--device gpu: expected auto, cpu, cuda or cuda:N"):
        _infer_cli(scenes[:1], det_ckpt, tmp_path, "--ray", "--device", "gpu")
    with pytest.raises(AdlaError, match="--device cuda: the Ray cluster has no GPU"):
        infer_scenes_ray(scenes[:1], det_ckpt, tmp_path, OPTS, device="cuda", progress=False)
