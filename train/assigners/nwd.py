"""``nwd``: max-IoU assignment on the normalized Gaussian Wasserstein distance (Wang et al. 2021,
"A Normalized Gaussian Wasserstein Distance for Tiny Object Detection").

As the authors' RetinaNet on AI-TOD (jwwangchn/NWD, mmdet-aitod ``retinanet_r50_wasserstein``): the
``MaxIoUAssigner`` of the RetinaNet config, its thresholds unchanged (0.5 / 0.4, ``min_pos_iou`` 0,
low-quality matching on), with ``assign_metric='wasserstein'``: NWD = exp(-W2 / C), C = 12.8.
NWD is never 0, so every anchor is scored against every GT (no pruning).
"""

from __future__ import annotations

from collections.abc import Sequence

from adla.errors import AdlaError
from adla.train.assigners.maxiou import MaxIoUAssigner
from adla.train.assigners.quality import NWD_CONSTANT, nwd_quality


class NWDAssigner(MaxIoUAssigner):
    """:class:`MaxIoUAssigner` with NWD (``constant`` C, px) in place of IoU; its thresholds are on NWD.

    A GT's best anchor always has NWD > 0, so low-quality matching gives every GT at least one positive.
    ``chunk_size``: GTs per chunk of the [A, chunk] NWD matrix.
    """

    name = "nwd"

    def __init__(
        self,
        *,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float | Sequence[float] = 0.4,
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        match_low_quality: bool = True,
        constant: float = NWD_CONSTANT,
        chunk_size: int = 128,
    ):
        if not constant > 0:
            raise AdlaError(f"nwd: constant must be > 0, got {constant}")
        super().__init__(pos_iou_thr=pos_iou_thr, neg_iou_thr=neg_iou_thr, min_pos_iou=min_pos_iou,
                         gt_max_assign_all=gt_max_assign_all, match_low_quality=match_low_quality,
                         chunk_size=chunk_size, prune=False)
        self.constant = float(constant)
        self.quality = nwd_quality(self.constant)
