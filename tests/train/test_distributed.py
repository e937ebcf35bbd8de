"""torchrun / DDP set-up (train/distributed.py): a single process, a one-process gloo group, two ranks.

Also the one cross-rank reduction the training loop makes with these helpers: ``EpochStats.all_reduce``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from adla.errors import AdlaError
from adla.train.distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed, pick_device
from adla.train.loop import EpochStats
from adla.train.loss import AssignStats


@pytest.fixture
def single_process(monkeypatch):
    """No torchrun variables: the environment of a plain ``adla train``."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def _stats(scale: float) -> EpochStats:
    """Two steps' worth of epoch sums, all multiplied by ``scale``."""
    s = EpochStats.zeros()
    s.add({"cls": torch.tensor(1.0 * scale), "box": torch.tensor(2.0 * scale), "total": torch.tensor(3.0 * scale)},
          AssignStats(torch.tensor([1.0, 2, 0, 0]) * scale, torch.tensor([4.0, 6, 0, 0]) * scale,
                      torch.tensor([0.0, 1, 0, 0]) * scale))
    s.add({"cls": torch.tensor(3.0 * scale), "box": torch.tensor(0.5 * scale), "total": torch.tensor(3.5 * scale)},
          AssignStats(torch.tensor([1.0, 0, 1, 0]) * scale, torch.tensor([2.0, 0, 5, 0]) * scale,
                      torch.tensor([0.0, 0, 0, 0]) * scale))
    return s


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal summaries, bit for bit; an empty size bucket is NaN in both."""
    return list(a) == list(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in
                                      zip(a.values(), b.values(), strict=True))


def test_dist_info_of_a_single_process():
    info = DistInfo()
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 0)
    assert info.device == torch.device("cpu")
    assert info.is_main and not info.enabled
    other = DistInfo(rank=1, world_size=2, local_rank=1)
    assert not other.is_main and other.enabled


def test_init_distributed_without_torchrun_starts_no_process_group(single_process):
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"))
    assert not dist.is_initialized()


def test_init_distributed_with_a_world_of_one_starts_no_process_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert init_distributed("cpu") == DistInfo(0, 1, 0, torch.device("cpu"))
    assert not dist.is_initialized()


def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(AdlaError, match="no CUDA GPU"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto", local_rank=1) == torch.device("cuda", 1)  # each rank its own GPU
    assert pick_device("cuda", local_rank=3) == torch.device("cuda", 3)


def test_helpers_on_one_rank_leave_the_input_alone():
    info = DistInfo()
    t = torch.tensor([1.5, -2.0, 3.0], dtype=torch.float64)
    out = all_reduce_sum(t, info)
    assert out is t and out.tolist() == [1.5, -2.0, 3.0]
    barrier(info)  # no process group: nothing to wait for
    cleanup(info)
    assert not dist.is_initialized()


def test_epoch_stats_accumulate_and_summarise():
    s = _stats(1.0)
    assert s.steps == 2 and s.sums.dtype == torch.float64
    assert s.sums.tolist() == [4.0, 2.5, 6.5]
    assert s.mean_loss == 3.25
    summ = s.summary()
    assert list(summ)[:3] == ["loss", "loss_cls", "loss_box"]  # the log's column order
    assert (summ["loss"], summ["loss_cls"], summ["loss_box"]) == (3.25, 2.0, 1.25)
    assert summ["pos_per_gt/very_tiny"] == 3.0 and summ["pos_per_gt/tiny"] == 3.0
    assert summ["zero_pos_share"] == 0.2 and summ["pos_per_gt/all"] == 17 / 5


def test_epoch_stats_of_no_steps_divide_by_one():
    summ = EpochStats.zeros().summary()
    assert summ["loss"] == summ["loss_cls"] == summ["loss_box"] == 0.0


def test_epoch_stats_reduction_on_one_rank_is_the_identity():
    s = _stats(1.0)
    total = s.all_reduce(DistInfo())
    assert total.steps == s.steps and isinstance(total.steps, int)
    assert torch.equal(total.sums, s.sums) and total.sums.dtype == torch.float64
    for name in ("gts", "positives", "zero_pos"):
        a, b = getattr(total.assign, name), getattr(s.assign, name)
        assert torch.equal(a, b) and a.dtype == b.dtype == torch.float32, name
    assert _same(total.summary(), s.summary())


def test_epoch_stats_partial_round_trip_is_a_copy():
    s = _stats(1.0)
    p = s.to_partial(12.5)
    assert set(p) == {"sums", "steps", "time_s", "gts", "positives", "zero_pos"}  # checkpoint keys
    assert p["time_s"] == 12.5 and p["steps"] == 2
    back = EpochStats.from_partial(p)
    assert _same(back.summary(), s.summary())
    back.add({"cls": torch.tensor(1.0), "box": torch.tensor(1.0), "total": torch.tensor(2.0)}, AssignStats.zeros())
    assert s.sums.tolist() == [4.0, 2.5, 6.5] and s.steps == 2  # the checkpoint's tensors are untouched


def test_one_process_gloo_group(tmp_path):
    # a real process group of one rank; DistInfo says two so the helpers take the collective path
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        info = DistInfo(rank=0, world_size=2)
        t = all_reduce_sum(torch.tensor([1.0, 2.0]), info)
        assert t.tolist() == [1.0, 2.0]
        barrier(info)
        s = _stats(1.0)
        assert _same(s.all_reduce(info).summary(), s.summary())
    finally:
        cleanup(DistInfo(rank=0, world_size=2))
    assert not dist.is_initialized()


_RANK_SCRIPT = """
import json, torch
from adla.train.distributed import all_reduce_sum, barrier, cleanup, init_distributed
from adla.train.loop import EpochStats
from adla.train.loss import AssignStats
info = init_distributed("cpu")
t = all_reduce_sum(torch.tensor([float(info.rank + 1)]), info)
s = EpochStats.zeros()
for _ in range(info.rank + 1):  # rank 0: one step, rank 1: two
    s.add({"cls": torch.tensor(1.0), "box": torch.tensor(2.0), "total": torch.tensor(3.0)},
          AssignStats(torch.tensor([1.0, 0, 0, 0]), torch.tensor([4.0, 0, 0, 0]), torch.tensor([0.0, 0, 0, 0])))
total = s.all_reduce(info)
barrier(info)
print(json.dumps({"info": [info.rank, info.world_size, info.enabled], "sum": t.item(), "steps": total.steps,
                  "sums": total.sums.tolist(), "gts": total.assign.gts.tolist(), **total.summary()}))
cleanup(info)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_reduce_epoch_stats_over_gloo():
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    res = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["info"] for r in res] == [[0, 2, True], [1, 2, True]]
    for r in res:  # every rank gets the sums over both
        assert r["sum"] == 3.0 and r["steps"] == 3
        assert r["sums"] == [3.0, 6.0, 9.0] and r["gts"] == [3.0, 0, 0, 0]
        assert r["loss"] == 3.0 and r["pos_per_gt/very_tiny"] == 4.0
