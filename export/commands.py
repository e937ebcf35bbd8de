"""CLI: ``adla export CKPT --format onnx|engine ...`` and ``adla bench model CKPT [CKPT ...]``.

Heavy imports (torch.onnx, onnxruntime, tensorrt) happen inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adla.errors import AdlaError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a checkpoint's detector to ONNX or a TensorRT engine",
        description="Export the unchanged detector. ONNX: input 'images' float32 [B,3,H,W] RGB 0-255; raw "
                    "outputs cls_logits [B,N,C], box_deltas [B,N,4]; with --nms: num_dets [B], boxes [B,K,4] "
                    "xyxy px, scores [B,K], labels [B,K] (padded, sorted). Metadata under the 'adla' key.")
    p.add_argument("ckpt", type=Path, metavar="MODEL",
                   help="checkpoint (.pt) written by adla train; with --format onnx --int8/--fp16 also an FP32 "
                        ".onnx written by adla export")
    p.add_argument("--format", choices=("onnx", "engine"), default="onnx")
    p.add_argument("--out", "-o", type=Path, default=None,
                   help="output file (default: beside the checkpoint, .onnx / -nms.onnx / .engine)")
    p.add_argument("--input-size", nargs=2, type=int, default=[800, 800], metavar=("H", "W"),
                   help="input height and width, multiples of 32 (default 800 800)")
    p.add_argument("--dynamic-hw", action="store_true",
                   help="ONNX: dynamic height/width too (raw variant only; --nms needs a fixed size)")
    p.add_argument("--nms", nargs="?", const="native", default=None, choices=("native", "efficient"),
                   help="decode + NMS inside the graph. ONNX: NonMaxSuppression. Engine: 'native' (default; "
                        "TensorRT >= 8.5 INMSLayer) or 'efficient' (EfficientNMS_TRT plugin)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--check-images", type=Path, default=None,
                   help="ONNX: folder of real images; centre tiles are added to the parity check")
    p.add_argument("--no-check", action="store_true", help="ONNX: skip onnx.checker and the parity check")
    q = p.add_argument_group("precision (ONNX and engine)")
    q.add_argument("--fp16", action="store_true",
                   help="ONNX: half weights and activations, float32 input/outputs (<stem>.fp16.onnx); engine: FP16")
    q.add_argument("--int8", action="store_true",
                   help="ONNX: a QDQ INT8 model (<stem>.int8.onnx) calibrated on --calib-images; engine: INT8 "
                        "(TensorRT 11+: from that QDQ model; TensorRT <= 10: entropy calibrator, see --int8-path)")
    q.add_argument("--calib-images", type=Path, default=None,
                   help="folder of real images of the deployment imagery; tiles at the input size are cut from them")
    q.add_argument("--calib-max", type=int, default=64, help="INT8: at most this many calibration tiles (default 64)")
    q.add_argument("--calib-batch", type=int, default=8, help="INT8: calibration batch (default 8)")
    q.add_argument("--calib-method", choices=("entropy", "minmax", "percentile"), default="entropy",
                   help="INT8 QDQ: activation range method (default entropy, TensorRT's own)")
    q.add_argument("--int8-float-head", action="store_true",
                   help="INT8 ONNX: keep the head's last convolutions (class logits, box deltas) in float")
    g = p.add_argument_group("TensorRT engine")
    g.add_argument("--int8-path", choices=("auto", "qdq", "calibrator"), default="auto",
                   help="engine INT8: qdq (explicit, TensorRT 10 and 11), calibrator (implicit, TensorRT <= 10 "
                        "only) or auto (calibrator where TensorRT has one, else qdq)")
    g.add_argument("--calib-cache", type=Path, default=None, help="calibration cache (default <engine>.calib.cache)")
    g.add_argument("--timing-cache", type=Path, default=None,
                   help="timing cache, loaded and saved (default adla.timing.cache beside the engine)")
    g.add_argument("--workspace-gb", type=float, default=4.0)
    g.add_argument("--min-batch", type=int, default=1)
    g.add_argument("--opt-batch", type=int, default=8)
    g.add_argument("--max-batch", type=int, default=16)
    p.set_defaults(func=run_export)


def _default_out(args: argparse.Namespace) -> Path:
    ckpt: Path = args.ckpt
    if args.format == "engine":
        return ckpt.with_name(ckpt.stem + ("" if not args.nms else f"-nms-{args.nms}") + ".engine")
    precision = ".int8" if args.int8 else ".fp16" if args.fp16 else ""
    return ckpt.with_name(ckpt.stem + ("-nms" if args.nms else "") + precision + ".onnx")


def run_export(args: argparse.Namespace) -> int:
    from adla.checks import check_output, check_output_file, check_readable_file

    check_readable_file(args.ckpt, "checkpoint")
    out = check_output_file(args.out or _default_out(args), "--out")  # before the export, not after
    from .onnx_export import read_metadata
    check_output(out, {"checkpoint": args.ckpt}, ours=read_metadata, overwrite=getattr(args, "overwrite", None),
                 kind="a model exported by adla")  # not onto the checkpoint, nor a file adla did not export
    if args.format == "engine":
        return _export_engine(args, out)
    if args.int8 or args.fp16 or args.ckpt.suffix.lower() == ".onnx":
        from .quantize_commands import export_low_precision

        return export_low_precision(args, out)
    from .onnx_export import check_input_size, export_onnx
    from .parity import format_parity, image_files, load_tiles

    if args.nms == "efficient":
        raise AdlaError("--nms efficient is a TensorRT plugin: use it with --format engine "
                        "(ONNX --nms uses the standard NonMaxSuppression)")
    size = check_input_size(args.input_size)
    tiles = None
    if args.check_images is not None and not args.no_check:
        tiles = load_tiles(image_files(args.check_images), size, limit=4)
    report = export_onnx(args.ckpt, out, input_size=size, variant="nms" if args.nms else "raw",
                         dynamic_hw=args.dynamic_hw, opset=args.opset, check=not args.no_check, check_images=tiles)
    print(f"wrote {report.path} ({report.size_mb:.1f} MB): variant {report.variant}, opset {report.opset}, "
          f"{report.num_nodes} nodes, input {'B x 3 x H x W (dynamic)' if args.dynamic_hw else f'B x 3 x {size[0]} x {size[1]}'}"
          f", exported in {report.export_s:.1f} s")
    if report.parity:
        print(format_parity(report.parity))
        if not report.ok():
            print("parity check FAILED: onnxruntime and PyTorch disagree beyond the tolerances")
            return 1
    return 0


def _export_engine(args: argparse.Namespace, out: Path) -> int:
    from .tensorrt_build import EngineOptions, build_engine

    opts = EngineOptions(
        input_size=tuple(args.input_size), fp16=args.fp16, int8=args.int8, int8_path=args.int8_path,
        calib_max_images=args.calib_max, calib_batch=args.calib_batch, calib_method=args.calib_method,
        calib_images=str(args.calib_images) if args.calib_images else None,
        calib_cache=str(args.calib_cache) if args.calib_cache else None, nms=args.nms,
        workspace_gb=args.workspace_gb, min_batch=args.min_batch, opt_batch=args.opt_batch,
        max_batch=args.max_batch, timing_cache=str(args.timing_cache) if args.timing_cache else None)
    rep = build_engine(args.ckpt, out, opts)
    print(f"wrote {rep.path} ({rep.size_mb:.1f} MB) and {rep.sidecar.name}: TensorRT {rep.tensorrt_version}, "
          f"{rep.precision}{f' ({rep.int8_path})' if rep.int8_path else ''}, NMS {rep.nms or 'outside'}, "
          f"batch {rep.batch_profile}")
    return 0


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    p = bench_subparsers.add_parser(
        "model", help="parameters, FLOPs and latency of checkpoints; baseline vs ADLA comparison",
        description="Profile one or more checkpoints. With two or more, the others are compared with the "
                    "first: parameters, FLOPs, ONNX graphs up to weights, and the interleaved latency ratio.")
    p.add_argument("ckpts", type=Path, nargs="+")
    p.add_argument("--input-size", nargs=2, type=int, default=[800, 800], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "tensorrt"],
                   choices=("torch", "onnxruntime", "tensorrt"),
                   help="tensorrt is skipped (with a note) when TensorRT or a GPU is absent")
    p.add_argument("--out", type=Path, default=None, help="folder for model_bench.json/.txt/.png")
    p.add_argument("--calib-images", type=Path, default=None,
                   help="also make each checkpoint's INT8 QDQ model (calibrated on these images): its onnxruntime "
                        "latency, and whether the QDQ graphs are identical up to weights and scales")
    p.set_defaults(func=run_bench_model)


def run_bench_model(args: argparse.Namespace) -> int:
    from .profile import compare_models, format_model_table

    result = compare_models(list(args.ckpts), input_size=tuple(args.input_size), batch=args.batch, runs=args.runs,
                            warmup=args.warmup, out_dir=args.out, backends=tuple(args.backends),
                            calib_images=args.calib_images)
    print(format_model_table(result))
    if args.out is not None:
        print(f"wrote {args.out / 'model_bench.json'}, model_bench.txt, model_bench.png")
    return 0
