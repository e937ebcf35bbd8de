"""AI-TOD-style COCO box evaluation with faster-coco-eval.

Set up as AI-TOD's own kit (aitodpycocotools): area ranges all [0, 1e5^2], very tiny [0, 8^2], tiny
[8^2, 16^2], small [16^2, 32^2], medium [32^2, 1e5^2]; maxDets [1, 100, 1500]; AP and the per-size APs
at 1500 detections per image. faster-coco-eval gives the official kit's numbers about 100x faster.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from adla.data.records import check_coco_records, finite_box, integer_id
from adla.errors import AdlaError
from adla.io import read_json
from adla.tables import format_table

# The AI-TOD size buckets, the one table: (name, low, high) on sqrt(w*h) in pixels. The evaluation's area
# ranges below and the assignment statistics of training and ``adla assign`` (adla.train.loss) use it.
SIZE_BUCKETS = (("very_tiny", 0.0, 8.0), ("tiny", 8.0, 16.0), ("small", 16.0, 32.0), ("medium", 32.0, 1e5))
# The scorer's area ranges (w*h), named as faster-coco-eval reports them (AP_verytiny, ...).
AITOD_RANGES = {name.replace("_", ""): [low**2, high**2] for name, low, high in SIZE_BUCKETS}
MAX_DETS = [1, 100, 1500]
METRIC_KEYS = ("AP", "AP50", "AP75", "AP_vt", "AP_t", "AP_s", "AP_m")
_STATS_KEYS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "AP_vt": "AP_verytiny", "AP_t": "AP_tiny",
               "AP_s": "AP_small", "AP_m": "AP_medium", "AR": "AR_1500"}

log = logging.getLogger(__name__)


def load_gt(gt: str | Path | dict) -> dict:
    """A COCO ground-truth dict (a copy), with ``area`` (w*h) and ``iscrowd`` filled in where absent."""
    if isinstance(gt, dict):
        # shallow copies down to each record: faster-coco-eval adds keys to them, the caller's stay as given
        data = {k: [dict(r) if isinstance(r, dict) else r for r in v] if isinstance(v, list) else v
                for k, v in gt.items()}
        where: str | None = None
    else:
        from adla.data.coco import load_coco_json

        data = load_coco_json(gt)
        where = str(gt)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AdlaError(f"not a COCO detection file: no {key!r} list", where)
    check_coco_records(data, where)
    for ann in data["annotations"]:
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
    return data


def load_results(path: str | Path, gt: dict | None = None) -> list[dict]:
    """COCO results from a file: a plain list, or a dict holding it under "annotations"/"detections".

    When the file is a dict that also lists its "images" (id, file_name), as the runtime's COCO output
    does, and ``gt`` is given, image ids are mapped onto the GT's by file name (the relative path, else
    the base name); an image that matches no GT image is an AdlaError.
    """
    path = Path(path)
    data = read_json(path, "results file")
    if isinstance(data, list):
        dets = _check_result_records(data, path)
        if gt is not None:
            _check_results(gt, dets, path)
        return dets
    if not isinstance(data, dict):
        raise AdlaError("expected a list of detections", path)
    found: list | None = next((data[k] for k in ("annotations", "detections") if isinstance(data.get(k), list)),
                              None)
    if found is None:
        raise AdlaError("expected a list of detections, or a dict with an 'annotations' or 'detections' list",
                        path)
    dets = _check_result_records(found, path)
    if gt is not None and isinstance(data.get("images"), list):
        dets = _map_image_ids(dets, _id_records(data["images"], "images", path), gt, path)
    if gt is not None and isinstance(data.get("categories"), list):
        dets = _map_categories(dets, _id_records(data["categories"], "categories", path), gt, path)
    if gt is not None:  # name the file here: the scorer sees only the merged list
        _check_results(gt, dets, path)
    return dets


def _id_records(records: list, key: str, path: Path) -> list[dict]:
    """``records`` when each is a mapping with an integer 'id'; AdlaError naming the file otherwise."""
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not integer_id(rec.get("id")):
            raise AdlaError(f"{key}[{i}] must be a mapping with an integer 'id', got {rec!r:.60}", path)
    return records


def _check_result_records(dets: list, path: Path) -> list[dict]:
    """The detections, each checked: a mapping with image_id, category_id, bbox (4 finite numbers) and a
    finite score; AdlaError naming the file and the first bad one."""
    for i, d in enumerate(dets):
        if not isinstance(d, dict):
            raise AdlaError(f"detection {i} is not a mapping: {d!r:.80}", path)
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            raise AdlaError(f"detection {i} has no {missing[0]!r}", path)
        for k in ("image_id", "category_id"):
            if not integer_id(d[k]):
                raise AdlaError(f"detection {i}: {k} must be an integer, got {d[k]!r:.40}", path)
        if not finite_box(d["bbox"]):
            raise AdlaError(f"detection {i}: bbox must be 4 finite numbers [x, y, w, h], got {d['bbox']!r:.60}",
                            path)
        score = d["score"]
        if not (isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)):
            raise AdlaError(f"detection {i}: score must be a finite number, got {score!r:.40}", path)
    return dets


def _map_categories(dets: list[dict], categories: list[dict], gt: dict, path: Path) -> list[dict]:
    """Map the results' category ids onto the GT's by category name (the runtime numbers them 1..C)."""
    gt_by_name = {str(c["name"]): c["id"] for c in gt["categories"]}
    names = {c.get("id"): str(c.get("name", "")) for c in categories}
    used = {d.get("category_id") for d in dets}
    unknown = sorted({names[c] for c in used if c in names and names[c] not in gt_by_name})
    if unknown:
        raise AdlaError(f"the results name categories that the ground truth lacks: {unknown[:5]} "
                        f"(ground truth: {sorted(gt_by_name)})", path)
    mapping = {cid: gt_by_name[n] for cid, n in names.items() if n in gt_by_name}
    return [dict(d, category_id=mapping.get(d.get("category_id"), d.get("category_id"))) for d in dets]


def _map_image_ids(dets: list[dict], images: list[dict], gt: dict, path: Path) -> list[dict]:
    by_name = {str(im["file_name"]): im["id"] for im in gt["images"]}
    by_base = {Path(n).name: i for n, i in by_name.items()}
    mapping, unknown = {}, []
    for im in images:
        name = str(im.get("file_name", ""))
        gt_id = by_name.get(name, by_base.get(Path(name).name))
        if gt_id is None:
            unknown.append(name)
        mapping[im.get("id")] = gt_id
    if unknown:
        raise AdlaError(f"{len(unknown)} image(s) of the results are not in the ground truth, e.g. "
                        f"{unknown[:3]}", path)
    return [dict(d, image_id=mapping.get(d.get("image_id"), d.get("image_id"))) for d in dets]


def _check_results(gt: dict, results: list[dict], path: Path | None = None) -> list[dict]:
    """Validated copies of the detections; AdlaError on unknown image/category ids or bad entries."""
    img_ids = {img["id"] for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    out, bad_img, bad_cat = [], set(), set()
    for i, r in enumerate(results):
        try:
            bbox = [float(v) for v in r["bbox"]]
            det = {"image_id": r["image_id"], "category_id": r["category_id"], "bbox": bbox,
                   "score": float(r["score"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise AdlaError(f"detection {i} ({r!r:.100}) lacks image_id/category_id/bbox/score ({exc})",
                            path) from exc
        if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox) or not math.isfinite(det["score"]):
            raise AdlaError(f"detection {i}: bbox must be [x, y, w, h] and score a number, all finite; got "
                            f"{bbox}, {det['score']}", path)
        if det["image_id"] not in img_ids:
            bad_img.add(det["image_id"])
        if det["category_id"] not in cat_ids:
            bad_cat.add(det["category_id"])
        out.append(det)
    if bad_img:
        raise AdlaError(f"{len(bad_img)} image id(s) in the results are not in the ground truth, "
                        f"e.g. {sorted(bad_img, key=str)[:5]}: results and annotations do not match", path)
    if bad_cat:
        raise AdlaError(f"category id(s) {sorted(bad_cat, key=str)[:5]} in the results are not in the ground "
                        f"truth (known: {sorted(cat_ids)})", path)
    return out


def evaluate_detections(gt: str | Path | dict, results: list[dict], *,
                        class_names: list[str] | None = None) -> dict[str, Any]:
    """AI-TOD metrics of COCO results (dicts with image_id, category_id, bbox [x,y,w,h] px, score).

    Returns {"AP", "AP50", "AP75", "AP_vt", "AP_t", "AP_s", "AP_m", "AR" (at 1500): float in [0, 1] or
    -1 when undefined (no ground truth in that range), "per_class_AP50": {name: float},
    "num_images", "num_detections"}. ``class_names`` (in category-id order) replaces the GT's names.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    gt_data = load_gt(gt)
    dets = _check_results(gt_data, results)
    cats = sorted(gt_data["categories"], key=lambda c: c["id"])
    names = list(class_names) if class_names is not None else [str(c["name"]) for c in cats]
    if len(names) != len(cats):
        raise AdlaError(f"{len(names)} class names given for {len(cats)} categories in the ground truth")

    quiet = log.debug
    coco_gt = COCO(gt_data, print_function=quiet)
    coco_dt = coco_gt.loadRes(dets)
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", ranges=AITOD_RANGES, print_function=quiet)
    ev.params.maxDets = list(MAX_DETS)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    stats = ev.stats_as_dict
    metrics: dict[str, Any] = {k: float(stats[v]) for k, v in _STATS_KEYS.items()}

    precision = ev.eval["precision"]  # [T, R, K, A, M]: IoU thr, recall thr, class, area range, maxDets
    t50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    cat_order = list(ev.params.catIds)
    per_class = {}
    for name, cat in zip(names, cats):
        p = precision[t50, :, cat_order.index(cat["id"]), 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    metrics["per_class_AP50"] = per_class
    metrics["num_images"] = len(gt_data["images"])
    metrics["num_detections"] = len(dets)
    return metrics


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, (int, float)) and value < 0):
        return "-"
    return f"{100.0 * float(value):.1f}"


def format_metrics_table(metrics_by_name: dict[str, dict]) -> str:
    """Models side by side: one row per metric (then per-class AP50), one column per model, in %."""
    names = list(metrics_by_name)
    rows: list[list[str]] = [["metric"] + names]
    for key in METRIC_KEYS:
        rows.append([key] + [_pct(m.get(key)) for m in metrics_by_name.values()])
    classes: list[str] = []
    for m in metrics_by_name.values():
        classes += [c for c in m.get("per_class_AP50", {}) if c not in classes]
    for c in classes:
        rows.append([f"AP50 {c}"] + [_pct(m.get("per_class_AP50", {}).get(c)) for m in metrics_by_name.values()])
    return format_table(rows, align="lr")
