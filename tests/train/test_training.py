"""End-to-end training on synthetic data: learning, resume, DDP, signals."""

import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_OVERRIDES

from adla.checkpoint import load_checkpoint
from adla.config import load_config
from adla.data.synth import make_synth_dataset
from adla.train.loop import train

REPO = Path(__file__).resolve().parents[2]
SMALL = [*TINY_OVERRIDES, "data.num_workers=0", "optim.warmup_iters=10", "optim.grad_clip=10.0",
         "log_every=1"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    train_ann = make_synth_dataset(root, num_images=32, size=(128, 128), seed=5, split_name="train")
    val_ann = make_synth_dataset(root, num_images=8, size=(128, 128), seed=5, split_name="val")
    return [f"data.train_ann={train_ann}", f"data.train_images={root}", f"data.val_ann={val_ann}",
            f"data.val_images={root}"]


def _cfg(synth, out, *extra):
    return load_config(overrides=SMALL + synth + [f"out_dir={out}", *extra])


def test_short_training_learns(synth, tmp_path):
    # 12 epochs of 8 iterations with ADLA: measured AP50 0.10; untrained: 0.00
    cfg = _cfg(synth, tmp_path, "assigner.name=adla", "optim.epochs=12", "optim.lr=0.02",
               "optim.milestones=[11]", "data.batch_size=4")
    res = train(cfg, progress=False)
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert res.metrics is not None and res.metrics["AP50"] > 0.03, res.metrics
    assert res.history[-1]["alpha"] == pytest.approx(0.6)  # the dynamic IoU reached alpha0
    for name in ("last.pt", "model.pt", "log.csv", "config.yaml", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert any(p.name.startswith("events") for p in (tmp_path / "tb").iterdir())


@pytest.mark.parametrize("assigner", ["maxiou", "atss"])
def test_baseline_assigners_train(synth, tmp_path, assigner):
    cfg = _cfg(synth, tmp_path, f"assigner.name={assigner}", "optim.epochs=8", "optim.lr=0.02",
               "optim.milestones=[7]", "data.batch_size=4")
    losses = [r["loss"] for r in train(cfg, progress=False, evaluate=False).history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(synth, tmp_path, workers):
    # the views are drawn per (seed, epoch, sample), so loader workers change nothing: bit-equal weights
    base = ["optim.epochs=2", "data.batch_size=4", "assigner.name=adla", f"data.num_workers={workers}",
            "data.rot90=true", "data.photometric=0.2"]
    straight = train(_cfg(synth, tmp_path / "a", *base), progress=False, evaluate=False)
    # interrupted mid-epoch (as SIGTERM would), then resumed
    part = train(_cfg(synth, tmp_path / "b", *base), progress=False, evaluate=False, stop_after_iters=4)
    assert part.interrupted
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (ck["epoch"], ck["iter_in_epoch"]) == (0, 4)
    resumed = train(_cfg(synth, tmp_path / "b", *base), resume=True, progress=False, evaluate=False)
    assert resumed.iterations == straight.iterations
    # the interrupted epoch's log row covers all of it, as in the uninterrupted run
    for key in ("loss", "loss_cls", "loss_box", "pos_per_gt/all", "zero_pos_share"):
        assert [r[key] for r in resumed.history] == pytest.approx([r[key] for r in straight.history]), key
    a = load_checkpoint(tmp_path / "a" / "model.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "model.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_persistent_workers_draw_each_epochs_views(synth, tmp_path, monkeypatch):
    # loader workers live for the whole run; the epoch travels with each index, so epoch 2's views (not
    # epoch 1's again) are drawn in the workers: bit-equal weights to the in-process loader
    from adla.train import loop

    workers_at_eval = []
    monkeypatch.setattr(loop, "_final_metrics", lambda *a: workers_at_eval.append(
        len(multiprocessing.active_children())) or {})
    base = ["optim.epochs=3", "data.batch_size=4", "assigner.name=adla", "data.rot90=true",
            "data.photometric=0.2", "data.crop=64"]
    runs = {w: train(_cfg(synth, tmp_path / f"w{w}", *base, f"data.num_workers={w}"), progress=False)
            for w in (0, 2)}
    assert runs[2].iterations == runs[0].iterations
    assert workers_at_eval == [0, 0]  # the workers are gone before the evaluation starts
    a = load_checkpoint(tmp_path / "w0" / "model.pt")["model"]
    b = load_checkpoint(tmp_path / "w2" / "model.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _empty_cfg(path: Path) -> Path:
    """A config file holding only defaults: everything else comes from --set."""
    path.write_text("{}\n")
    return path


def test_ddp_two_processes_gloo(synth, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "adla.app.cli", "train", str(_empty_cfg(tmp_path / "c.yaml")), "--no-eval",
           "--set", *SMALL, *synth, f"out_dir={tmp_path / 'ddp'}", "optim.epochs=1", "data.batch_size=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["world_size"] == 2
    # 32 images over 2 ranks x batch 2 = 8 iterations per epoch (not 16 as in one process)
    assert ck["iteration"] == 8
    assert ck["history"][0]["world_size"] == 2 and len(ck["rng"]) == 2


def test_sigterm_writes_a_clean_checkpoint(synth, tmp_path):
    cmd = [sys.executable, "-m", "adla.app.cli", "train", str(_empty_cfg(tmp_path / "c.yaml")),
           "--no-eval", "--set", *SMALL, *synth, f"out_dir={tmp_path / 'run'}", "optim.epochs=50",
           "data.batch_size=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "log.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out[-1000:] + err[-2000:]
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert 1 <= ck["epoch"] < 50
    assert "resume with --resume" in out


def test_recipe_iteration_budget_cosine_ema_gn_and_train_ap(synth, tmp_path):
    # the real-data recipe's parts together: GroupNorm, D4 views + crops + photometric jitter, an
    # iteration budget that ends inside an epoch, cosine decay, EMA weights saved as model.pt
    cfg = _cfg(synth, tmp_path, "model.norm=gn", "assigner.name=adla", "optim.iters=11", "optim.lr=0.02",
               "optim.schedule=cosine", "optim.warmup_iters=3", "optim.ema=0.9", "optim.ema_warmup=2",
               "data.batch_size=4", "data.rot90=true", "data.crop=96", "data.scale=[0.8,1.25]",
               "data.photometric=0.2")
    res = train(cfg, progress=False)
    assert res.iterations == 11 and len(res.history) == 2  # 8 iterations a epoch: 8 + 3
    assert res.history[-1]["alpha"] == pytest.approx(0.6)
    # the lr of the last step (iteration 10 of 11, 7 of 8 after the warm-up) on the cosine to min_lr_ratio
    assert res.history[-1]["lr"] == pytest.approx(0.02 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 7 / 8))))
    last, final = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "model.pt")
    assert any(isinstance(m, torch.nn.GroupNorm) for m in __import__("adla.model", fromlist=["x"])
               .build_detector(final["run_config"].model).modules())
    key = "cls_head.out.weight"
    assert last["ema"] is not None and torch.equal(final["model"][key], last["ema"]["module." + key])
    assert not torch.equal(final["model"][key], last["model"][key])  # model.pt holds the averaged weights
    assert res.metrics is not None and 0 <= res.metrics["train/AP50"] <= 1 and "AP50" in res.metrics


def test_ema_resumes_exactly(synth, tmp_path):
    extra = ("optim.iters=10", "optim.ema=0.9", "optim.ema_warmup=2", "data.batch_size=4", "optim.lr=0.01",
             "optim.schedule=cosine")
    full = train(_cfg(synth, tmp_path / "full", *extra), progress=False, evaluate=False)
    part = _cfg(synth, tmp_path / "part", *extra)
    assert train(part, progress=False, evaluate=False, stop_after_iters=4).interrupted
    resumed = train(part, resume=True, progress=False, evaluate=False)
    assert full.iterations == resumed.iterations == 10
    a, b = load_checkpoint(tmp_path / "full" / "model.pt"), load_checkpoint(tmp_path / "part" / "model.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
