import torch

from adla.boxes import encode
from adla.train.loss import AssignStats, DetectionLoss, assign_stats, bucket_of
from adla.train.schedule import EpochSampler, lr_factor


class FixedAssigner:
    """Returns a given match vector: isolates the loss from any assignment rule."""

    def __init__(self, matched):
        self.matched = torch.tensor(matched)

    def assign(self, anchors, gt_boxes, gt_labels, pred_boxes=None, progress=0.0):
        return self.matched


ANCHORS = torch.tensor([[0.0, 0, 10, 10], [10.0, 0, 20, 10], [0.0, 10, 10, 20], [10.0, 10, 20, 20]])


def test_empty_image_has_exactly_zero_box_loss():
    loss = DetectionLoss(FixedAssigner([-1, -1, -1, -1]))
    cls = torch.randn(1, 4, 2, requires_grad=True)
    box = torch.randn(1, 4, 4, requires_grad=True)
    target = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses, _stats, npos = loss(cls, box, target, ANCHORS)
    assert losses["box"].item() == 0.0
    assert npos == 0 and losses["cls"].item() > 0
    losses["total"].backward()  # the graph stays connected even without positives
    assert box.grad is not None and torch.count_nonzero(box.grad) == 0


def test_ignored_anchors_contribute_nothing():
    target = [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([1])}]
    cls = torch.randn(1, 4, 2)
    box = torch.randn(1, 4, 4)
    base = DetectionLoss(FixedAssigner([0, -1, -2, -2]))
    l1, _, _ = base(cls, box, target, ANCHORS)
    cls2 = cls.clone()
    cls2[0, 2:] = 50.0  # wildly wrong scores on the ignored anchors
    box2 = box.clone()
    box2[0, 2:] = 9.0
    l2, _, _ = base(cls2, box2, target, ANCHORS)
    assert torch.equal(l1["total"], l2["total"])


def test_box_loss_is_l1_over_positives_normalised():
    target = [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([0])}]
    box = torch.zeros(1, 4, 4)
    loss = DetectionLoss(FixedAssigner([0, -1, -1, -1]))
    losses, _, npos = loss(torch.zeros(1, 4, 2), box, target, ANCHORS)
    expected = encode(ANCHORS[:1], target[0]["boxes"]).abs().sum()
    assert npos == 1 and torch.allclose(losses["box"], expected)


def test_assign_stats_by_bucket():
    gt = torch.tensor([[0.0, 0, 6, 6], [0.0, 0, 12, 12], [0.0, 0, 20, 20], [0.0, 0, 40, 40]])
    assert bucket_of(gt).tolist() == [0, 1, 2, 3]
    matched = torch.tensor([1, 1, 2, -1, -2, 3, 3, 3])
    s = assign_stats(matched, gt)
    assert s.gts.tolist() == [1, 1, 1, 1]
    assert s.positives.tolist() == [0, 2, 1, 3]
    assert s.zero_pos.tolist() == [1, 0, 0, 0]
    summ = s.summary()
    assert summ["zero_pos_share"] == 0.25 and summ["pos_per_gt/medium"] == 3.0
    total = AssignStats.zeros()
    total.add(s)
    total.add(s)
    assert total.positives.tolist() == [0, 4, 2, 6]


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
