"""Box-exact training augmentation for aerial images, drawn from a per-sample random generator.

Aerial and satellite images have no "up": the eight symmetries of the square (flips and 90-degree
rotations, the dihedral group D4) are all valid views. Random crops with scale jitter to a fixed size
let a detector train on scenes of any size (cut into crops on the fly) and on batches that stack
without padding. Light photometric jitter covers sensor and illumination changes.

Every transform maps boxes exactly: xyxy pixels in, xyxy pixels out. The random draws come from a
``numpy.random.Generator`` the caller seeds per (seed, epoch, sample index), so a sample looks the
same whichever DataLoader worker loads it, and a resumed run sees the same images as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class AugmentOptions:
    """What ``augment`` does. The defaults do nothing beyond the flips given.

    hflip, vflip: probabilities of a horizontal / vertical flip.
    rot90: with True, a uniformly drawn element of the dihedral group D4 (8 views) replaces the flips.
    crop: side of a square random crop (padded with zeros where the image is smaller); None = no crop.
    scale: (low, high) range of a log-uniform resize before the crop; (1, 1) = none.
    min_visible: a box cut by the crop is kept when at least this share of its area is inside.
    photometric: strength of brightness / contrast / saturation jitter (0 = none; 0.2 = +-20 %).
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = False
    crop: int | None = None
    scale: tuple[float, float] = (1.0, 1.0)
    min_visible: float = 0.5
    photometric: float = 0.0


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right. image [3,H,W], boxes [G,4] xyxy px."""
    w = image.shape[-1]
    return image.flip(-1), torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)


def vflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror top-bottom. image [3,H,W], boxes [G,4] xyxy px."""
    h = image.shape[-2]
    return image.flip(-2), torch.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], dim=1)


def transpose(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap the x and y axes (a flip about the main diagonal). image [3,H,W] -> [3,W,H]."""
    return image.transpose(-1, -2), boxes[:, [1, 0, 3, 2]]


def dihedral(image: torch.Tensor, boxes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Element ``k`` (0-7) of D4: bit 0 horizontal flip, bit 1 vertical flip, bit 2 transpose first.

    The eight combinations are the eight distinct symmetries of the square (0 is the identity,
    transpose + one flip are the 90-degree rotations).
    """
    if k & 4:
        image, boxes = transpose(image, boxes)
    if k & 1:
        image, boxes = hflip(image, boxes)
    if k & 2:
        image, boxes = vflip(image, boxes)
    return image, boxes


def rescale(image: torch.Tensor, boxes: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize by ``factor`` (bilinear, antialiased when shrinking); boxes scale by the realised ratio."""
    h, w = image.shape[-2:]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    if (nh, nw) == (h, w):
        return image, boxes
    out = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                        antialias=factor < 1)[0]
    ratio = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=boxes.dtype)
    return out, boxes * ratio


def crop(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, x0: int, y0: int, size: int,
         min_visible: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``size`` x ``size`` window at (x0, y0), zero-padded past the image; boxes clipped to it.

    A box keeps its label when at least ``min_visible`` of its area lies in the window; others are dropped.
    Returns (image [3,size,size], boxes [K,4], labels [K]).
    """
    h, w = image.shape[-2:]
    out = image.new_zeros((image.shape[0], size, size))
    sx1, sy1 = min(w, x0 + size), min(h, y0 + size)
    out[:, : sy1 - y0, : sx1 - x0] = image[:, y0:sy1, x0:sx1]
    shifted = boxes - torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
    clipped = torch.stack([shifted[:, 0].clamp(0, sx1 - x0), shifted[:, 1].clamp(0, sy1 - y0),
                           shifted[:, 2].clamp(0, sx1 - x0), shifted[:, 3].clamp(0, sy1 - y0)], dim=1)
    area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]).clamp(min=0) * (clipped[:, 3] - clipped[:, 1]).clamp(min=0)
    keep = (inside > 0) & (inside >= min_visible * area)
    return out, clipped[keep], labels[keep]


def photometric(image: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - strength, 1 + strength]."""
    if strength <= 0:
        return image
    b, c, s = (1 + rng.uniform(-strength, strength, size=3)).tolist()
    x = (image / 255.0).clamp(0, 1)
    x = TF.adjust_brightness(x, b)
    x = TF.adjust_contrast(x, c)
    x = TF.adjust_saturation(x, s)
    return x * 255.0


def augment(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, opts: AugmentOptions,
            rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random training view: geometry (D4 or flips), scale jitter + crop, photometric jitter.

    image float32 [3,H,W] RGB 0-255; boxes float32 [G,4] xyxy px; labels int64 [G].
    """
    if opts.rot90:
        image, boxes = dihedral(image, boxes, int(rng.integers(8)))
    else:
        do_h, do_v = (rng.random(2) < [opts.hflip, opts.vflip]).tolist()
        if do_h:
            image, boxes = hflip(image, boxes)
        if do_v:
            image, boxes = vflip(image, boxes)
    lo, hi = opts.scale
    if (lo, hi) != (1.0, 1.0):
        image, boxes = rescale(image, boxes, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
    if opts.crop:
        h, w = image.shape[-2:]
        x0 = int(rng.integers(max(w - opts.crop, 0) + 1))
        y0 = int(rng.integers(max(h - opts.crop, 0) + 1))
        image, boxes, labels = crop(image, boxes, labels, x0, y0, opts.crop, opts.min_visible)
    image = photometric(image, opts.photometric, rng)
    return image.contiguous(), boxes.reshape(-1, 4), labels
