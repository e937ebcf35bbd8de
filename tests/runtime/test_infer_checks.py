"""Issue 12 for `adla infer`: arguments checked against the model and the output folder once, before
the first scene; one line and exit status 2 when they cannot work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import unwritable_dir

from adla.app.cli import main


def infer_cli(argv: list, capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `adla infer argv`; fails on a traceback."""
    code = main(["infer", "-q", *map(str, argv)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def fixed64_onnx(det_ckpt, tmp_path_factory) -> Path:
    """The tiny detector exported to ONNX with a fixed 64 x 64 input (as the demo's fixed 512 model)."""
    export_onnx = pytest.importorskip("adla.export.onnx_export").export_onnx
    path = tmp_path_factory.mktemp("onnx") / "fixed64.onnx"
    export_onnx(det_ckpt, path, input_size=(64, 64), variant="raw", check=False)
    return path


def test_unwritable_out_is_found_before_any_scene(scene_png, det_ckpt, tmp_path, capsys):
    out = unwritable_dir(tmp_path)
    code, stdout, err = infer_cli([scene_png, "--model", det_ckpt, "--out", out], capsys)
    assert code == 2 and f"adla: error: {out}: --out cannot be written" in err, err
    assert "scene" not in stdout  # no summary table: no scene was run


def test_same_file_name_in_two_folders_is_refused_before_work(scene_png, det_ckpt, tmp_path, capsys):
    scenes = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    for p in scenes:
        p.parent.mkdir()
        shutil.copy(scene_png, p)
    # shard 1/2 alone runs only b/x.png, but shard 0/2 would write the same out/x.* files
    code, _, err = infer_cli([*scenes, "--model", det_ckpt, "--out", tmp_path / "out", "--shard", "1/2"], capsys)
    assert code == 2 and all(str(p) in err for p in scenes) and "x.*" in err, err
    assert not list((tmp_path / "out").glob("x.*"))


def test_fixed_size_model_sets_the_tile_and_refuses_a_larger_one(scene_png, fixed64_onnx, tmp_path, capsys):
    code, _, err = infer_cli([scene_png, "--model", fixed64_onnx, "--out", tmp_path / "big", "--tile", "128"],
                             capsys)
    assert code == 2 and str(fixed64_onnx) in err and "--tile 128 is larger" in err and "--tile 64" in err, err
    assert not (tmp_path / "big" / "scene.coco.json").exists()
    # no --tile: 64 from the model's metadata (the default 800 failed every scene before)
    code, stdout, err = infer_cli([scene_png, "--model", fixed64_onnx, "--out", tmp_path / "ok", "--score", "0.05"],
                                  capsys)
    assert code == 0 and (tmp_path / "ok" / "scene.coco.json").is_file(), stdout + err
    assert "warning" not in err


def test_smaller_tile_on_a_fixed_size_model_warns(scene_png, fixed64_onnx, tmp_path, capsys):
    code, _, err = infer_cli([scene_png, "--model", fixed64_onnx, "--out", tmp_path, "--tile", "32",
                              "--preview-size", "0"], capsys)
    assert code == 0 and "adla: warning: --tile 32 with a model fixed at 64x64" in err and "4.0x" in err, err


def test_unknown_class_and_bad_numbers_are_one_line(scene_png, det_ckpt, tmp_path, capsys):
    code, _, err = infer_cli([scene_png, "--model", det_ckpt, "--out", tmp_path, "--classes", "zebra"], capsys)
    assert code == 2 and "--classes: unknown class 'zebra'" in err and str(det_ckpt) in err, err
    code, _, err = infer_cli([scene_png, "--model", det_ckpt, "--out", tmp_path, "--overlap", "1.5"], capsys)
    assert code == 2 and "--overlap" in err, err
    code, _, err = infer_cli([scene_png, "--model", det_ckpt, "--out", tmp_path, "--overlap", "0.999"], capsys)
    assert code == 2 and "use at most 0.875" in err and not list(tmp_path.iterdir()), err
