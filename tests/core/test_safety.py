"""Issue 19: loading a checkpoint never runs code from it; a checkpoint from before the RNG state was
stored as plain data still loads and resumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_OVERRIDES
from PIL import Image

from adla.app.cli import main
from adla.checkpoint import load_checkpoint
from adla.data.synth import make_synth_dataset
from adla.errors import AdlaError


class Payload:
    """What a hostile checkpoint carries: unpickling it runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile(tmp_path, tiny_ckpt) -> tuple[Path, Path]:
    """A real checkpoint with a payload in its metrics entry, and the file the payload would create."""
    marker = tmp_path / "payload-ran"
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["metrics"] = {"AP": Payload(marker)}
    path = tmp_path / "shared.pt"
    torch.save(ckpt, path)
    return path, marker


def test_load_checkpoint_refuses_a_payload(hostile):
    path, marker = hostile
    with pytest.raises(AdlaError, match="refused: loading it would call posix.system") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def _loaders(tmp_path: Path, ckpt: Path) -> dict[str, list]:
    """Every command that loads a checkpoint, pointed at ``ckpt``."""
    ann = make_synth_dataset(tmp_path / "data", num_images=1, size=(64, 64), seed=0, split_name="val")
    scene = tmp_path / "scene.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(scene)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    return {
        "evaluate": ["evaluate", "--ann", ann, "--images", ann.parent, "--ckpt", ckpt, "--device", "cpu"],
        "infer": ["infer", scene, "--model", ckpt, "--out", tmp_path / "infer", "--device", "cpu", "-q"],
        "export": ["export", ckpt, "--out", tmp_path / "m.onnx", "--no-check"],
        "train --resume": ["train", cfg, "--resume", ckpt, "--no-eval", "--out", tmp_path / "run", "--set",
                           *TINY_OVERRIDES, f"data.train_ann={ann}", f"data.train_images={ann.parent}",
                           "data.num_workers=0"],
        "bench model": ["bench", "model", ckpt, "--backends", "torch", "--runs", "1", "--warmup", "0",
                        "--input-size", "64", "64"],
        "bench tiled": ["bench", "tiled", scene, "--model", ckpt, "--tile", "64", "--variants", "model",
                        "--device", "cpu"],
    }


@pytest.mark.parametrize("command", ["evaluate", "infer", "export", "train --resume", "bench model",
                                     "bench tiled"])
def test_no_command_runs_a_checkpoints_payload(tmp_path, hostile, command, capsys):
    path, marker = hostile
    code = main([str(a) for a in _loaders(tmp_path, path)[command]])
    err = capsys.readouterr().err
    assert not marker.exists(), f"{command} ran the payload"
    errors = [ln for ln in err.splitlines() if ln.startswith("adla: error:")]
    assert code != 0 and len(errors) == 1, err[-2000:]
    assert "refused" in errors[0] and str(path) in errors[0], errors[0]
    if command != "bench tiled":  # its variants run in child processes: see the test below
        assert "Traceback" not in err, err[-2000:]


def test_bench_tiled_refuses_a_payload_without_a_traceback(tmp_path, hostile, capsys):
    code = main([str(a) for a in _loaders(tmp_path, hostile[0])["bench tiled"]])
    assert code == 2 and "Traceback" not in capsys.readouterr().err


def _train_cfg(tmp_path: Path, out: str):
    from adla.config import load_config

    ann = make_synth_dataset(tmp_path / "data", num_images=4, size=(64, 64), seed=3, split_name="train")
    return load_config(overrides=[*TINY_OVERRIDES, "data.num_workers=0", "optim.epochs=2", "data.batch_size=2",
                                  f"data.train_ann={ann}", f"data.train_images={ann.parent}",
                                  f"out_dir={tmp_path / out}"])


def test_new_checkpoints_need_no_allowlist(tmp_path):
    """The full training state (optimiser, RNG, partial epoch) is tensors and plain data."""
    from adla.train.loop import train

    train(_train_cfg(tmp_path, "run"), progress=False, evaluate=False, stop_after_iters=1)
    last = tmp_path / "run" / "last.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last) == []
    state = torch.load(last, weights_only=True)
    assert isinstance(state["rng"][0]["numpy"][1], list)


def test_checkpoint_of_the_previous_format_resumes_exactly(tmp_path):
    """Before issue 19 ``rng`` held numpy's state as numpy wrote it (an array): such a file still loads
    (numpy's array, and nothing else, allowed for that load) and resumes bit-exactly."""
    from adla.train.loop import train

    train(_train_cfg(tmp_path, "straight"), progress=False, evaluate=False)
    train(_train_cfg(tmp_path, "resumed"), progress=False, evaluate=False, stop_after_iters=1)
    last = tmp_path / "resumed" / "last.pt"
    state = torch.load(last, weights_only=True)
    for rank_state in state["rng"]:
        name, key, *rest = rank_state["numpy"]
        rank_state["numpy"] = (name, np.array(key, dtype=np.uint32), *rest)
    torch.save(state, last)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(last)
    assert isinstance(load_checkpoint(last)["rng"][0]["numpy"][1], np.ndarray)
    train(_train_cfg(tmp_path, "resumed"), resume=True, progress=False, evaluate=False)
    a = load_checkpoint(tmp_path / "straight" / "model.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- no command writes onto its inputs, or over a file it did not write ------------------------------------
def _cli(argv: list, capsys) -> tuple[int, str]:
    """Exit status and the one error line of ``adla argv`` (asserting there is at most one, no traceback)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("adla: error:")]
    assert len(lines) <= 1, err
    return code, lines[0] if lines else ""


def _snapshot(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


@pytest.fixture
def yolo(tmp_path) -> dict[str, Path]:
    """A YOLO data set: images/a.png, labels/a.txt, classes.names."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (tmp_path / "classes.names").write_text("car\n")
    return {"images": tmp_path / "images", "image": tmp_path / "images" / "a.png",
            "labels": tmp_path / "labels", "label": tmp_path / "labels" / "a.txt", "names": tmp_path / "classes.names"}


def _convert(yolo: dict[str, Path], out: Path, *extra) -> list:
    return ["data", "convert", "--format", "yolo", "--images", yolo["images"], "--labels", yolo["labels"],
            "--names", yolo["names"], "--out", out, *extra]


def test_convert_downscale_never_replaces_the_source_images(yolo, tmp_path, capsys):
    before = _snapshot(yolo["image"])
    code, line = _cli(_convert(yolo, tmp_path / "o.json", "--downscale", "0.5", "--out-images", yolo["images"]),
                      capsys)
    assert code == 2 and "--out-images" in line and "input --images" in line, line
    assert _snapshot(yolo["image"]) == before and not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("target", ["label", "names", "image"])
def test_convert_out_never_replaces_an_input(yolo, capsys, target):
    before = _snapshot(yolo["image"], yolo["label"], yolo["names"])
    code, line = _cli(_convert(yolo, yolo[target]), capsys)
    assert code == 2 and str(yolo[target]) in line and "is the input" in line, line
    assert _snapshot(yolo["image"], yolo["label"], yolo["names"]) == before


def test_convert_out_through_a_hard_link_is_refused(yolo, tmp_path, capsys):
    link = tmp_path / "other-name.json"
    os.link(yolo["label"], link)
    code, line = _cli(_convert(yolo, link), capsys)
    assert code == 2 and "is the input label file a.txt" in line, line
    assert yolo["label"].read_text() == "0 0.5 0.5 0.2 0.4\n"


def test_convert_replaces_only_its_own_outputs(yolo, tmp_path, capsys):
    out, small = tmp_path / "o.json", tmp_path / "small"
    out.write_text('{"mine": true}')
    assert _cli(_convert(yolo, out), capsys)[0] == 2 and out.read_text() == '{"mine": true}'
    small.mkdir()
    (small / "a.png").write_bytes(b"someone's picture")
    code, line = _cli(_convert(yolo, tmp_path / "p.json", "--downscale", "0.5", "--out-images", small), capsys)
    assert code == 2 and "--overwrite" in line and (small / "a.png").read_bytes() == b"someone's picture"
    assert _cli(_convert(yolo, out, "--downscale", "0.5", "--out-images", small, "--overwrite"), capsys)[0] == 0
    assert _cli(_convert(yolo, out, "--downscale", "0.5", "--out-images", small), capsys)[0] == 0  # its own


def test_export_never_replaces_its_checkpoint(tiny_ckpt, tmp_path, capsys):
    ckpt = tmp_path / "M.pt"
    ckpt.write_bytes(tiny_ckpt.read_bytes())
    code, line = _cli(["export", ckpt, "--out", ckpt, "--no-check", "--input-size", "64", "64"], capsys)
    assert code == 2 and "is the input checkpoint" in line, line
    assert ckpt.read_bytes() == tiny_ckpt.read_bytes()
    foreign = tmp_path / "someone.onnx"
    foreign.write_bytes(b"not ours")
    code, line = _cli(["export", ckpt, "--out", foreign, "--no-check", "--input-size", "64", "64"], capsys)
    assert code == 2 and "not a model exported by adla" in line and foreign.read_bytes() == b"not ours", line
    ours = tmp_path / "m.onnx"
    for _ in range(2):  # its own earlier export is replaced
        assert _cli(["export", ckpt, "--out", ours, "--no-check", "--input-size", "64", "64"], capsys)[0] == 0


@pytest.fixture
def gt(tmp_path) -> Path:
    return make_synth_dataset(tmp_path / "data", num_images=1, size=(64, 64), seed=0, split_name="val")


@pytest.mark.filterwarnings("ignore:checkpoint classes")
def test_evaluate_never_replaces_its_inputs(gt, tiny_ckpt, tmp_path, capsys):
    ckpt = tmp_path / "M.pt"
    ckpt.write_bytes(tiny_ckpt.read_bytes())
    before = _snapshot(gt, ckpt)
    run = ["evaluate", "--ann", gt, "--ckpt", ckpt, "--images", gt.parent, "--device", "cpu"]
    code, line = _cli([*run, "--out", gt], capsys)
    assert code == 2 and "--out is the input --ann" in line, line
    code, line = _cli([*run, "--save-results", ckpt], capsys)
    assert code == 2 and "--save-results is the input --ckpt" in line, line
    assert _snapshot(gt, ckpt) == before


@pytest.mark.filterwarnings("ignore:checkpoint classes")
def test_evaluate_replaces_only_its_own_outputs(gt, tiny_ckpt, tmp_path, capsys):
    out, res = tmp_path / "metrics.json", tmp_path / "res.json"
    out.write_text('{"notes": "mine"}')
    run = ["evaluate", "--ann", gt, "--ckpt", tiny_ckpt, "--images", gt.parent, "--device", "cpu"]
    code, line = _cli([*run, "--out", out], capsys)
    assert code == 2 and "--overwrite" in line and out.read_text() == '{"notes": "mine"}', line
    assert _cli([*run, "--out", out, "--save-results", res, "--overwrite"], capsys)[0] == 0
    assert _cli([*run, "--out", out, "--save-results", res], capsys)[0] == 0  # its own earlier outputs


def _train_argv(tmp_path: Path, config: Path, *extra) -> list:
    ann = make_synth_dataset(tmp_path / "data", num_images=2, size=(64, 64), seed=3, split_name="train")
    return ["train", config, "--no-eval", *extra, "--set", *TINY_OVERRIDES, "data.num_workers=0",
            "optim.iters=1", "data.batch_size=2", f"data.train_ann={ann}", f"data.train_images={ann.parent}"]


def test_train_never_replaces_the_given_config(tmp_path, capsys):
    exp = tmp_path / "exp"
    exp.mkdir()
    config = exp / "config.yaml"
    config.write_text("seed: 3\n")
    code, line = _cli([*_train_argv(tmp_path, config), f"out_dir={exp}"], capsys)
    assert code == 2 and "is the given config" in line, line
    code, line = _cli([*_train_argv(tmp_path, config, "--overwrite"), f"out_dir={exp}"], capsys)
    assert code == 2 and config.read_text() == "seed: 3\n"
    assert not (exp / "last.pt").exists()


def test_train_refuses_a_folder_with_files_it_did_not_write(tmp_path, capsys):
    run, config = tmp_path / "run", tmp_path / "c.yaml"
    run.mkdir()
    config.write_text("{}\n")
    (run / "metrics.json").write_text('{"mine": 1}')
    code, line = _cli([*_train_argv(tmp_path, config), f"out_dir={run}"], capsys)
    assert code == 2 and "metrics.json" in line and "--overwrite" in line, line
    assert (run / "metrics.json").read_text() == '{"mine": 1}'


def test_train_resumes_from_its_own_resolved_config(tmp_path, capsys):
    """``adla train RUN/config.yaml --resume``: the given config is the run's resolved one, kept as it is."""
    run, config = tmp_path / "run", tmp_path / "c.yaml"
    config.write_text("{}\n")
    assert _cli([*_train_argv(tmp_path, config), f"out_dir={run}"], capsys)[0] == 0
    before = (run / "config.yaml").read_text()
    assert _cli(["train", run / "config.yaml", "--no-eval", "--resume"], capsys)[0] == 0
    assert (run / "config.yaml").read_text() == before


def test_full_disk_in_any_atomic_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    """write() on a full disk raises OSError(ENOSPC) without a file name: it was re-raised as a traceback."""
    import errno
    import json

    from adla.io import write_json

    out = tmp_path / "metrics.json"
    write_json(out, {"AP": 0.5})

    def dump(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", dump)
    with pytest.raises(AdlaError, match="No space left on device.*previous file is kept") as err:
        write_json(out, {"AP": 0.6})
    assert str(out) in str(err.value) and json.loads(out.read_text()) == {"AP": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
