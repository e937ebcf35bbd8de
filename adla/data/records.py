"""What a COCO record must hold to be scored: the one rule that every reader of a COCO file applies.

No torch here: ``adla.metrics`` (the scorer) and ``adla.data.coco`` (training, prediction) both import it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from adla.errors import AdlaError


def finite_box(bbox: Any) -> bool:
    """True for [x, y, w, h]: a list of 4 finite numbers."""
    return (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox))


def integer_id(value: Any) -> bool:
    """True for an integer id (the COCO format's; the scorer indexes records by them)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_coco_records(data: dict, where: str | Path | None) -> None:
    """AdlaError naming the file and the first record that the scorer could not use.

    The one rule for a COCO annotation file, applied by every reader (``CocoDetection`` for training
    and prediction, ``adla.metrics.load_gt`` for scoring): a file that would fail the final evaluation
    is refused before training starts, not after its last epoch. Ids are integers (unique per list);
    every annotation has a bbox of 4 finite numbers [x, y, w, h], a finite area, iscrowd 0 or 1, and
    names an image and a category of the file.
    """
    for key, required in (("images", ("id",)), ("categories", ("id", "name")),
                          ("annotations", ("id", "image_id", "category_id", "bbox"))):
        for i, rec in enumerate(data[key]):
            if not isinstance(rec, dict):
                raise AdlaError(f"{key}[{i}] is not a mapping: {rec!r:.80}", where)
            missing = [k for k in required if k not in rec]
            if missing:
                raise AdlaError(f"{key}[{i}] (id {rec.get('id')!r:.40}) has no {missing[0]!r}", where)
            bad = [k for k in required if k != "bbox" and k != "name" and not integer_id(rec[k])]
            if bad:
                raise AdlaError(f"{key}[{i}]: {bad[0]} must be an integer, got {rec[bad[0]]!r:.40}", where)
    ids = {key: {r["id"] for r in data[key]} for key in ("images", "categories")}
    for key in ("images", "categories", "annotations"):
        if len({r["id"] for r in data[key]}) != len(data[key]):
            raise AdlaError(f"duplicate ids in {key!r}", where)
    for i, ann in enumerate(data["annotations"]):
        if not finite_box(ann["bbox"]):
            raise AdlaError(f"annotations[{i}] (id {ann.get('id')!r}): bbox must be 4 finite numbers [x, y, w, h], "
                            f"got {ann['bbox']!r:.60}", where)
        area = ann.get("area", ann["bbox"][2] * ann["bbox"][3])
        if not (isinstance(area, (int, float)) and math.isfinite(area)):
            raise AdlaError(f"annotations[{i}] (id {ann.get('id')!r}): area must be a finite number", where)
        if ann.get("iscrowd", 0) not in (0, 1):
            raise AdlaError(f"annotations[{i}] (id {ann.get('id')!r}): iscrowd must be 0 or 1", where)
        if ann["image_id"] not in ids["images"]:
            raise AdlaError(f"annotations[{i}] (id {ann.get('id')!r}): image_id {ann['image_id']!r} is not an image",
                            where)
        if ann["category_id"] not in ids["categories"]:
            raise AdlaError(f"annotations[{i}] (id {ann.get('id')!r}): category_id {ann['category_id']!r} is not a "
                            "category", where)
