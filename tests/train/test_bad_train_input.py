"""Issue 12 for `adla train`: bad data stops the run before its first step with one line, exit 2;
a run folder that holds a run is never overwritten by accident; a killed write's temp files go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TINY_OVERRIDES

from adla.app.cli import main
from adla.checkpoint import load_checkpoint
from adla.data.synth import make_synth_dataset
from adla.train.run_dir import prepare_run_dir

SMALL = [*TINY_OVERRIDES, "data.num_workers=0", "optim.epochs=1", "data.batch_size=2", "optim.warmup_iters=1"]


@pytest.fixture
def data(tmp_path) -> Path:
    """4 synthetic 64 x 64 images with boxes: tmp_path/train.json, tmp_path/train/*.png."""
    return make_synth_dataset(tmp_path, num_images=4, size=(64, 64), seed=3, split_name="train")


def train_cli(tmp_path: Path, ann: Path, capsys, *extra: str) -> tuple[int, str, str]:
    """Exit status, the last stderr line and all of stderr of `adla train` on ``ann``."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    argv = ["train", str(cfg), "--no-eval", *[e for e in extra if e.startswith("--")],
            "--set", *SMALL, f"data.train_ann={ann}", f"data.train_images={ann.parent}",
            *[e for e in extra if not e.startswith("--")]]
    if "--out" not in extra:
        argv += [f"out_dir={tmp_path / 'run'}"]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return code, lines[-1] if lines else "", err


def test_corrupt_image_stops_training_before_the_first_step(tmp_path, data, capsys):
    bad = tmp_path / "train" / "000002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, last, _ = train_cli(tmp_path, data, capsys)
    assert code == 2 and last.startswith("adla: error:") and str(bad) in last and "cannot read image" in last
    assert not (tmp_path / "run" / "last.pt").exists()


def test_size_mismatch_stops_training_before_the_first_step(tmp_path, data, capsys):
    coco = json.loads(data.read_text())
    coco["images"][3]["width"] = 65
    data.write_text(json.dumps(coco))
    code, last, _ = train_cli(tmp_path, data, capsys)
    assert code == 2 and str(tmp_path / "train" / "000003.png") in last and "64x64 but" in last, last


def test_worker_error_is_one_line_not_the_workers_traceback(tmp_path, data, capsys):
    # a PNG whose header reads but whose pixels are cut off: found only when a worker decodes it
    bad = tmp_path / "train" / "000001.png"
    bad.write_bytes(bad.read_bytes()[:200])
    code, last, err = train_cli(tmp_path, data, capsys, "data.num_workers=1")
    assert code == 2 and last.startswith("adla: error:") and str(bad) in last, err[-2000:]
    assert "Caught" not in err, err[-3000:]
    assert "Traceback" not in err and "DataLoader" not in last


def test_training_set_without_boxes_is_refused(tmp_path, data, capsys):
    coco = json.loads(data.read_text())
    coco["annotations"] = []
    data.write_text(json.dumps(coco))
    code, last, _ = train_cli(tmp_path, data, capsys)
    assert code == 2 and str(data) in last and "no boxes" in last, last


def test_finished_run_is_not_overwritten(tmp_path, data, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.pt", "model.pt"):
        (run / name).write_bytes(b"the epoch-4 weights")
    code, last, _ = train_cli(tmp_path, data, capsys)
    assert code == 2 and str(run) in last and "finished run" in last
    assert "--resume" in last and "--overwrite" in last and "--out" in last
    assert (run / "model.pt").read_bytes() == (run / "last.pt").read_bytes() == b"the epoch-4 weights"


def test_overwrite_starts_again_and_stale_temp_files_go(tmp_path, data, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"old")
    (run / "model.pt").write_bytes(b"old")
    stale = [run / ".last.pt.k9x_1.tmp", run / ".model.pt.abc.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    keep = run / "notes.txt"
    keep.write_text("mine")
    code, _, err = train_cli(tmp_path, data, capsys, "--overwrite")
    assert code == 0, err[-2000:]
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
    assert load_checkpoint(run / "model.pt")["epoch"] == 1  # a new, complete run


def test_resume_also_removes_stale_temp_files(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    tmp = tmp_path / ".last.pt.q1.tmp"
    tmp.write_bytes(b"x")
    other = tmp_path / ".other.tmp"
    other.write_bytes(b"x")
    assert prepare_run_dir(tmp_path, resume=True, overwrite=False) == [tmp]
    assert not tmp.exists() and other.exists() and (tmp_path / "last.pt").exists()


@pytest.mark.parametrize("bbox", [[1, 2, float("nan"), 4], [1, 2, float("inf"), 4], [1, 2, 3]])
def test_box_the_evaluation_would_refuse_stops_training_before_the_first_step(tmp_path, data, capsys, bbox):
    """Issue 19: the loader only warned; training ran every epoch, then the final evaluation refused the
    same json. One rule (adla.data.records), applied before any work."""
    coco = json.loads(data.read_text())
    coco["annotations"][1]["bbox"] = bbox
    data.write_text(json.dumps(coco))
    code, last, err = train_cli(tmp_path, data, capsys)
    assert code == 2 and str(data) in last and "annotations[1]" in last and "bbox must be 4 finite" in last, last
    assert not (tmp_path / "run" / "last.pt").exists() and "epoch" not in err


def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, data, capsys,
                                                                              monkeypatch):
    """torch.save on a full disk raises RuntimeError('[enforce fail at inline_container.cc:672] .
    unexpected pos 576 vs 534') (measured on a 2 MB tmpfs): the second epoch's last.pt fails that way."""
    import torch

    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", save)
    code, last, err = train_cli(tmp_path, data, capsys, "optim.epochs=2")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert last.startswith(f"adla: error: {tmp_path / 'run' / 'last.pt'}: cannot write the checkpoint") and \
        "MB free" in last and "previous last.pt" in last, last
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # the first epoch's, intact
    assert not list((tmp_path / "run").glob(".last.pt.*"))
