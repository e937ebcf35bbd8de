"""Label assigners: which anchors are positives (and of which GT), background, or ignored.

Every assigner is a stateless object built from its typed parameters (:mod:`adla.assigner_params`, the
one place they are declared; or keyword changes to their defaults) and has two methods
(:class:`~.result.Assigner`)::

    result = assigner.assign(anchors, gt_boxes, gt_labels, pred_boxes=None, progress=0.0,
                             num_level_anchors=None)
    # anchors [A,4], gt_boxes [G,4] float xyxy pixels, gt_labels [G] int64,
    # pred_boxes [A,4] the regressed anchors (detached) or None, progress in [0,1] of training.
    result.matched_gt  # int64 [A]: >= 0 GT index (positive), -1 background, -2 ignored
    assigner.alpha(progress)  # weight of the anchor IoU at that progress (1.0 without a schedule)

The package follows the seams of the work:

- :mod:`.quality`: a :class:`Quality` is a pairwise measure (IoU, NWD) that declares whether it is
  exactly 0 off-overlap; :func:`iter_quality` yields it one chunk of GTs at a time, k-d pruned (only the
  anchors near a chunk) when, and only when, it is zero off-overlap.
- :mod:`.matcher`: :class:`ThresholdMatcher` folds chunks of a quality matrix and per-GT thresholds
  into per-anchor state and returns the match vector. It knows nothing of boxes.
- :mod:`.spatial`: exact pruning for the measures that are never 0 (NWD, RFLA's RFD) but fall with the
  distance of the centres: per-layer grids of anchor centres, threshold, top-k and best-match searches
  on lists of pairs whose values equal the dense matrix's to the last bit.
- one module per assigner: :mod:`.maxiou` (mmdetection's ``MaxIoUAssigner``), :mod:`.adaptive` (ADLA,
  Ge et al., JSTARS 2024, with its ablations as settings; its equations in :mod:`.paper`), :mod:`.atss`
  (Zhang et al., CVPR 2020), :mod:`.nwd` (Wang et al. 2021) and :mod:`.rfla` (Xu et al., ECCV 2022).

Pick one from :data:`ASSIGNERS` or with :func:`build_assigner`. IoU-based assigners (``maxiou``, ``adla``,
``atss``) also take a ``quality=`` :class:`Quality` (IoU by default; ``nwd`` is ``maxiou`` on NWD).
"""

from __future__ import annotations

from adla.assigner_params import AssignerParams
from adla.boxes import aspect_ratios, pairwise_iou
from adla.config import assigner_params
from adla.errors import AdlaError
from adla.train.assigners.adaptive import MATCHINGS, AdaptiveDynamicAssigner
from adla.train.assigners.atss import ATSSAssigner
from adla.train.assigners.matcher import ThresholdMatcher
from adla.train.assigners.maxiou import MaxIoUAssigner
from adla.train.assigners.nwd import NWDAssigner
from adla.train.assigners.paper import adaptive_thresholds, alpha_schedule, dynamic_iou
from adla.train.assigners.quality import (
    IOU,
    Quality,
    QualityChunk,
    iter_quality,
    nwd_quality,
    pairwise_nwd,
)
from adla.train.assigners.result import Assigner, AssignResult
from adla.train.assigners.rfla import RFLAssigner, pairwise_kld, receptive_fields

ASSIGNERS: dict[str, type] = {
    "maxiou": MaxIoUAssigner,
    "adla": AdaptiveDynamicAssigner,
    "atss": ATSSAssigner,
    "nwd": NWDAssigner,
    "rfla": RFLAssigner,
}


def build_assigner(name: str, params: AssignerParams | dict | None = None) -> Assigner:
    """An assigner from its name in :data:`ASSIGNERS` and its parameters: the typed dataclass of that name
    (``RunConfig.assigner.params``, see :mod:`adla.assigner_params`), a dict converted through it, or None
    for the defaults.

    Raises ``AdlaError`` naming an unknown assigner, an unknown parameter (with the valid ones), a value of
    the wrong type, or a bad value.
    """
    if name not in ASSIGNERS:
        raise AdlaError(f"unknown assigner {name!r}; known: {sorted(ASSIGNERS)}")
    typed = assigner_params(name, params)
    try:
        return ASSIGNERS[name](typed)
    except (TypeError, ValueError) as exc:
        raise AdlaError(f"assigner {name!r}: {exc}") from exc


__all__ = [
    "ASSIGNERS", "IOU", "MATCHINGS", "ATSSAssigner", "AdaptiveDynamicAssigner", "AssignResult", "Assigner",
    "MaxIoUAssigner", "NWDAssigner", "Quality", "QualityChunk", "RFLAssigner", "ThresholdMatcher",
    "adaptive_thresholds", "alpha_schedule", "aspect_ratios", "build_assigner", "dynamic_iou",
    "iter_quality", "nwd_quality", "pairwise_iou", "pairwise_kld", "pairwise_nwd", "receptive_fields",
]
