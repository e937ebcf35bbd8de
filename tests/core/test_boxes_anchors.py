import math

import torch

from adla.anchors import DEFAULT_MAX_STRIDE, AnchorSpec, anchor_levels, base_anchors, generate_anchors
from adla.boxes import decode, encode


def test_encode_decode_identity():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    wh = torch.rand(50, 2, generator=g) * 30 + 1
    anchors = torch.cat([xy, xy + wh], 1)
    xy2 = xy + torch.randn(50, 2, generator=g)
    gt = torch.cat([xy2, xy2 + wh * (0.5 + torch.rand(50, 2, generator=g))], 1)
    assert torch.allclose(decode(anchors, encode(anchors, gt)), gt, atol=1e-4)


def test_encode_literal():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[5.0, 0.0, 15.0, 20.0]])
    d = encode(anchors, gt)
    assert torch.allclose(d, torch.tensor([[0.5, 0.5, 0.0, math.log(2.0)]]))


def test_base_anchors_literal():
    a = base_anchors(16, (1.0,), (0.5, 1.0, 2.0))
    w = a[:, 2] - a[:, 0]
    h = a[:, 3] - a[:, 1]
    assert torch.allclose(w * h, torch.full((3,), 256.0))
    assert torch.allclose(h / w, torch.tensor([0.5, 1.0, 2.0]))
    assert torch.allclose(a[1], torch.tensor([-8.0, -8.0, 8.0, 8.0]))


def test_generate_anchors_count_order_and_levels():
    spec = AnchorSpec()
    a = generate_anchors(spec, 64, 96)
    # P3 8x12, P4 4x6, P5 2x3 locations, 9 anchors each
    assert a.shape == ((96 + 24 + 6) * 9, 4)
    # first location of P3 is centred at (0, 0) (center_offset 0), first anchor ratio 0.5 scale 1
    assert torch.allclose(a[0], base_anchors(16, spec.scales, spec.ratios)[0])
    # the second location of P3 is shifted by one stride in x
    assert torch.allclose(a[9] - a[0], torch.tensor([8.0, 0.0, 8.0, 0.0]))
    assert spec.level_counts(64, 96) == [96 * 9, 24 * 9, 6 * 9]
    lv = anchor_levels(spec, 64, 96)
    assert lv.tolist().count(0) == 96 * 9 and lv.tolist().count(2) == 6 * 9


def test_max_stride_comes_from_the_strides():
    assert AnchorSpec().max_stride == DEFAULT_MAX_STRIDE == 32
    assert AnchorSpec(sizes=(16.0, 32.0, 64.0, 128.0), strides=(8, 16, 32, 64)).max_stride == 64


def test_pairwise_and_paired_iou_and_aspect_ratios():
    import torchvision

    from adla.boxes import aspect_ratios, paired_iou, pairwise_iou

    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 25], [0, 0, 4, 0]])
    b = torch.tensor([[0.0, 0, 10, 20], [20, 20, 30, 30]])
    assert torch.equal(pairwise_iou(a[:2], b), torchvision.ops.box_iou(a[:2], b))
    assert torch.allclose(pairwise_iou(a[:2], b)[:, 0], torch.tensor([0.5, 75 / 325]))
    assert torch.allclose(paired_iou(a[:2], b), torch.tensor([0.5, 0.0]))
    assert torch.allclose(aspect_ratios(a), torch.tensor([1.0, 0.5, 0.0]))
