"""Build a TensorRT engine from the exported ONNX graph with the TensorRT Python API.

Steps: export ONNX (``adla.export.onnx_export``) into a temporary folder -> ``trt.Builder`` -> network from
``trt.OnnxParser`` (explicit batch) -> ``IBuilderConfig`` (workspace pool limit, an optimisation profile
for the batch dimension, precision, a timing cache loaded and saved) -> ``build_serialized_network`` -> the
engine file and its sidecar ``<engine>.json`` (the ONNX metadata plus TensorRT version, precision, INT8 path,
batch profile), both atomic.

Precision, by what the TensorRT in use offers (``precision_plan``; checked on the real 10.x and 11.x
bindings by ``scripts/trt_api_check.py``):
- TensorRT <= 10 (weakly typed networks, ``BuilderFlag.FP16``/``INT8``): FP16 by the flag; INT8 either by the
  entropy calibrator (``IInt8EntropyCalibrator2`` fed real tiles, with a calibration cache; the JetPack
  path) or, with ``int8_path="qdq"``, from the QDQ model (INT8 and FP16 flags, no calibrator).
- TensorRT 11+ (no calibrators, no precision flags: strongly typed networks): INT8 from the QDQ model of
  ``adla.export.quantize`` (explicit quantization), FP16 from the FP16 ONNX model (float32 at the edges).

NMS (``nms``):
- ``None``: raw heads (``cls_logits``, ``box_deltas``), decode + NMS outside, as the raw ONNX variant.
- ``"native"``: the ONNX ``nms`` variant; TensorRT >= 8.5 parses its ``NonMaxSuppression`` into the
  native INMSLayer (at most 5,000 boxes in). Outputs as the ONNX nms variant (num_dets, boxes, scores,
  labels).
- ``"efficient"``: the network decodes (boxes [B,N,4] xyxy px, sigmoid scores [B,N,C]) and ends in the
  ``EfficientNMS_TRT`` plugin (deprecated since TensorRT 10.12, best on JetPack's older TensorRT).
  Outputs ``num_detections`` [B,1] int32, ``detection_boxes`` [B,K,4] float32 xyxy px,
  ``detection_scores`` [B,K], ``detection_classes`` [B,K] int32, K = min(max_dets, 4096).

``tensorrt`` is imported inside the functions: without it every entry point raises an AdlaError that
says what to install, before anything is written.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adla.errors import AdlaError
from adla.io import atomic_path, write_json

if TYPE_CHECKING:
    import tensorrt as trt
    from typing_extensions import Buffer

NMS_MODES = (None, "native", "efficient")
EFFICIENT_NMS_MAX = 4096  # EfficientNMS_TRT keeps at most this many top scores
NATIVE_NMS_MAX_IN = 5000  # INMSLayer's input box limit
EFFICIENT_OUTPUTS = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
EFFICIENT_FORMAT = ("num_detections [B,1] int32; detection_boxes [B,K,4] float32 xyxy px; detection_scores "
                    "[B,K] float32 sorted; detection_classes [B,K] int32 0-based; rows >= num_detections are "
                    "padding")
INSTALL_HINT = ("TensorRT is not installed: `pip install tensorrt` on a Linux machine with an NVIDIA GPU and "
                "driver (on Jetson it comes with JetPack); ONNX export works without it (--format onnx)")


@dataclass(frozen=True)
class EngineOptions:
    """What to build. Batch profile min <= opt <= max; INT8 needs calibration images or a cache."""

    input_size: tuple[int, int] = (800, 800)
    fp16: bool = False
    int8: bool = False
    calib_images: str | None = None
    calib_cache: str | None = None  # default: <engine>.calib.cache
    calib_batch: int = 8
    calib_max_images: int = 512  # calibrator: images; qdq: tiles
    calib_method: str = "entropy"  # qdq only: entropy, minmax or percentile
    int8_path: str = "auto"  # auto, qdq or calibrator
    nms: str | None = None
    workspace_gb: float = 4.0
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 16
    timing_cache: str | None = None  # default: <engine folder>/adla.timing.cache


@dataclass
class EngineReport:
    path: Path
    sidecar: Path
    tensorrt_version: str
    precision: str
    nms: str | None
    batch_profile: dict[str, int]
    size_mb: float
    int8_path: str | None = None  # "qdq" or "calibrator" for INT8 engines


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or an AdlaError naming what to install."""
    try:
        import tensorrt
    except ImportError as exc:  # also the PyPI stub that failed to fetch the real wheel
        raise AdlaError(INSTALL_HINT) from exc
    if not hasattr(tensorrt, "Builder"):
        raise AdlaError(INSTALL_HINT)
    return tensorrt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except AdlaError:
        return False
    return True


def check_options(opts: EngineOptions) -> None:
    """AdlaError for an inconsistent option set (checked before any work or file)."""
    if opts.nms not in NMS_MODES:
        raise AdlaError(f"unknown NMS mode {opts.nms!r}; choose native or efficient")
    if not 1 <= opts.min_batch <= opts.opt_batch <= opts.max_batch:
        raise AdlaError(f"batch profile must satisfy 1 <= min <= opt <= max, got {opts.min_batch}, "
                        f"{opts.opt_batch}, {opts.max_batch}")
    if opts.workspace_gb <= 0:
        raise AdlaError(f"workspace must be positive, got {opts.workspace_gb} GB")
    if opts.int8 and not opts.calib_images and not (opts.calib_cache and Path(opts.calib_cache).is_file()):
        raise AdlaError("--int8 needs --calib-images DIR (real tiles) or an existing calibration cache")
    if opts.calib_images and not Path(opts.calib_images).is_dir():
        raise AdlaError("calibration image folder not found", opts.calib_images)


def precision_name(opts: EngineOptions) -> str:
    return "int8" if opts.int8 else "fp16" if opts.fp16 else "fp32"


INT8_PATHS = ("auto", "qdq", "calibrator")
QDQ_MIN_MAJOR = 8  # explicit quantization (QDQ) is parsed from TensorRT 8.0 on


def trt_major(trt_mod: Any) -> int:
    return int(str(trt_mod.__version__).split(".")[0])


def weakly_typed(trt_mod: Any) -> bool:
    """Whether this TensorRT has the precision flags of weakly typed networks (gone in TensorRT 11)."""
    return hasattr(trt_mod.BuilderFlag, "FP16")


def choose_int8_path(trt_mod: Any, requested: str = "auto") -> str:
    """"calibrator" or "qdq" for an INT8 build with this TensorRT; AdlaError when it cannot do ``requested``."""
    version = trt_mod.__version__
    if requested not in INT8_PATHS:
        raise AdlaError(f"unknown INT8 path {requested!r}; choose one of {', '.join(INT8_PATHS)}")
    has_calibrator = hasattr(trt_mod, "IInt8EntropyCalibrator2")
    if requested == "calibrator" and not has_calibrator:
        raise AdlaError(f"TensorRT {version} has no INT8 calibrator (implicit INT8 was removed in TensorRT 11): "
                        "use --int8-path qdq (or auto), which builds from the calibrated QDQ model")
    if requested == "qdq" and trt_major(trt_mod) < QDQ_MIN_MAJOR:
        raise AdlaError(f"TensorRT {version} is too old for QDQ INT8 models (needs {QDQ_MIN_MAJOR}.0 or newer): "
                        "upgrade TensorRT or use --int8-path calibrator")
    if requested == "auto":
        return "calibrator" if has_calibrator else "qdq"
    return requested


def precision_plan(trt_mod: Any, opts: EngineOptions) -> dict:
    """How this TensorRT builds ``opts``: {"int8_path": None | "qdq" | "calibrator", "graph": "fp32" |
    "fp16" | "int8" (the ONNX model parsed), "flags": [BuilderFlag names], "strongly_typed": bool}."""
    weak = weakly_typed(trt_mod)
    plan: dict[str, Any] = {"int8_path": None, "graph": "fp32", "flags": [], "strongly_typed": not weak}
    if opts.int8:
        plan["int8_path"] = choose_int8_path(trt_mod, opts.int8_path)
        if plan["int8_path"] == "qdq":
            plan["graph"] = "int8"
        if weak:  # INT8 keeps FP16 for the layers it cannot quantise
            plan["flags"] = ["FP16", "INT8"]
    elif opts.fp16:
        if weak:
            plan["flags"] = ["FP16"]
        else:
            plan["graph"] = "fp16"
    return plan


def describe_plan(trt_mod: Any, plan: dict) -> str:
    """One line: which path the build takes."""
    typing = "strongly typed network" if plan["strongly_typed"] else "weakly typed network"
    flags = f"flags {'+'.join(plan['flags'])}" if plan["flags"] else "no precision flags"
    how = {"calibrator": "INT8 by the entropy calibrator (implicit quantization)",
           "qdq": "INT8 from the QDQ model (explicit quantization, no calibrator)"}.get(plan["int8_path"] or "",
                                                                                        f"{plan['graph'].upper()} ONNX")
    return f"TensorRT {trt_mod.__version__}: {how}; {typing}, {flags}"


def make_calibrator(files: list[Path], input_size: tuple[int, int], batch: int,
                    cache_path: Path) -> trt.IInt8EntropyCalibrator2:  # trt<=10
    """An ``IInt8EntropyCalibrator2`` feeding tiles of ``files`` ([batch,3,H,W] RGB 0-255, centre crops
    zero-padded to the input size) from a CUDA buffer, reading/writing ``cache_path``."""
    import tensorrt as trt

    from .parity import load_tiles

    class TileCalibrator(trt.IInt8EntropyCalibrator2):  # trt<=10
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # trt<=10
            self.files = files
            self.batch = batch
            self.next_index = 0
            self.device_input = torch.zeros((batch, 3, *input_size), dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names: list[str]) -> list[int]:
            if self.next_index >= len(self.files):
                return []  # no more data: calibration ends
            chunk = self.files[self.next_index : self.next_index + self.batch]
            self.next_index += self.batch
            tiles = load_tiles(chunk, input_size)
            self.device_input.zero_()
            self.device_input[: len(chunk)].copy_(tiles)
            return [int(self.device_input.data_ptr())]

        def read_calibration_cache(self) -> bytes:
            if cache_path.is_file():
                return cache_path.read_bytes()
            return None  # type: ignore[return-value]  # TensorRT: None means "calibrate"; stubs say Buffer

        def write_calibration_cache(self, cache: Buffer) -> None:
            with atomic_path(cache_path) as tmp:
                tmp.write_bytes(bytes(cache))

    return TileCalibrator()


def _export_graph(ckpt_path: Path, onnx_path: Path, opts: EngineOptions, graph: str = "fp32") -> None:
    """The ONNX file the network is parsed from: raw, nms, or raw + decode (for EfficientNMS); for
    ``graph`` "int8" its QDQ model (calibrated on ``opts.calib_images``), for "fp16" its FP16 model."""
    if graph != "fp32":
        import contextlib
        import io

        from .quantize import convert_fp16, quantize_int8

        fp32 = onnx_path.with_name("fp32.onnx")
        _export_graph(ckpt_path, fp32, opts)
        if graph == "fp16":
            convert_fp16(fp32, onnx_path, require_metadata=False)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_int8(fp32, onnx_path, str(opts.calib_images), max_tiles=opts.calib_max_images,
                              batch=opts.calib_batch, method=opts.calib_method, raw_only=False,
                              input_size=opts.input_size)
        return
    import onnx

    from adla.anchors import generate_anchors
    from adla.checkpoint import load_model

    from .adapters import DecodeAdapter
    from .onnx_export import export_onnx, to_onnx_proto

    if opts.nms != "efficient":
        export_onnx(ckpt_path, onnx_path, input_size=opts.input_size,
                    variant="nms" if opts.nms == "native" else "raw", check=False)
        return
    model, ckpt = load_model(ckpt_path, "cpu")
    anchors = generate_anchors(ckpt["run_config"].model.anchors, *opts.input_size)
    module = DecodeAdapter(model, anchors, opts.input_size).eval()
    example = torch.rand(2, 3, *opts.input_size) * 255
    proto = to_onnx_proto(module, example, ["decoded_boxes", "class_scores"], dynamic_hw=False, opset=17)
    onnx.save(proto, str(onnx_path))


def _add_efficient_nms(network: trt.INetworkDefinition, score_thr: float, iou_thr: float, max_dets: int) -> None:
    """Replace the outputs decoded_boxes [B,N,4] / class_scores [B,N,C] by an EfficientNMS_TRT layer."""
    import tensorrt as trt

    outputs = {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}
    boxes, scores = outputs["decoded_boxes"], outputs["class_scores"]
    network.unmark_output(boxes)
    network.unmark_output(scores)
    registry = trt.get_plugin_registry()
    # get_creator: TensorRT 11 dropped get_plugin_creator (checked on the real bindings, scripts/trt_api_check.py)
    creator = registry.get_creator("EfficientNMS_TRT", "1", "")
    if creator is None:
        raise AdlaError("this TensorRT has no EfficientNMS_TRT plugin; use --nms native (TensorRT >= 8.5)")

    def field(name: str, value: float, kind: str) -> trt.PluginField:
        dtype = np.float32 if kind == "f" else np.int32
        ftype = trt.PluginFieldType.FLOAT32 if kind == "f" else trt.PluginFieldType.INT32
        # the stubs want trt.FallbackString; TensorRT converts a str implicitly (as NVIDIA's samples pass it)
        return trt.PluginField(name, np.array([value], dtype=dtype), ftype)  # type: ignore[call-overload]

    fields = trt.PluginFieldCollection([
        field("background_class", -1, "i"),
        field("max_output_boxes", min(max_dets, EFFICIENT_NMS_MAX), "i"),
        field("score_threshold", score_thr, "f"),
        field("iou_threshold", iou_thr, "f"),
        field("score_activation", 0, "i"),  # scores are already sigmoid
        field("class_agnostic", 0, "i"),
        field("box_coding", 0, "i"),  # corners: x1, y1, x2, y2
    ])
    plugin = creator.create_plugin("efficient_nms", fields)
    layer = network.add_plugin_v2([boxes, scores], plugin)
    if layer is None:
        raise AdlaError("TensorRT could not add the EfficientNMS_TRT layer")
    for i, name in enumerate(EFFICIENT_OUTPUTS):
        out = layer.get_output(i)
        out.name = name
        network.mark_output(out)


def _build(onnx_path: Path, engine_tmp: Path, opts: EngineOptions, pp: dict, timing_cache: Path,
           calib_cache: Path, plan: dict) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # trt<10: explicit batch is the only mode from TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # trt<10
    if plan["strongly_typed"]:  # TensorRT 11+: the ONNX model's types are the precision
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AdlaError(f"TensorRT's ONNX parser failed: {errors}")
    if opts.nms == "efficient":
        _add_efficient_nms(network, pp["score_thr"], pp["nms_iou"], pp["max_dets"])

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * 2**30))
    h, w = opts.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape("images", trt.Dims([opts.min_batch, 3, h, w]), trt.Dims([opts.opt_batch, 3, h, w]),
                      trt.Dims([opts.max_batch, 3, h, w]))
    config.add_optimization_profile(profile)
    if "FP16" in plan["flags"]:
        config.set_flag(trt.BuilderFlag.FP16)  # trt<=10
    if "INT8" in plan["flags"]:
        config.set_flag(trt.BuilderFlag.INT8)  # trt<=10
    if plan["int8_path"] == "calibrator":
        from .parity import image_files

        files = image_files(opts.calib_images)[: opts.calib_max_images] if opts.calib_images else []
        if not torch.cuda.is_available():
            raise AdlaError("INT8 calibration needs a CUDA GPU visible to torch")
        config.int8_calibrator = make_calibrator(files, opts.input_size, opts.calib_batch, calib_cache)  # trt<=10
        config.set_calibration_profile(profile)  # trt<=10

    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise AdlaError("TensorRT failed to build the engine (see the TensorRT messages above)")
    engine_tmp.write_bytes(bytes(memoryview(serialized)))
    with atomic_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))


def build_engine(ckpt_path: str | Path, out_path: str | Path, opts: EngineOptions = EngineOptions()) -> EngineReport:
    """Build ``out_path`` (a serialized TensorRT engine) and ``<out_path>.json`` from a checkpoint.

    Nothing is written unless the build succeeds: without TensorRT this raises AdlaError at once.
    """
    from .onnx_export import build_metadata, check_input_size

    trt_mod = import_tensorrt()
    opts = EngineOptions(**{**asdict(opts), "input_size": check_input_size(opts.input_size)})
    check_options(opts)
    plan = precision_plan(trt_mod, opts)
    if plan["int8_path"] == "qdq":
        if not opts.calib_images:
            raise AdlaError("INT8 from a QDQ model needs --calib-images DIR (a calibration cache is for the "
                            "implicit calibrator of TensorRT <= 10)")
        from .quantize import calibration_files

        calibration_files(opts.calib_images, opts.calib_batch)
    print(describe_plan(trt_mod, plan))
    from adla.checkpoint import load_checkpoint

    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    ckpt = load_checkpoint(ckpt_path)
    pp = ckpt["run_config"].eval
    if opts.nms == "native" and pp.pre_nms_topk > NATIVE_NMS_MAX_IN:
        raise AdlaError(f"native TensorRT NMS takes at most {NATIVE_NMS_MAX_IN} boxes; the checkpoint's "
                        f"pre_nms_topk is {pp.pre_nms_topk} (lower eval.pre_nms_topk or use --nms efficient)")
    timing_cache = Path(opts.timing_cache) if opts.timing_cache else out_path.parent / "adla.timing.cache"
    calib_cache = Path(opts.calib_cache) if opts.calib_cache else out_path.with_name(out_path.name + ".calib.cache")
    variant = "raw" if opts.nms is None else "nms"
    meta = build_metadata(ckpt, ckpt_path, variant, opts.input_size)
    meta.update({
        "tensorrt_version": trt_mod.__version__,
        "precision": precision_name(opts),
        "int8_path": plan["int8_path"],
        "nms_impl": opts.nms,
        "batch_profile": {"min": opts.min_batch, "opt": opts.opt_batch, "max": opts.max_batch},
        "engine": out_path.name,
    })
    if opts.nms == "efficient":
        meta["output_names"] = EFFICIENT_OUTPUTS
        meta["output_format"] = EFFICIENT_FORMAT
        meta["max_dets"] = min(pp.max_dets, EFFICIENT_NMS_MAX)
    pp_dict = {"score_thr": pp.score_thr, "nms_iou": pp.nms_iou, "max_dets": pp.max_dets}
    with tempfile.TemporaryDirectory(prefix="adla-trt-") as tmp_dir:
        onnx_path = Path(tmp_dir) / "model.onnx"
        _export_graph(ckpt_path, onnx_path, opts, plan["graph"])
        if plan["graph"] == "int8":
            from .quantize import _load, adla_metadata

            meta["quantization"] = adla_metadata(_load(onnx_path), onnx_path).get("quantization")
        sidecar = out_path.with_name(out_path.name + ".json")
        with atomic_path(out_path) as engine_tmp:
            _build(onnx_path, engine_tmp, opts, pp_dict, timing_cache, calib_cache, plan)
            write_json(sidecar, meta)
    return EngineReport(out_path, sidecar, trt_mod.__version__, meta["precision"], opts.nms,
                        meta["batch_profile"], out_path.stat().st_size / 2**20, plan["int8_path"])


def describe(report: EngineReport) -> str:
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(report).items()}, indent=2)


class EngineRunner:
    """Run a serialized engine: ``runner(images)`` with images a CUDA float32 [B,3,H,W] tensor (B within the
    engine's batch profile) -> {output name: CUDA tensor}. Memory is torch's; runs on torch's stream."""

    def __init__(self, path: str | Path):
        import tensorrt as trt

        import_tensorrt()
        self.path = Path(path)
        if not self.path.is_file():
            raise AdlaError("engine file not found", self.path)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise AdlaError("TensorRT cannot deserialize the engine (built by another TensorRT version or "
                            "GPU?)", self.path)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        import tensorrt as trt

        images = images.contiguous()
        self.context.set_input_shape("images", trt.Dims(list(images.shape)))
        self.context.set_tensor_address("images", images.data_ptr())
        out: dict[str, torch.Tensor] = {}
        for name in self.outputs:
            dims = self.context.get_tensor_shape(name)
            shape = [dims[i] for i in range(len(dims))]
            np_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            out[name] = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, np_dtype)).dtype, device=images.device)
            self.context.set_tensor_address(name, out[name].data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise AdlaError("TensorRT execution failed", self.path)
        return out
