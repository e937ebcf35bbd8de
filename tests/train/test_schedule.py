"""The learning-rate schedule (train/schedule.py) and the epoch sampler (train/sampler.py)."""

from adla.train.sampler import EpochSampler
from adla.train.schedule import lr_factor


def test_lr_schedule_warmup_and_steps():
    kw = {"warmup_iters": 10, "warmup_ratio": 0.001, "milestones": (8, 11), "gamma": 0.1}
    assert lr_factor(0, 100, **kw) == 0.001
    assert abs(lr_factor(5, 100, **kw) - (0.001 + 0.999 * 0.5)) < 1e-12
    assert lr_factor(10, 100, **kw) == 1.0
    assert abs(lr_factor(800, 100, **kw) - 0.1) < 1e-12
    assert abs(lr_factor(1100, 100, **kw) - 0.01) < 1e-12


def test_lr_schedule_cosine_over_the_budget():
    kw = {"warmup_iters": 10, "warmup_ratio": 0.001, "milestones": (), "gamma": 0.1, "schedule": "cosine",
          "total_iters": 110, "min_ratio": 0.01}
    assert lr_factor(0, 7, **kw) == 0.001
    assert lr_factor(10, 7, **kw) == 1.0
    assert abs(lr_factor(60, 7, **kw) - (0.01 + 0.99 * 0.5)) < 1e-12  # half way: the cosine's mid-point
    assert abs(lr_factor(110, 7, **kw) - 0.01) < 1e-12
    assert abs(lr_factor(500, 7, **kw) - 0.01) < 1e-12  # past the budget it stays at the floor


def test_epoch_sampler_resume_and_ranks():
    s = EpochSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:]
    s.set_epoch(3)
    assert list(s) != full and sorted(s) == list(range(10))
    r0, r1 = EpochSampler(5, seed=1, rank=0, world_size=2), EpochSampler(5, seed=1, rank=1, world_size=2)
    a, b = list(r0), list(r1)
    assert len(a) == len(b) == 3 and set(a) | set(b) == set(range(5))


def test_epoch_sampler_tags_each_index_with_its_epoch():
    plain, tagged = EpochSampler(6, seed=4), EpochSampler(6, seed=4, tag_epoch=True)
    for s in (plain, tagged):
        s.set_epoch(5, start=2)
    assert list(tagged) == [(5, i) for i in plain]
