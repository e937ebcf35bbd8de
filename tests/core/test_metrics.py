"""AI-TOD evaluation: literal cases and a cross-check against pycocotools' COCOeval."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from adla.errors import AdlaError
from adla.metrics import AITOD_RANGES, SIZE_BUCKETS, evaluate_detections, format_metrics_table, load_results


def _gt(boxes_per_image: list[list[tuple[float, float, float, float, int]]]) -> dict:
    """COCO GT from per-image lists of (x, y, w, h, category_id); categories 1 "car", 2 "ship"."""
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image):
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 400, "height": 400})
        for x, y, w, h, c in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "ship"}]}


def _perfect(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"]]


def test_perfect_detections_give_ap_one():
    gt = _gt([[(10, 10, 6, 6, 1), (50, 50, 12, 12, 1), (100, 100, 20, 20, 2), (200, 200, 40, 40, 2)]])
    m = evaluate_detections(gt, _perfect(gt))
    for key in ("AP", "AP50", "AP75", "AP_vt", "AP_t", "AP_s", "AP_m"):
        assert m[key] == pytest.approx(1.0), key
    assert m["per_class_AP50"] == {"car": pytest.approx(1.0), "ship": pytest.approx(1.0)}
    assert m["num_images"] == 1 and m["num_detections"] == 4


def test_undefined_range_is_minus_one_and_empty_results_are_zero():
    gt = _gt([[(10, 10, 12, 12, 1)]])  # one tiny car, no ship
    m = evaluate_detections(gt, _perfect(gt))
    assert m["AP_t"] == pytest.approx(1.0) and m["AP_vt"] == -1 and m["AP_m"] == -1
    assert m["per_class_AP50"]["ship"] == -1
    empty = evaluate_detections(gt, [])
    assert empty["AP"] == 0 and empty["AP50"] == 0 and empty["AP_t"] == 0 and empty["num_detections"] == 0


def test_half_the_objects_found_literal():
    gt = _gt([[(10, 10, 12, 12, 1), (100, 100, 12, 12, 1)]])
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 12, 12], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [300, 300, 12, 12], "score": 0.8}]
    # recall reaches 0.5 at precision 1: 51 of 101 recall thresholds have precision 1
    assert evaluate_detections(gt, dets)["AP50"] == pytest.approx(51 / 101)


def test_unknown_image_or_category_is_a_clear_error():
    gt = _gt([[(10, 10, 12, 12, 1)]])
    with pytest.raises(AdlaError, match="not in the ground truth"):
        evaluate_detections(gt, [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}])
    with pytest.raises(AdlaError, match=r"category id\(s\) \[7\]"):
        evaluate_detections(gt, [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 1.0}])
    with pytest.raises(AdlaError, match="lacks"):
        evaluate_detections(gt, [{"image_id": 1, "bbox": [0, 0, 5, 5]}])


def _random_case(seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    per_image = []
    for _ in range(4):
        boxes = []
        for _ in range(int(rng.integers(5, 30))):
            s = float(rng.choice([rng.uniform(3, 8), rng.uniform(8, 16), rng.uniform(16, 32), rng.uniform(32, 60)]))
            boxes.append((float(rng.uniform(0, 330)), float(rng.uniform(0, 330)), s, s * float(rng.uniform(0.5, 1.5)),
                          int(rng.integers(1, 3))))
        per_image.append(boxes)
    gt = _gt(per_image)
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.8:
            x, y, w, h = a["bbox"]
            jit = rng.normal(0, 0.15 * min(w, h), size=4)
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"] if rng.random() < 0.9 else 3 - a["category_id"],
                         "bbox": [x + jit[0], y + jit[1], max(1.0, w + jit[2]), max(1.0, h + jit[3])],
                         "score": float(rng.uniform(0.05, 1))})
    for _ in range(40):  # false positives
        dets.append({"image_id": int(rng.integers(1, 5)), "category_id": int(rng.integers(1, 3)),
                     "bbox": [float(v) for v in rng.uniform(0, 350, size=2)] + [10.0, 10.0],
                     "score": float(rng.uniform(0.05, 1))})
    return gt, dets


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pycocotools_with_aitod_params(seed):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = _random_case(seed)
    ours = evaluate_detections(gt, dets)

    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.params.areaRng = [[0, 1e5**2]] + list(AITOD_RANGES.values())
    ev.params.areaRngLbl = ["all"] + list(AITOD_RANGES)
    ev.params.maxDets = [1, 100, 1500]
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"]  # [T,R,K,A,M]

    def mean(s: np.ndarray) -> float:
        return float(s[s > -1].mean()) if (s > -1).any() else -1.0

    expected = {"AP": mean(p[:, :, :, 0, 2]), "AP50": mean(p[0, :, :, 0, 2]), "AP75": mean(p[5, :, :, 0, 2]),
                "AP_vt": mean(p[:, :, :, 1, 2]), "AP_t": mean(p[:, :, :, 2, 2]), "AP_s": mean(p[:, :, :, 3, 2]),
                "AP_m": mean(p[:, :, :, 4, 2])}
    assert 0.2 < expected["AP50"] < 0.95  # a non-trivial case
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    assert ours["per_class_AP50"]["car"] == pytest.approx(mean(p[0, :, 0, 0, 2]), abs=1e-6)


def test_one_size_bucket_table_gives_the_scorer_ranges():
    assert [name for name, _, _ in SIZE_BUCKETS] == ["very_tiny", "tiny", "small", "medium"]
    assert AITOD_RANGES == {"verytiny": [0.0, 8.0**2], "tiny": [8.0**2, 16.0**2], "small": [16.0**2, 32.0**2],
                            "medium": [32.0**2, 1e5**2]}


def test_format_metrics_table_side_by_side():
    a = {"AP": 0.1234, "AP50": 0.5, "AP75": 0.0, "AP_vt": -1, "AP_t": 0.2, "AP_s": 0.3, "AP_m": 0.4,
         "per_class_AP50": {"car": 0.25}}
    b = dict(a, AP=0.2, per_class_AP50={"car": 0.5, "ship": 0.125})
    lines = format_metrics_table({"baseline": a, "adla": b}).splitlines()
    assert lines[0].split() == ["metric", "baseline", "adla"]
    assert lines[2].split() == ["AP", "12.3", "20.0"]
    assert lines[5].split() == ["AP_vt", "-", "-"]
    assert lines[-2].split() == ["AP50", "car", "25.0", "50.0"]
    assert lines[-1].split() == ["AP50", "ship", "-", "12.5"]


def test_load_results_accepts_list_or_wrapped(tmp_path):
    det = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]
    for i, payload in enumerate([det, {"annotations": det}, {"detections": det}]):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(payload))
        assert load_results(path) == det
    (tmp_path / "bad.json").write_text(json.dumps({"boxes": []}))
    with pytest.raises(AdlaError, match="bad.json"):
        load_results(tmp_path / "bad.json")


def test_runtime_style_results_are_mapped_by_file_name(tmp_path):
    gt = _gt([[(10, 10, 12, 12, 1)], [(50, 50, 20, 20, 2)]])  # images 1 "0.png", 2 "1.png"
    runtime_out = {"images": [{"id": 1, "file_name": "/scenes/1.png"}],
                   "annotations": [{"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.7}]}
    (tmp_path / "r.json").write_text(json.dumps(runtime_out))
    dets = load_results(tmp_path / "r.json", gt)
    assert [d["image_id"] for d in dets] == [2]
    assert evaluate_detections(gt, dets)["per_class_AP50"]["ship"] == pytest.approx(1.0)
    runtime_out["images"][0]["file_name"] = "other.png"
    (tmp_path / "r.json").write_text(json.dumps(runtime_out))
    with pytest.raises(AdlaError, match="other.png"):
        load_results(tmp_path / "r.json", gt)


def test_runtime_results_map_onto_gt_categories_by_name(tmp_path):
    """The runtime numbers categories 1..C from the model's class names; the GT may use other ids."""
    gt = {"images": [{"id": 7, "file_name": "scene.png", "width": 100, "height": 100}],
          "categories": [{"id": 10, "name": "boat"}, {"id": 20, "name": "car"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 20, "bbox": [10, 10, 8, 8], "area": 64,
                           "iscrowd": 0}]}
    res = {"images": [{"id": 1, "file_name": "scene.png", "width": 100, "height": 100}],
           "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "boat"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 8], "score": 0.9}]}
    path = tmp_path / "scene.coco.json"
    path.write_text(json.dumps(res))
    dets = load_results(path, gt)
    assert dets[0]["category_id"] == 20 and dets[0]["image_id"] == 7
    assert evaluate_detections(gt, dets)["AP50"] == 1.0
    res["categories"][0]["name"] = "plane"
    path.write_text(json.dumps(res))
    with pytest.raises(AdlaError, match="plane"):
        load_results(path, gt)
