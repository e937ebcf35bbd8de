import torch

from adla.boxes import encode
from adla.train.assigners.result import AssignResult, Static
from adla.train.loss import AssignStats, DetectionLoss, assign_stats, bucket_of


class FixedAssigner(Static):
    """Returns a given match vector: isolates the loss from any assignment rule. Written to the assigner
    contract (``adla.train.assigners.Assigner``), as any assigner the loss is given."""

    def __init__(self, matched):
        self.matched = torch.tensor(matched)

    def assign(self, anchors, gt_boxes, gt_labels=None, pred_boxes=None, progress=0.0, *, num_level_anchors=None):
        return AssignResult(matched_gt=self.matched)


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
