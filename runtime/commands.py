"""CLI: ``adla infer`` (tiled inference on scenes) and ``adla bench tiled`` (its benchmark)."""

from __future__ import annotations

import argparse

from adla.runtime.options import DEFAULT_BATCH, DEFAULT_OVERLAP, DEFAULT_TILE, DEFAULT_WORKERS, PREVIEW_SCORE

INFER_EPILOG = """\
MODEL by file type: .pt/.pth checkpoint (torch), .onnx (onnxruntime; CUDA when available),
.engine/.plan (TensorRT, needs the tensorrt package and a GPU; metadata in X.engine.json).
Outputs per scene in --out: STEM.coco.json (COCO dict; category_id = class index + 1),
STEM.geojson (box polygons in the scene's CRS, pixel coordinates when it has none), STEM.preview.jpg.
Detections are merged and written as tiles complete: while a scene runs, STEM.partial.geojsonl
(GeoJSONSeq, one feature per line) holds every final detection so far, so a killed run leaves it
readable; the three outputs appear atomically when the scene ends, then STEM.done.json (the files and
their sizes: --resume skips a scene only when it is there and the files match). A scene is locked
(.STEM.lock) while it runs: a second adla infer into the same --out skips it and says who holds it.
Many scenes over several processes or GPUs: start one process per shard with --shard i/n
(i = 0..n-1); scene k of the (folder-expanded) list goes to shard k % n, e.g.
  CUDA_VISIBLE_DEVICES=0 adla infer scenes/ --model m.onnx --out out --shard 0/2 &
  CUDA_VISIBLE_DEVICES=1 adla infer scenes/ --model m.onnx --out out --shard 1/2
Or let Ray Data run them (pip install 'adla[ray]'): --ray starts a local Ray instance inside the
command; --ray ADDRESS joins a cluster (adla installed on its nodes, files at the same paths there):
  adla infer scenes/ --model m.onnx --out out --ray                  # this machine, 1 actor (CPU)
  adla infer scenes/ --model m.onnx --out out --ray auto --actors 8  # a running cluster, 8 GPU actors
A killed worker costs a retry of its tiles; --resume skips the scenes already written.
The exit status is 1 when any scene failed (each failure is listed after the summary)."""


def _infer(args: argparse.Namespace) -> int:
    from adla.runtime.infer_checks import check_infer_args

    options = check_infer_args(args)  # once, before the first scene
    _print_model(args.model)
    common = {"device": args.device, "shard_spec": args.shard, "preview_size": args.preview_size,
              "preview_score": args.preview_score, "resume": args.resume, "progress": not args.quiet}
    if args.ray is not None:
        from adla.runtime.ray_infer import infer_scenes_ray

        results = infer_scenes_ray(args.scenes, args.model, args.out, options, address=args.ray or None,
                                   actors=args.actors, **common)
    else:
        from adla.runtime.pipeline import infer_scenes

        results = infer_scenes(args.scenes, args.model, args.out, options, **common)
    return 1 if any(r.error for r in results) else 0


def _print_model(model: str) -> None:
    """One line on stderr: the model and its precision (INT8: what it was calibrated on)."""
    import sys
    from pathlib import Path

    from adla.runtime.backends import read_model_meta

    meta = read_model_meta(model)
    print(f"model {Path(model).name}: {meta.precision_note}", file=sys.stderr)


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", type=int, default=None,
                   help=f"tile side in pixels (default: the model's fixed input size, else {DEFAULT_TILE})")
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                   help=f"overlap between tiles, fraction of --tile (default {DEFAULT_OVERLAP})")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"tiles per forward call (default {DEFAULT_BATCH})")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"tile reader threads (default {DEFAULT_WORKERS})")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "infer", help="tiled inference on large scenes (GeoTIFF/PNG/JPEG)",
        description="Detect objects in large scenes tile by tile: windowed reads in background threads, "
                    "batched inference, per-tile NMS, merge across tiles.",
        epilog=INFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenes", nargs="+", metavar="SCENE", help="scene files or folders of scenes")
    p.add_argument("--model", required=True, help="checkpoint (.pt), ONNX (.onnx) or TensorRT engine (.engine)")
    p.add_argument("--out", required=True, help="output folder")
    add_infer_arguments(p)
    p.add_argument("--score", type=float, default=None,
                   help="score threshold (default: the model's own, from the ONNX metadata, the engine's "
                        "sidecar or the checkpoint's eval.score_thr)")
    p.add_argument("--classes", nargs="+", default=None, help="keep only these classes (names or 0-based ids)")
    p.add_argument("--bands", nargs=3, type=int, default=None, metavar="B",
                   help="1-based bands to use as R G B (default: 1 2 3, or band 1 as grey)")
    p.add_argument("--merge-cut", action="store_true",
                   help="fuse boxes of an object cut by a tile border into one box (greedy, IoS >= 0.5, on the "
                        "overlap bands, as SAHI's GREEDYNMM)")
    p.add_argument("--full-pass", action="store_true",
                   help="add a down-scaled whole-scene pass (objects larger than a tile), read decimated "
                        "(from the GeoTIFF's overviews when it has them)")
    p.add_argument("--shard", default=None, metavar="i/n",
                   help="process only scenes k with k %% n == i (i from 0); see below")
    p.add_argument("--preview-size", type=int, default=2048, help="long side of the preview picture; 0: none")
    p.add_argument("--preview-score", type=float, default=PREVIEW_SCORE,
                   help=f"draw boxes of at least this score in the preview (default {PREVIEW_SCORE}; the outputs "
                        "keep all)")
    p.add_argument("--resume", action="store_true",
                   help="skip scenes whose outputs are complete in --out (STEM.done.json, written last, lists them)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray Data: a local Ray instance (no ADDRESS) or the cluster at ADDRESS "
                        "(auto, HOST:PORT, ray://HOST:10001); needs pip install 'adla[ray]'")
    p.add_argument("--actors", type=int, default=None,
                   help="with --ray: model actors (default: one per GPU of the cluster, else 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_infer)


def _bench(args: argparse.Namespace) -> int:
    from adla.runtime.bench import run_bench

    return run_bench(args)


def _bench_merge(args: argparse.Namespace) -> int:
    from adla.runtime.bench_merge import run_bench_merge

    return run_bench_merge(args)


def _bench_accuracy(args: argparse.Namespace) -> int:
    from adla.runtime.bench_accuracy import run_bench_accuracy

    return run_bench_accuracy(args)


def register_bench(bench_subparsers) -> None:
    from adla.runtime.bench import add_bench_arguments

    p = bench_subparsers.add_parser(
        "tiled", help="tiled inference: this runtime vs one-tile-at-a-time (SAHI-like) vs the model alone",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_arguments(p)
    p.set_defaults(func=_bench)
    from adla.runtime.bench_merge import add_merge_arguments

    p = bench_subparsers.add_parser(
        "merge", help="cross-tile merge: local (as tiles complete) vs whole-scene NMS, synthetic dense output")
    add_merge_arguments(p)
    p.set_defaults(func=_bench_merge)
    from adla.runtime.bench_accuracy import add_accuracy_arguments

    p = bench_subparsers.add_parser(
        "accuracy", help="AI-TOD metrics of two or more models (FP32 vs INT8/FP16 ONNX) on a COCO set, each "
                         "through the tiled runtime; AP50 change per class")
    add_accuracy_arguments(p)
    p.set_defaults(func=_bench_accuracy)
