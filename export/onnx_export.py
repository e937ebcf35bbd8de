"""Export a checkpoint's detector to ONNX, with its metadata (onnxruntime sessions: ``session.make_session``).

Graph contract (the runtime relies on these names):

- input ``images``: float32 [B,3,H,W], RGB 0-255 (normalisation is inside the graph); B is dynamic,
  H and W too with ``dynamic_hw=True``.
- variant ``raw``: outputs ``cls_logits`` [B,N,C] (logits, before sigmoid) and ``box_deltas`` [B,N,4]
  (DeltaXYWH, means 0, stds 1) for the anchors of ``adla.anchors.generate_anchors(spec, H, W)``; decode
  and NMS run outside (``adla.postprocess.postprocess``).
- variant ``nms``: outputs ``num_dets`` [B] int64, ``boxes`` [B,K,4] float32 xyxy pixels of the input,
  ``scores`` [B,K] float32, ``labels`` [B,K] int64 0-based; K = min(max_dets, pre_nms_topk, N*C) is
  fixed; rows are sorted by score and rows from num_dets on are padding (zero box, score 0, label -1).
  The anchors are a constant of the graph, so this variant needs a fixed input size: ``nms`` with
  ``dynamic_hw`` is refused (export the raw variant for variable tile sizes).
- metadata_props key ``"adla"``: JSON with class_names, num_classes, input_size [H,W] (null when dynamic),
  strides, anchors, normalization, score_thr, nms_iou, pre_nms_topk, max_dets, assigner, variant,
  adla_version, checkpoint (file name), and for the nms variant its output format.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript). On this detector it gives
a clean graph: batch norms folded into the convs, constants folded by its optimiser, no Identity or
shape-arithmetic chains (106 nodes for the tiny model against 198 from the legacy TorchScript exporter),
and a symbolic batch dimension. The NMS variant's ``adla::nms_select`` op is translated to one ONNX
``NonMaxSuppression`` node through ``custom_translation_table``; the legacy exporter, deprecated in
torch 2.9, is not used.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import adla
from adla.anchors import DEFAULT_MAX_STRIDE, generate_anchors
from adla.checkpoint import load_model
from adla.config import to_dict
from adla.errors import AdlaError
from adla.io import atomic_path, read_json
from adla.postprocess import PostprocessConfig

from .adapters import ONNX_TRANSLATIONS, NMSAdapter, RawAdapter
from .parity import random_images, run_parity

VARIANTS = ("raw", "nms")
OUTPUT_NAMES = {"raw": ["cls_logits", "box_deltas"], "nms": ["num_dets", "boxes", "scores", "labels"]}
METADATA_KEY = "adla"
NMS_FORMAT = ("num_dets [B] int64; boxes [B,K,4] float32 xyxy px; scores [B,K] float32 sorted; "
              "labels [B,K] int64 0-based; rows >= num_dets are padding (0 box, score 0, label -1)")


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how closely onnxruntime reproduces PyTorch on it."""

    path: Path
    variant: str
    opset: int
    input_size: tuple[int, int]
    dynamic_hw: bool
    num_nodes: int
    size_mb: float
    export_s: float
    parity: list[Any] = field(default_factory=list)  # adla.export.parity.ParityResult per input set

    def ok(self) -> bool:
        return all(p.ok for p in self.parity)


def check_input_size(input_size: tuple[int, int] | list[int],
                     stride: int = DEFAULT_MAX_STRIDE) -> tuple[int, int]:
    """(H, W) as ints; both must be positive multiples of ``stride``, the detector's largest
    (``AnchorSpec.max_stride``; before a checkpoint is read, the default anchors')."""
    if len(input_size) != 2:
        raise AdlaError(f"input size must be two numbers H W, got {list(input_size)}")
    h, w = int(input_size[0]), int(input_size[1])
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise AdlaError(f"input size {h}x{w} must be positive multiples of {stride} (e.g. 800 800)")
    return h, w


def build_metadata(ckpt: dict, ckpt_path: str | Path, variant: str,
                   input_size: tuple[int, int] | None) -> dict:
    """The ``adla`` metadata of an exported model (also the engine sidecar's core)."""
    cfg = ckpt["run_config"]
    mc = cfg.model
    meta = {
        "class_names": list(ckpt["class_names"]),
        "num_classes": mc.num_classes,
        "input_size": list(input_size) if input_size is not None else None,
        "strides": list(mc.anchors.strides),
        "anchors": mc.anchors.to_dict(),
        "normalization": {"mean": list(mc.pixel_mean), "std": list(mc.pixel_std), "input": "RGB float32 0-255"},
        "score_thr": cfg.eval.score_thr,
        "nms_iou": cfg.eval.nms_iou,
        "pre_nms_topk": cfg.eval.pre_nms_topk,
        "max_dets": cfg.eval.max_dets,
        "assigner": to_dict(cfg.assigner),
        "variant": variant,
        "adla_version": adla.__version__,
        "checkpoint": Path(ckpt_path).name,
        "input_names": ["images"],
        "output_names": OUTPUT_NAMES.get(variant, []),
    }
    if variant == "nms":
        meta["output_format"] = NMS_FORMAT
    return meta


def read_metadata(path: str | Path) -> dict:
    """The ``adla`` metadata of an ``.onnx`` file, or of an ``.engine`` through its sidecar ``<engine>.json``."""
    path = Path(path)
    if path.suffix in (".engine", ".plan"):
        side = path.with_name(path.name + ".json")
        if not side.is_file():
            raise AdlaError(f"engine metadata sidecar {side.name} not found beside the engine", path)
        return read_json(side, "engine metadata sidecar")
    import onnx

    if not path.is_file():
        raise AdlaError("ONNX file not found", path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise AdlaError(f"not a readable ONNX file ({exc.__class__.__name__}: {exc})", path) from exc
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise AdlaError(f"ONNX file has no {METADATA_KEY!r} metadata (not exported by adla)", path)


def _dynamic_shapes(dynamic_hw: bool, stride: int = DEFAULT_MAX_STRIDE) -> dict:
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims: dict[int, Any] = {0: batch}
    if dynamic_hw:
        # multiples of the largest stride keep every FPN level's size an exact division of the input's
        dims[2] = stride * torch.export.Dim("h32", min=1, max=1024)
        dims[3] = stride * torch.export.Dim("w32", min=1, max=1024)
    return {"images": dims}


def build_adapter(model: torch.nn.Module, ckpt: dict, variant: str,
                  input_size: tuple[int, int]) -> torch.nn.Module:
    """The module to export for ``variant`` ("raw" or "nms"), wrapping the unchanged detector."""
    if variant == "raw":
        return RawAdapter(model).eval()
    cfg = ckpt["run_config"]
    anchors = generate_anchors(cfg.model.anchors, *input_size)
    pp: PostprocessConfig = cfg.eval
    return NMSAdapter(model, anchors, input_size, cfg.model.num_classes, pp).eval()


def to_onnx_proto(module: torch.nn.Module, example: torch.Tensor, output_names: list[str], *,
                  dynamic_hw: bool, opset: int, stride: int = DEFAULT_MAX_STRIDE):
    """Trace ``module`` with the dynamo exporter and return the optimised (constant-folded) ModelProto;
    with ``dynamic_hw``, H and W are multiples of ``stride`` (the detector's ``AnchorSpec.max_stride``)."""
    buf = io.StringIO()
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in quiet]
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), torch.no_grad():
        warnings.simplefilter("ignore")
        for lg in quiet:  # progress lines and the "converting opset 18 to 17" notes
            lg.setLevel(logging.ERROR)
        try:
            program = _export(module, example, output_names, dynamic_hw, opset, stride)
        finally:
            for lg, level in zip(quiet, levels):
                lg.setLevel(level)
    if program is None:
        raise AdlaError("torch.onnx.export returned no program")
    return program.model_proto


def _export(module: torch.nn.Module, example: torch.Tensor, output_names: list[str], dynamic_hw: bool,
            opset: int, stride: int = DEFAULT_MAX_STRIDE) -> Any:
    return torch.onnx.export(
        module, (example,), None, dynamo=True, opset_version=opset, input_names=["images"],
        output_names=output_names, dynamic_shapes=(_dynamic_shapes(dynamic_hw, stride)["images"],),
        custom_translation_table=ONNX_TRANSLATIONS, optimize=True, verbose=False, report=False,
    )


def export_onnx(ckpt_path: str | Path, out_path: str | Path, *, input_size: tuple[int, int] = (800, 800),
                variant: str = "raw", dynamic_hw: bool = False, opset: int = 17, check: bool = True,
                check_images: torch.Tensor | None = None) -> ExportReport:
    """Export the checkpoint's detector to ``out_path`` (written atomically) and check it.

    ``check``: ``onnx.checker`` (full check) and onnxruntime-vs-PyTorch parity on a random batch of 2
    (and on ``check_images`` [B,3,H,W] RGB 0-255 when given); the figures are in ``report.parity``.
    An export that fails the checker raises AdlaError and leaves no file.
    """
    import onnx

    if variant not in VARIANTS:
        raise AdlaError(f"unknown ONNX variant {variant!r}; choose one of {VARIANTS}")
    if opset < 17:
        raise AdlaError(f"opset {opset} is too old: adla exports opset 17 or newer")
    input_size = check_input_size(input_size)  # before the checkpoint is read: the default anchors' stride
    if variant == "nms" and dynamic_hw:
        raise AdlaError("--nms needs a fixed input size (its anchors are a constant of the graph); "
                        "export the raw variant with --dynamic-hw, or drop --dynamic-hw")
    model, ckpt = load_model(ckpt_path, "cpu")
    stride = ckpt["run_config"].model.anchors.max_stride
    input_size = check_input_size(input_size, stride)  # again, against this detector's own largest stride
    module = build_adapter(model, ckpt, variant, input_size)
    example = torch.rand(2, 3, *input_size) * 255
    t0 = time.perf_counter()
    try:
        proto = to_onnx_proto(module, example, OUTPUT_NAMES[variant], dynamic_hw=dynamic_hw, opset=opset,
                              stride=stride)
    except AdlaError:
        raise
    except Exception as exc:
        raise AdlaError(f"ONNX export failed ({exc.__class__.__name__}: {str(exc).splitlines()[0]})",
                        ckpt_path) from exc
    export_s = time.perf_counter() - t0
    meta = build_metadata(ckpt, ckpt_path, variant, None if dynamic_hw else input_size)
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
    proto.producer_name = "adla"
    proto.producer_version = adla.__version__
    got_opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    out_path = Path(out_path)
    report = ExportReport(out_path, variant, got_opset, input_size, dynamic_hw, len(proto.graph.node), 0.0,
                          export_s)
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
        if check:
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except onnx.checker.ValidationError as exc:
                raise AdlaError(f"exported graph fails onnx.checker: {exc}", out_path) from exc
            report.parity.append(run_parity(model, ckpt, tmp, random_images(2, input_size, seed=0),
                                            variant, "random x2"))
            if check_images is not None:
                report.parity.append(run_parity(model, ckpt, tmp, check_images, variant,
                                                f"real tiles x{check_images.shape[0]}"))
    report.size_mb = out_path.stat().st_size / 2**20
    return report
