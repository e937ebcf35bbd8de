"""CLI: ``adla evaluate``, the AI-TOD metrics of result files or of a checkpoint run over a COCO set.

In the app layer: scoring a checkpoint runs the detector, and the command line is where the stages and the
core are assembled. ``register(subparsers)`` adds the command; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adla.errors import AdlaError


def register(subparsers: argparse._SubParsersAction) -> None:
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
    ev.add_argument("--score", "--score-thr", dest="score_thr", type=float, default=None,
                    help="score threshold, as adla infer's --score (default: the checkpoint's, 0.05 in the AI-TOD "
                         "setting; --score-thr is its old name)")
    ev.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    ev.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace an --out / --save-results file that adla evaluate did not write")
    ev.set_defaults(func=_evaluate)


def _is_metrics(data: object) -> bool:
    """What ``adla evaluate --out`` writes: a dict with the ground truth, the source and the APs."""
    return isinstance(data, dict) and {"ann", "source", "AP"} <= data.keys()


def _is_results(data: object) -> bool:
    """What ``--save-results`` writes: a list of COCO detections."""
    return isinstance(data, list) and all(isinstance(d, dict) and {"image_id", "score"} <= d.keys() for d in data)


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work: no output is an input, or another output, or a file adla evaluate did not write
    (unless --overwrite)."""
    from adla.checks import check_not_input, check_output_file, check_replaceable, json_is

    inputs = {"--ann": args.ann, "--ckpt": args.ckpt,
              **{f"--results {p}": p for p in args.results or []}}
    outs = ((args.out, "--out", _is_metrics, "a metrics file of adla evaluate"),
            (args.save_results, "--save-results", _is_results, "a COCO results file"))
    for out, flag, ours, kind in outs:
        if out is not None:
            check_output_file(out, flag)
            check_not_input(out, inputs, flag)
            check_replaceable(out, json_is(ours), overwrite=args.overwrite, what=flag, kind=kind)
    if args.out is not None and args.save_results is not None:
        check_not_input(args.save_results, {"--out": args.out}, "--save-results")


def _evaluate(args: argparse.Namespace) -> int:
    from adla.checks import check_device
    from adla.io import write_json
    from adla.metrics import evaluate_detections, format_metrics_table, load_gt, load_results

    check_device(args.device)
    _check_outputs(args)
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

    from adla.checkpoint import load_model
    from adla.checks import resolve_device
    from adla.data.coco import CocoDetection
    from adla.predict import predict_dataset

    device = resolve_device(args.device)  # None: CUDA when present
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
