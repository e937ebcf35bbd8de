"""The scale test's synthetic scene and dense stand-in model; the bench commands' argument parsing."""

from __future__ import annotations

import numpy as np
import pytest

from adla.errors import AdlaError
from adla.runtime.backends import load_backend
from adla.runtime.bench import _parse_size
from adla.runtime.bench_merge import parse_count, synthetic_tiled_detections
from adla.runtime.merge import cat_detections, merge_tiles, nms_merge
from adla.runtime.options import TileOptions
from adla.runtime.pipeline import infer_reader
from adla.runtime.synthetic import DenseStubBackend, SyntheticScene


def test_synthetic_windows_agree_where_they_overlap():
    scene = SyntheticScene(700, 500)
    a = scene.read_window((0, 0, 300, 300))
    b = scene.read_window((200, 100, 500, 400))
    # objects (value 230) are a function of the position: the shared part shows the same objects
    assert ((a[:, 100:300, 200:300] == 230) == (b[:, 0:200, 0:100] == 230)).all()
    assert (a == 230).any()


def test_stub_model_drives_the_whole_pipeline(det_ckpt):
    backend = DenseStubBackend(load_backend(det_ckpt, "cpu"), per_tile=300, score=0.3)
    r = infer_reader(SyntheticScene(600, 400), backend, TileOptions(tile=128, overlap=0.2, batch=4, score_thr=0.3),
                     progress=False)
    assert r.tiles == 24 and r.num_detections > 1000  # 6 columns x 4 rows of 128 px at step 103
    assert 0 < r.pending_peak < r.num_detections
    assert set(r.phases) >= {"model", "decode", "merge", "write"}


def test_parse_sizes_and_counts():
    assert _parse_size("50000x20000") == (50000, 20000)
    assert _parse_size("8192") == (8192, 8192)
    assert [parse_count(t) for t in ("30k", "3M", "1500", "2.5k")] == [30000, 3000000, 1500, 2500]
    with pytest.raises(AdlaError):
        parse_count("lots")


def test_synthetic_tiled_detections_merge_exactly():
    parts, windows = synthetic_tiled_detections(6000, tile=256, seed=1)
    dets = cat_detections(parts)
    assert 3000 < len(dets["scores"]) < 12000
    want = nms_merge(dets, 0.5)
    got = merge_tiles(dets, windows, nms_iou=0.5, step_boxes=500)
    assert len(got["scores"]) == len(want["scores"]) < len(dets["scores"])
    assert np.array_equal(got["boxes"].numpy(), want["boxes"].numpy())


def test_bench_merge_command_prints_the_table(capsys):
    import argparse

    from adla.runtime import commands

    parser = argparse.ArgumentParser()
    commands.register_bench(parser.add_subparsers())
    args = parser.parse_args(["merge", "--boxes", "3k,5k", "--global-max", "4k", "--tile", "256"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "local" in out and "global" in out and " yes" in out and "NO" not in out
    assert "global NMS skipped at 5000 boxes" in out


def test_sahi_itself_runs_on_the_same_model(scene_png, det_ckpt):
    pytest.importorskip("sahi")
    from adla.runtime.bench import VARIANTS

    backend = load_backend(det_ckpt, "cpu")
    spec = {"scene": str(scene_png), "tile": 128, "overlap": 0.2, "score": 0.8, "batch": 4, "workers": 1}
    _, one = VARIANTS["sahi"](spec, backend)
    _, batched = VARIANTS["sahi-batched"](spec, backend)
    assert one["tiles"] == 6 and one["detections"] > 0
    assert batched["detections"] == one["detections"]  # batching changes nothing but speed
