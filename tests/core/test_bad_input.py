"""Issue 12: every bad input is one line naming the file or key, exit status 2, through the real CLI."""

from __future__ import annotations

import copy
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import unwritable_dir
from PIL import Image

from adla.app.cli import main
from adla.data.coco import CocoDetection
from adla.errors import AdlaError, one_line
from adla.io import write_json
from adla.metrics import evaluate_detections, load_gt, load_results


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and the error line of ``adla argv``; fails when stderr holds a traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("adla: error:")]
    return code, lines[-1] if lines else ""


@pytest.fixture
def unwritable(tmp_path) -> Path:
    return unwritable_dir(tmp_path)


def _empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    return path


@pytest.mark.parametrize("key,value", [("data.batch_size", "0"), ("optim.lr", "-1"),
                                       ("data.num_workers", "-1"), ("optim.epochs", "0")])
def test_config_value_out_of_range_names_the_key(tmp_path, capsys, key, value):
    code, msg = run_cli(["train", _empty_config(tmp_path), "--out", tmp_path / "run", "--set", f"{key}={value}"],
                        capsys)
    assert code == 2
    assert f"{key}: must be" in msg and f"got {value}" in msg, msg
    assert not (tmp_path / "run").exists()  # refused before any work


def test_ranges_hold_for_direct_construction_and_tuples():
    from adla.config import OptimConfig
    from adla.postprocess import PostprocessConfig

    with pytest.raises(AdlaError, match=r"milestones must be >= 1, got 0 in \[0, 3\]"):
        OptimConfig(milestones=(0, 3))
    with pytest.raises(AdlaError, match=r"score_thr must be in \[0, 1\], got nan"):
        PostprocessConfig(score_thr=float("nan"))
    assert OptimConfig(grad_clip=None).grad_clip is None  # optional fields may be None


def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, msg = run_cli(["train", _empty_config(tmp_path), "--out", tmp_path / "run", "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda" in msg and "no CUDA GPU" in msg, msg


def _yolo_input(tmp_path: Path) -> list[str]:
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    return ["data", "convert", "--format", "yolo", "--images", tmp_path, "--labels", tmp_path, "--classes", "car"]


def test_convert_into_unwritable_folder(tmp_path, capsys, unwritable):
    code, msg = run_cli([*_yolo_input(tmp_path), "--out", unwritable / "o.json"], capsys)
    assert code == 2 and str(unwritable / "o.json") in msg and "cannot be written" in msg, msg


def test_export_into_unwritable_folder(tmp_path, capsys, unwritable, tiny_ckpt):
    code, msg = run_cli(["export", tiny_ckpt, "--input-size", "64", "64", "--out", unwritable / "m.onnx"], capsys)
    assert code == 2 and str(unwritable / "m.onnx") in msg, msg


def test_out_under_an_existing_file(tmp_path, capsys, tiny_ckpt):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, msg = run_cli(["export", tiny_ckpt, "--out", blocker / "m.onnx"], capsys)
    assert code == 2 and str(blocker / "m.onnx") in msg and f"{blocker} is a file" in msg, msg
    code, msg = run_cli([*_yolo_input(tmp_path), "--out", blocker / "sub" / "o.json"], capsys)
    assert code == 2 and f"{blocker} is a file" in msg, msg
    code, msg = run_cli(["train", _empty_config(tmp_path), "--out", blocker / "run"], capsys)
    assert code == 2 and str(blocker / "run") in msg and "is a file" in msg, msg


def test_atomic_writer_errors_name_the_path(tmp_path, unwritable):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(AdlaError, match="is a file, not a folder") as err:
        write_json(blocker / "a" / "b.json", {})
    assert str(blocker / "a" / "b.json") in str(err.value)
    with pytest.raises(AdlaError, match="cannot write") as err:
        write_json(unwritable / "b.json", {})
    assert str(unwritable / "b.json") in str(err.value)


def test_os_error_on_a_named_file_is_one_line(tmp_path, capsys, monkeypatch):
    # the CLI's last net: an OSError about a file the user named is not a traceback either
    from adla.data import commands

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.json"))

    monkeypatch.setattr(commands, "_convert", denied)
    code, msg = run_cli([*_yolo_input(tmp_path), "--out", tmp_path / "o.json"], capsys)
    assert code == 2 and msg == f"adla: error: {tmp_path / 'x.json'}: Permission denied"


def _gt(tmp_path: Path) -> tuple[Path, dict]:
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6]}],
          "categories": [{"id": 1, "name": "car"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, gt


def test_evaluate_gt_without_bbox_names_the_file(tmp_path, capsys):
    path, gt = _gt(tmp_path)
    del gt["annotations"][0]["bbox"]
    path.write_text(json.dumps(gt))
    (tmp_path / "r.json").write_text("[]")
    code, msg = run_cli(["evaluate", "--ann", path, "--results", tmp_path / "r.json"], capsys)
    assert code == 2 and str(path) in msg and "has no 'bbox'" in msg, msg


def test_evaluate_nan_score_names_the_file(tmp_path, capsys):
    path, _ = _gt(tmp_path)
    res = tmp_path / "r.json"
    res.write_text('[{"image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "score": NaN}]')
    code, msg = run_cli(["evaluate", "--ann", path, "--results", res], capsys)
    assert code == 2 and str(res) in msg and "score must be a finite number" in msg, msg


def test_worker_traceback_is_unwrapped_to_its_last_line():
    # what torch's DataLoader re-raises: the original type, the worker's whole traceback as message
    wrapped = AdlaError("Caught AdlaError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\n    raise AdlaError('bad', 'a/b.png')\n"
                        "adla.errors.AdlaError: a/b.png: cannot read image (OSError: truncated)\n")
    assert one_line(wrapped) == "a/b.png: cannot read image (OSError: truncated)"
    assert one_line(AdlaError("not valid YAML: while parsing\n  in line 3")) == "not valid YAML: while parsing in line 3"


# fuzz: random mutations of a valid annotation file give a one-line AdlaError or a result, nothing else

WEIRD = [None, True, -1, 0, 1e308, float("nan"), float("inf"), "x", "", [], {}, [1, 2], [1, 2, 3, 4],
         {"a": 1}, 2**70, -0.5]


def _paths(tree, path=()):
    yield path
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        yield from _paths(v, path + (k,))


def _mutate(tree, rng: random.Random):
    tree = copy.deepcopy(tree)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(tree) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        op = rng.random()
        if op < 0.3 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op < 0.4 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(WEIRD))
    return tree


def test_fuzzed_annotation_and_result_files(tmp_path):
    for i in range(2):
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / f"im{i}.png")
    valid_gt = {
        "images": [{"id": i + 1, "file_name": f"im{i}.png", "height": 32, "width": 48} for i in range(2)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 6], "area": 30, "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 2, 5, 6]}],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "boat"}]}
    valid_res = {"images": [{"id": 5, "file_name": "im0.png"}], "categories": [{"id": 1, "name": "car"}],
                 "annotations": [{"image_id": 5, "category_id": 1, "bbox": [1, 2, 5, 6], "score": 0.9}]}
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 6], "score": 0.9}]))
    rng = random.Random(12)
    outcomes = {"ok": 0, "error": 0}
    path = tmp_path / "f.json"
    for n in range(200):
        gt_case = n % 2 == 0
        text = json.dumps(_mutate(valid_gt if gt_case else valid_res, rng))
        if rng.random() < 0.1:
            text = text[: rng.randint(0, len(text))]  # truncated file
        path.write_text(text)
        steps = ([lambda: CocoDetection(path, tmp_path),
                  lambda: evaluate_detections(gt := load_gt(path), load_results(results, gt))]
                 if gt_case else [lambda: evaluate_detections(valid_gt, load_results(path, load_gt(valid_gt)))])
        for step in steps:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    step()
                outcomes["ok"] += 1
            except AdlaError as exc:
                assert "\n" not in str(exc) and (str(path) in str(exc) or str(results) in str(exc)), (exc, text)
                outcomes["error"] += 1
            except Exception as exc:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{type(exc).__name__}: {exc} on {text}")
    assert outcomes["ok"] > 20 and outcomes["error"] > 50, outcomes  # both kinds were exercised


@pytest.mark.parametrize("base", ["[a.yaml, b.yaml]", "{file: a.yaml}", "3"])
def test_base_that_is_not_one_file_name_is_one_line(tmp_path, capsys, base):
    """Issue 19: ``_base_:`` given as a list was a TypeError traceback."""
    (tmp_path / "a.yaml").write_text("seed: 1\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"_base_: {base}\n")
    code, msg = run_cli(["train", config, "--out", tmp_path / "run"], capsys)
    assert code == 2 and str(config) in msg and "_base_ must be one file name" in msg, msg


def test_base_file_that_is_not_a_mapping_is_one_line(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("- seed\n")
    config = tmp_path / "c.yaml"
    config.write_text("_base_: a.yaml\n")
    code, msg = run_cli(["train", config, "--out", tmp_path / "run"], capsys)
    assert code == 2 and str(tmp_path / "a.yaml") in msg and "must be a mapping" in msg, msg
