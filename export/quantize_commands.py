"""``adla export MODEL --format onnx --int8 | --fp16``: the INT8 (QDQ) and FP16 ONNX models.

MODEL is a checkpoint (exported to FP32 ONNX in a temporary folder first, with the usual checks) or an FP32
ONNX file written by ``adla export``. The FP32 model is never overwritten: the default output is
``<stem>.int8.onnx`` / ``<stem>.fp16.onnx`` and an FP32 model as ``--out`` is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

from adla.errors import AdlaError


def check_low_precision_args(args: argparse.Namespace, out: Path) -> None:
    """One-line AdlaErrors for option sets that cannot work, before any export."""
    if args.int8 and args.fp16:
        raise AdlaError("--int8 and --fp16 exclude each other on ONNX: the INT8 model keeps float where it is "
                        "not quantized; pick one (TensorRT engines: --int8 alone also enables FP16)")
    if not (args.int8 or args.fp16):
        raise AdlaError(f"{args.ckpt.name} is already an ONNX model: add --int8 --calib-images DIR or --fp16 to "
                        "convert it, or export from the checkpoint (.pt)")
    if args.nms:
        raise AdlaError("INT8/FP16 ONNX models are the raw-output variant (decode and NMS stay outside, as the "
                        "runtime runs them): drop --nms")
    if args.int8 and args.calib_images is None:
        raise AdlaError("--int8 needs --calib-images DIR: a folder of real images to calibrate the activations on")
    if args.int8 and args.dynamic_hw:
        raise AdlaError("--int8 is calibrated at one input size: drop --dynamic-hw and give --input-size H W")
    if out.is_file():
        from .quantize import _load, precision_of

        if precision_of(_load(out)) == "fp32":
            raise AdlaError(f"{out.name} is an FP32 model and would be overwritten: write the "
                            f"{'INT8' if args.int8 else 'FP16'} model elsewhere (default <stem>."
                            f"{'int8' if args.int8 else 'fp16'}.onnx)", out)


def _fp32_source(args: argparse.Namespace, tmp: Path) -> Path:
    """The FP32 ONNX file to convert: MODEL itself, or a fresh export of the checkpoint into ``tmp``."""
    from .quantize import _load, check_fp32_source

    if args.ckpt.suffix.lower() == ".onnx":
        check_fp32_source(_load(args.ckpt), args.ckpt)
        return args.ckpt
    from .onnx_export import check_input_size, export_onnx
    from .parity import format_parity

    src = tmp / f"{args.ckpt.stem}.onnx"
    report = export_onnx(args.ckpt, src, input_size=check_input_size(args.input_size), variant="raw",
                         dynamic_hw=args.dynamic_hw, opset=args.opset, check=not args.no_check)
    if report.parity:
        print(format_parity(report.parity))
        if not report.ok():
            raise AdlaError("the FP32 export fails its parity check (onnxruntime and PyTorch disagree): not "
                            "converting it", args.ckpt)
    return src


def export_low_precision(args: argparse.Namespace, out: Path) -> int:
    from .quantize import convert_fp16, quantize_int8

    check_low_precision_args(args, out)
    if args.ckpt.suffix.lower() == ".onnx":  # a quantized MODEL is refused before the images are looked at
        from .quantize import _load, check_fp32_source

        check_fp32_source(_load(args.ckpt), args.ckpt)
    if args.int8:  # the folder is checked before the (slow) FP32 export
        from .quantize import calibration_files

        calibration_files(args.calib_images, args.calib_batch)
    with tempfile.TemporaryDirectory(prefix="adla-export-") as tmp:
        src = _fp32_source(args, Path(tmp))
        if args.fp16:
            rep = convert_fp16(src, out)
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator's progress lines
                rep = quantize_int8(src, out, args.calib_images, max_tiles=args.calib_max, batch=args.calib_batch,
                                    method=args.calib_method, float_outputs=getattr(args, "int8_float_head", False))
    print(f"wrote {rep.path} ({rep.size_mb:.1f} MB): {rep.precision.upper()}, made in {rep.seconds:.1f} s")
    if rep.precision == "int8":
        cal = rep.quantization["calibration"]
        print(f"QDQ: {rep.num_qdq} QuantizeLinear/DequantizeLinear nodes, weights {rep.quantization['weights']}, "
              f"activations {rep.quantization['activations']}, calibrated ({cal['method']}) on {cal['tiles']} "
              f"tiles of {cal['images']} images in {cal['folder']}")
    return 0
