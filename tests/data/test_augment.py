"""Box-exact augmentation: every transform moves the boxes exactly where it moves the pixels."""

import numpy as np
import pytest
import torch

from adla.data.augment import AugmentOptions, augment, crop, dihedral, photometric, rescale


def _painted(h: int, w: int, boxes: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """An image that is 255 exactly inside each (integer) box and 0 elsewhere."""
    image = torch.zeros(3, h, w)
    for x0, y0, x1, y1 in boxes:
        image[:, y0:y1, x0:x1] = 255.0
    return image, torch.tensor(boxes, dtype=torch.float32)


def _extent(image: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(image[0] > 127, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


def test_dihedral_views_are_eight_distinct_and_box_exact():
    image, boxes = _painted(20, 30, [[3, 2, 9, 6]])
    seen = set()
    for k in range(8):
        out, b = dihedral(image, boxes, k)
        assert _extent(out) == b[0].tolist(), k
        seen.add(tuple(out[0].flatten().tolist()) + tuple(out.shape))
    assert len(seen) == 8
    assert dihedral(image, boxes, 4)[0].shape == (3, 30, 20)  # transposed views swap the sides
    assert dihedral(image, boxes, 0)[1].tolist() == [[3, 2, 9, 6]]
    assert dihedral(image, boxes, 1)[1].tolist() == [[21, 2, 27, 6]]  # x -> 30 - x
    assert dihedral(image, boxes, 4)[1].tolist() == [[2, 3, 6, 9]]


def test_rescale_scales_boxes_by_the_realised_ratio():
    image, boxes = _painted(40, 60, [[10, 8, 30, 24]])
    out, b = rescale(image, boxes, 0.5)
    assert out.shape == (3, 20, 30)
    assert b.tolist() == [[5, 4, 15, 12]]
    assert _extent(out) == [5, 4, 15, 12]


def test_crop_clips_keeps_visible_and_pads():
    image, boxes = _painted(40, 60, [[10, 10, 20, 20], [28, 0, 34, 4], [55, 30, 60, 40]])
    labels = torch.tensor([0, 1, 2])
    out, b, lab = crop(image, boxes, labels, 30, 0, 32, min_visible=0.1)
    # box 0 is outside the window; box 1 is 4/6 inside, box 2 is 2/10 inside (both kept at 0.1, clipped)
    assert out.shape == (3, 32, 32)
    assert lab.tolist() == [1, 2]
    assert b.tolist() == [[0, 0, 4, 4], [25, 30, 30, 32]]
    assert float(out[0, :, 30:].abs().sum()) == 0.0  # zero padding beyond the image
    assert crop(image, boxes, labels, 30, 0, 32, min_visible=0.5)[2].tolist() == [1]
    assert crop(image, boxes, labels, 30, 0, 32, min_visible=0.7)[2].tolist() == []


def test_augment_is_a_function_of_the_generator_and_box_exact():
    image, boxes = _painted(64, 96, [[20, 30, 28, 36]])
    opts = AugmentOptions(rot90=True, crop=48, scale=(0.8, 1.25), min_visible=0.0, photometric=0.2)
    a = augment(image, boxes, torch.tensor([1]), opts, np.random.default_rng([1, 2, 3]))
    b = augment(image, boxes, torch.tensor([1]), opts, np.random.default_rng([1, 2, 3]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 48, 48)
    shapes = set()
    for seed in range(40):
        img, bx, _ = augment(image, boxes, torch.tensor([1]), AugmentOptions(rot90=True),
                             np.random.default_rng(seed))
        assert _extent(img) == bx[0].tolist()
        shapes.add(tuple(img.shape))
    assert shapes == {(3, 64, 96), (3, 96, 64)}


def test_photometric_changes_pixels_within_range():
    image = torch.full((3, 8, 8), 100.0)
    image[0] = 200.0
    out = photometric(image, 0.2, np.random.default_rng(0))
    assert not torch.equal(out, image)
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert torch.equal(photometric(image, 0.0, np.random.default_rng(0)), image)


@pytest.mark.parametrize("factor", [0.7, 1.3])
def test_rescale_keeps_box_centres_in_place(factor):
    image, boxes = _painted(50, 50, [[20, 20, 30, 30]])
    out, b = rescale(image, boxes, factor)
    cx = (b[0, 0] + b[0, 2]) / 2
    assert abs(cx.item() - 25 * out.shape[-1] / 50) < 1e-4
