"""CLI: ``adla data convert``, ``adla data synth`` and ``adla evaluate``.

``register(subparsers)`` adds the commands; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adla.errors import AdlaError


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="convert label formats to COCO json, make synthetic data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{convert,synth}")

    conv = data_sub.add_parser(
        "convert", help="DOTA / YOLO / YOLO-OBB / Airbus CSV labels to COCO json",
        description="Convert labels to COCO json (horizontal boxes, xywh pixels). Without --downscale the json "
                    "references the original images relative to --images; with it, resized PNGs are written to "
                    "--out-images (default: <out stem>_images beside the json).")
    conv.add_argument("--format", required=True, choices=["dota", "yolo", "yolo-obb", "airbus-csv"])
    conv.add_argument("--images", required=True, type=Path, help="image folder")
    conv.add_argument("--labels", required=True, type=Path,
                      help="label folder (same-stem .txt files), or the CSV file for airbus-csv")
    conv.add_argument("--out", required=True, type=Path, help="output COCO json")
    conv.add_argument("--names", type=Path, help="class names: a .names/.txt file (one a line) or a dataset yaml")
    conv.add_argument("--classes", help="class names as a comma-separated list (instead of --names)")
    conv.add_argument("--include", help="glob on image file names, e.g. 'MOS*'")
    conv.add_argument("--downscale", type=float, default=1.0, help="resize factor in (0, 1], e.g. 0.5")
    conv.add_argument("--out-images", type=Path, help="folder for resized images (with --downscale)")
    conv.set_defaults(func=_convert)

    syn = data_sub.add_parser("synth", help="write a synthetic tiny-object data set (train.json, val.json, PNGs)")
    syn.add_argument("--out", required=True, type=Path)
    syn.add_argument("--train", type=int, default=64, help="training images")
    syn.add_argument("--val", type=int, default=16, help="validation images")
    syn.add_argument("--size", type=int, default=256, help="image side in pixels")
    syn.add_argument("--classes", type=int, default=3)
    syn.add_argument("--objects", type=int, default=None, help="objects per image (default: by area)")
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_synth)

    ev = subparsers.add_parser(
        "evaluate", help="AI-TOD metrics (AP, AP50, AP75, AP_vt/t/s/m, per-class AP50) of results or a checkpoint")
    ev.add_argument("--ann", required=True, type=Path, help="ground-truth COCO json")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", type=Path, nargs="+",
                     help="COCO results json (a list, or a dict with an 'annotations'/'detections' list); "
                          "several files, e.g. the per-scene outputs of `adla infer`, are scored together")
    src.add_argument("--ckpt", type=Path, help="checkpoint to run over --images")
    ev.add_argument("--images", type=Path, help="image folder of --ann (with --ckpt)")
    ev.add_argument("--out", type=Path, help="write the metrics as JSON here")
    ev.add_argument("--save-results", type=Path, help="with --ckpt: also write the detections as COCO results")
    ev.add_argument("--batch", type=int, default=2)
    ev.add_argument("--score-thr", type=float, default=None,
                    help="score threshold (default: the checkpoint's, 0.05 in the AI-TOD setting)")
    ev.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    ev.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ev.set_defaults(func=_evaluate)


def _convert(args: argparse.Namespace) -> int:
    from adla.checks import check_output_file, check_writable_dir
    from adla.data.convert import convert_dataset, format_summary

    if args.names and args.classes:
        raise AdlaError("give --names or --classes, not both")
    check_output_file(args.out, "--out")  # before converting, not after
    if args.out_images is not None:
        check_writable_dir(args.out_images, "--out-images")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    summary = convert_dataset(args.format, args.images, args.labels, args.out, class_names=classes,
                              names_file=args.names, include=args.include, downscale=args.downscale,
                              out_images_dir=args.out_images, progress=True)
    print(format_summary(summary))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from adla.data.coco import CocoDetection
    from adla.data.synth import make_synth_dataset

    if args.size < 32 or args.classes < 1 or args.train < 0 or args.val < 0:
        raise AdlaError("need --size >= 32, --classes >= 1 and non-negative --train/--val")
    from adla.checks import check_writable_dir

    check_writable_dir(args.out, "--out")
    rows = []
    for split, n in (("train", args.train), ("val", args.val)):
        if n == 0:
            continue
        ann = make_synth_dataset(args.out, num_images=n, size=(args.size, args.size), num_classes=args.classes,
                                 seed=args.seed, split_name=split, num_objects=args.objects)
        ds = CocoDetection(ann, args.out)
        rows.append((split, str(len(ds)), str(ds.num_boxes), str(ann)))
    header = ("split", "images", "boxes", "json")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"images under {args.out}; train with --images {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from adla.checks import check_device, check_output_file
    from adla.io import write_json
    from adla.metrics import evaluate_detections, format_metrics_table, load_gt, load_results

    check_device(args.device)
    for out, flag in ((args.out, "--out"), (args.save_results, "--save-results")):
        if out is not None:
            check_output_file(out, flag)
    gt = load_gt(args.ann)
    if args.results is not None:
        if args.images or args.save_results:
            raise AdlaError("--images and --save-results go with --ckpt, not --results")
        results = [d for path in args.results for d in load_results(path, gt)]
        name = args.results[0].stem if len(args.results) == 1 else f"{len(args.results)} result files"
    else:
        if args.images is None:
            raise AdlaError("--ckpt needs --images (the image folder of --ann)")
        results = _predict_ckpt(args)
        name = args.ckpt.stem
        if args.save_results:
            write_json(args.save_results, results, indent=None)
    metrics = evaluate_detections(gt, results)
    print(format_metrics_table({name: metrics}))
    print(f"{metrics['num_images']} images, {metrics['num_detections']} detections")
    if args.out:
        write_json(args.out, {"ann": str(args.ann), "source": [str(p) for p in args.results] if args.results else str(args.ckpt), **metrics})
        print(f"metrics written to {args.out}")
    return 0


def _predict_ckpt(args: argparse.Namespace) -> list[dict]:
    import dataclasses
    import warnings

    import torch

    from adla.checkpoint import load_model
    from adla.data.coco import CocoDetection
    from adla.predict import predict_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt = load_model(args.ckpt, device)
    post_cfg = ckpt["run_config"].eval
    if args.score_thr is not None:
        post_cfg = dataclasses.replace(post_cfg, score_thr=args.score_thr)
    dataset = CocoDetection(args.ann, args.images)
    if list(ckpt["class_names"]) != dataset.class_names:
        warnings.warn(f"checkpoint classes {ckpt['class_names']} differ from {args.ann}'s {dataset.class_names}; "
                      "matching them by position", stacklevel=1)
    return predict_dataset(model, dataset, batch_size=args.batch, device=device, post_cfg=post_cfg,
                           num_workers=args.workers)
