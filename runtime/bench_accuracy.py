"""``adla bench accuracy``: the AI-TOD metrics of two or more models (FP32 vs INT8/FP16 ONNX, a checkpoint,
an engine) on one COCO set, each run through the tiled runtime exactly as ``adla infer`` runs it.

Every image of the set is a scene: tiles, batches, per-tile decode + NMS and the cross-tile merge of
``adla.runtime.pipeline.infer_scene``, with the model's own score threshold unless ``--score`` says
otherwise. Detections are matched to the ground truth's categories by class name (by position when the
names differ), scored by ``adla.metrics.evaluate_detections``, and printed side by side, with the change of
AP50 per ``--classes`` against the first model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adla.errors import AdlaError


def add_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ann", required=True, type=Path, help="ground-truth COCO json")
    p.add_argument("--images", required=True, type=Path, help="image folder of --ann")
    p.add_argument("--model", action="append", required=True,
                   help="model file (.onnx, .int8.onnx, .fp16.onnx, .pt, .engine); give it two or more times")
    p.add_argument("--classes", nargs="+", default=None,
                   help="classes whose AP50 change is reported (default: every class of the ground truth)")
    p.add_argument("--tile", type=int, default=None, help="tile side (default: the model's input size)")
    p.add_argument("--overlap", type=float, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--score", type=float, default=None, help="score threshold (default: the model's own)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="write the metrics of every model as JSON here")


def _category_ids(class_names: tuple[str, ...], gt: dict) -> list[int]:
    """COCO category id per model class: by name, else by position (sorted category ids)."""
    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    if all(n in by_name for n in class_names):
        return [by_name[n] for n in class_names]
    ids = sorted(c["id"] for c in gt["categories"])
    if len(ids) < len(class_names):
        raise AdlaError(f"the model has {len(class_names)} classes {list(class_names)}, the ground truth "
                        f"{len(ids)} {[c['name'] for c in gt['categories']]}: they cannot be matched")
    return ids[: len(class_names)]


def predict_coco(model: str, gt: dict, images: Path, options, device: str = "auto") -> list[dict]:
    """COCO results (image_id, category_id, bbox [x,y,w,h] px, score) of ``model`` over the images of
    ``gt``, each image run as a scene through ``infer_scene``."""
    from adla.runtime.backends import load_backend
    from adla.runtime.pipeline import infer_scene

    backend = load_backend(model, device)
    cat_ids = _category_ids(backend.meta.class_names, gt)
    results: list[dict] = []
    for img in gt["images"]:
        path = images / img["file_name"]
        if not path.is_file():
            raise AdlaError(f"image {img['file_name']} of the ground truth not found in --images", images)
        r = infer_scene(path, backend, options, progress=False)
        for box, score, label in zip(r.boxes.tolist(), r.scores.tolist(), r.labels.tolist()):
            x1, y1, x2, y2 = box
            results.append({"image_id": img["id"], "category_id": cat_ids[int(label)],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def _options(args: argparse.Namespace, model: str):
    from adla.runtime.backends import read_model_meta
    from adla.runtime.options import DEFAULT_BATCH, DEFAULT_OVERLAP, DEFAULT_TILE, TileOptions

    size = read_model_meta(model).input_size
    return TileOptions(tile=args.tile or (size[0] if size else DEFAULT_TILE),
                       overlap=DEFAULT_OVERLAP if args.overlap is None else args.overlap,
                       batch=args.batch or DEFAULT_BATCH, score_thr=args.score)


def run_bench_accuracy(args: argparse.Namespace) -> int:
    from adla.io import write_json
    from adla.metrics import evaluate_detections, format_metrics_table, load_gt
    from adla.runtime.backends import read_model_meta

    if len(args.model) < 2:
        raise AdlaError("give two or more models (--model FP32.onnx --model INT8.onnx)")
    if not args.images.is_dir():
        raise AdlaError("image folder not found", args.images)
    gt = load_gt(args.ann)
    names = [Path(m).name for m in args.model]
    if len(set(names)) < len(names):
        names = [str(m) for m in args.model]
    metrics: dict[str, dict] = {}
    for name, model in zip(names, args.model):
        results = predict_coco(model, gt, args.images, _options(args, model), args.device)
        metrics[name] = evaluate_detections(gt, results)
        print(f"{name}: {read_model_meta(model).precision_note}; {len(results)} detections")
    print(format_metrics_table(metrics))
    classes = args.classes or [c["name"] for c in gt["categories"]]
    ref = metrics[names[0]]
    for name in names[1:]:
        for c in classes:
            a = ref.get("per_class_AP50", {}).get(c)
            b = metrics[name].get("per_class_AP50", {}).get(c)
            if a is None or b is None:
                raise AdlaError(f"class {c!r} is not in the ground truth's categories")
            print(f"{c} AP50: {name} {100 * b:.1f} vs {names[0]} {100 * a:.1f} ({100 * (b - a):+.1f})")
    if args.out is not None:
        write_json(args.out, {"ann": str(args.ann), "models": dict(zip(names, args.model)), "metrics": metrics})
        print(f"metrics written to {args.out}")
    return 0
