"""Anchor generation for RetinaNet-style heads ("sub-size" anchors of the paper by default).

Order of the flattened anchors, which the head's outputs follow exactly: level by level (P3, P4, P5),
then row-major over feature-map locations, then per location ratio-major, scale-minor (mmdetection's
``AnchorGenerator`` order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from adla.ranges import check_ranges

DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32)  # P3-P5 of the ResNet + FPN detector
# The default anchors' largest stride (the size divisor of the model's input). Use ``AnchorSpec.max_stride``
# wherever a spec or model is at hand; this constant is only for checks made before one is loaded
# (e.g. a CLI's minimum tile) and for defaults that have no spec to ask.
DEFAULT_MAX_STRIDE: int = max(DEFAULT_STRIDES)


@dataclass(frozen=True)
class AnchorSpec:
    """Anchors per FPN level. Defaults are the paper's sub-size anchors: 16/32/64 at strides 8/16/32."""

    sizes: tuple[float, ...] = (16.0, 32.0, 64.0)
    strides: tuple[int, ...] = DEFAULT_STRIDES
    scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    center_offset: float = 0.0  # in strides; mmdetection's RetinaNet uses 0

    RANGES: ClassVar[dict[str, str]] = {"sizes": "> 0", "strides": ">= 1", "scales": "> 0", "ratios": "> 0"}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        if len(self.sizes) != len(self.strides):
            raise ValueError(f"anchor sizes {self.sizes} and strides {self.strides} differ in length")

    @property
    def max_stride(self) -> int:
        """The largest stride (the coarsest level's): model inputs are padded to a multiple of it."""
        return max(self.strides)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.scales) * len(self.ratios)

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature-map (h, w) per level for an input of ``height`` x ``width`` (ResNet rounding: ceil)."""
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.strides]

    def level_counts(self, height: int, width: int) -> list[int]:
        """Anchors per level (P3 first) for an input of ``height`` x ``width``, in head-output order."""
        return [fh * fw * self.num_anchors for fh, fw in self.feature_sizes(height, width)]

    def to_dict(self) -> dict:
        return {
            "sizes": list(self.sizes),
            "strides": list(self.strides),
            "scales": list(self.scales),
            "ratios": list(self.ratios),
            "center_offset": self.center_offset,
        }


def base_anchors(size: float, scales: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """Anchors [R*S, 4] xyxy centred on the origin, ratio-major then scale."""
    r = torch.tensor(ratios, dtype=torch.float64)
    s = torch.tensor(scales, dtype=torch.float64)
    h_ratios = torch.sqrt(r)
    w_ratios = 1.0 / h_ratios
    ws = (size * w_ratios[:, None] * s[None, :]).reshape(-1)
    hs = (size * h_ratios[:, None] * s[None, :]).reshape(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1).float()


def level_anchors(spec: AnchorSpec, level: int, fh: int, fw: int, device=None) -> torch.Tensor:
    """Anchors [fh*fw*A, 4] of one level."""
    stride = spec.strides[level]
    base = base_anchors(spec.sizes[level], spec.scales, spec.ratios).to(device)
    off = spec.center_offset * stride
    ys = torch.arange(fh, device=device, dtype=torch.float32) * stride + off
    xs = torch.arange(fw, device=device, dtype=torch.float32) * stride + off
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


def generate_anchors(spec: AnchorSpec, height: int, width: int, device=None) -> torch.Tensor:
    """All anchors [N, 4] xyxy pixels for an input of ``height`` x ``width``, in head-output order."""
    sizes = spec.feature_sizes(height, width)
    return torch.cat([level_anchors(spec, i, fh, fw, device) for i, (fh, fw) in enumerate(sizes)])


def anchor_levels(spec: AnchorSpec, height: int, width: int) -> torch.Tensor:
    """Level index [N] of every anchor (0 = P3), for per-level assigners such as ATSS."""
    counts = spec.level_counts(height, width)
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
