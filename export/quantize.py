"""INT8 (QDQ) and FP16 ONNX models made from an exported FP32 model, and the CPU form of the INT8 graph.

INT8 is explicit quantization: ``QuantizeLinear`` / ``DequantizeLinear`` pairs in the ONNX graph, written by
onnxruntime's ``quantize_static`` in QDQ format. Weights are int8, per output channel, symmetric; activations
are int8, symmetric (zero point 0), with ranges calibrated on real tiles at the model's input size, cut from
the calibration images as the runtime cuts scene tiles (RGB float32 0-255, zero-padded at the right and
bottom edges). That is the form TensorRT 10 and 11 build as INT8 (they accept only zero point 0); decode and
NMS stay outside the graph.

onnxruntime runs that file too, but its x86 kernels for int8 activations are slow (a ReLU between two QDQ
pairs with zero point 0 cannot be folded, and S8S8 ``QLinearConv`` is several times slower than U8S8).
``cpu_int8_graph`` rewrites the graph in memory for the CPU: each ``Q -> DQ -> Relu -> Q`` becomes one
``Q`` with a uint8 zero point of 0 (the clamp at 0 *is* the ReLU), and the other int8 activation zero points
of 0 become uint8 128 (the same real values). The file on disk is never changed.

FP16 keeps float32 inputs and outputs (``keep_io_types``) and casts inside: onnxruntime's copy of
onnxconverter-common's ``convert_float_to_float16`` (onnxruntime is already a dependency).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adla.errors import AdlaError
from adla.io import atomic_path

from .onnx_export import METADATA_KEY

CALIB_METHODS = ("minmax", "entropy", "percentile")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QUANTIZED_OPS = QDQ_OPS + ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul")
# op types that get QDQ: the convolutions and what sits between them in the FPN (TensorRT fuses all of these);
# the output Reshape/Transpose/Concat stay float so the logits keep their full range
QUANT_OP_TYPES = ["Conv", "Add", "MaxPool", "Resize", "Relu", "Clip"]


@dataclass
class QuantReport:
    """What ``quantize_int8`` / ``convert_fp16`` wrote."""

    path: Path
    precision: str
    num_qdq: int
    size_mb: float
    seconds: float
    quantization: dict


def _load(path: str | Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise AdlaError(f"not a readable ONNX file ({exc.__class__.__name__}: {exc})", path) from exc


def adla_metadata(model: Any, source: str | Path) -> dict:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise AdlaError(f"ONNX file has no {METADATA_KEY!r} metadata (export it with `adla export`)", source)


def _metadata_or_empty(model: Any) -> dict:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}


def _set_metadata(model: Any, meta: dict) -> None:
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))


def count_ops(model: Any, ops: tuple[str, ...] = QDQ_OPS) -> int:
    return sum(1 for n in model.graph.node if n.op_type in ops)


def precision_of(model: Any) -> str:
    """"int8" (quantized nodes), "fp16" (half initializers) or "fp32"."""
    import onnx

    if count_ops(model, QUANTIZED_OPS):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def check_fp32_source(model: Any, path: str | Path) -> None:
    """AdlaError unless ``model`` is a float32 model (quantizing twice loses the scales' meaning)."""
    got = precision_of(model)
    if got == "int8":
        raise AdlaError(f"the model is already quantized ({count_ops(model, QUANTIZED_OPS)} quantize/quantized "
                        "nodes): quantize the FP32 model (adla export CKPT --format onnx --int8 ...)", path)
    if got == "fp16":
        raise AdlaError("the model is already FP16: quantize or convert the FP32 model (adla export CKPT "
                        "--format onnx ...)", path)


# -- calibration tiles -------------------------------------------------------------------------------
def _grid(size: int, tile: int) -> list[int]:
    """Tile origins along one axis, the last one flush with the edge (as the runtime's tiling)."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, tile))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def calibration_tiles(files: list[Path], input_size: tuple[int, int], max_tiles: int) -> np.ndarray:
    """[T,3,H,W] float32 RGB 0-255 tiles cut from ``files`` on a grid (at most ``max_tiles``, spread evenly
    over the images and over each image); images smaller than a tile are zero-padded bottom/right."""
    from PIL import Image

    h, w = input_size
    per_image = max(1, math.ceil(max_tiles / len(files)))
    tiles: list[np.ndarray] = []
    for path in files:
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise AdlaError(f"cannot read calibration image ({exc.__class__.__name__}: {exc})", path) from exc
        origins = [(y, x) for y in _grid(arr.shape[0], h) for x in _grid(arr.shape[1], w)]
        pick = np.linspace(0, len(origins) - 1, min(per_image, len(origins))).round().astype(int)
        for k in sorted(set(pick.tolist())):
            y, x = origins[k]
            crop = arr[y : y + h, x : x + w]
            tile = np.zeros((3, h, w), dtype=np.float32)
            tile[:, : crop.shape[0], : crop.shape[1]] = crop.transpose(2, 0, 1)
            tiles.append(tile)
        if len(tiles) >= max_tiles:
            break
    return np.stack(tiles[:max_tiles])


def calibration_files(folder: str | Path, batch: int) -> list[Path]:
    """The images of the calibration folder; AdlaError when it is missing, empty or smaller than a batch."""
    from .parity import IMAGE_EXTS

    folder = Path(folder)
    if not folder.is_dir():
        raise AdlaError("calibration folder not found: pass --calib-images DIR, a folder of real images", folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise AdlaError(f"no calibration images ({', '.join(IMAGE_EXTS)}) in the folder: put real scenes or "
                        "tiles of the deployment imagery there", folder)
    if len(files) < batch:
        raise AdlaError(f"only {len(files)} calibration image(s), fewer than the calibration batch of {batch}: "
                        f"add images or pass --calib-batch {len(files)}", folder)
    return files


def _reader(tiles: np.ndarray, batch: int) -> Any:
    """A calibration reader of ``tiles`` in batches. Its length counts batches and ``set_range`` picks some:
    quantize_static's ``CalibStridedMinMax`` then feeds the calibrator one batch per ``collect_data`` call,
    so that only one batch's activations are held at a time (the histogram and min-max calibrators merge
    across calls; without it every activation of every tile is kept, 64 MobileNetV2 tiles of 672 px were
    killed for memory)."""
    from onnxruntime.quantization import CalibrationDataReader

    class TileReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.n = math.ceil(len(tiles) / batch)
            self.set_range(0, self.n)

        def __len__(self) -> int:
            return self.n

        def set_range(self, start_index: int, end_index: int) -> None:
            self.batches = iter(range(start_index, min(end_index, self.n)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.batches, None)
            return None if b is None else {"images": tiles[b * batch : (b + 1) * batch]}

    return TileReader()


# -- INT8 ----------------------------------------------------------------------------------------------
def quantize_int8(src: str | Path, out_path: str | Path, calib_images: str | Path, *, max_tiles: int = 64,
                  batch: int = 8, method: str = "entropy", raw_only: bool = True,
                  input_size: tuple[int, int] | None = None, float_outputs: bool = False) -> QuantReport:
    """Write the QDQ INT8 model of the FP32 ONNX file ``src`` to ``out_path`` (atomically).

    ``src`` must be an adla FP32 export with a fixed input size. Calibration: up to ``max_tiles`` tiles from
    ``calib_images``, ``batch`` at a time, ranges by ``method`` (minmax, entropy or percentile).
    ``raw_only=False`` (the engine builder) also takes graphs with decode/NMS inside: only the network's
    op types get QDQ (``QUANT_OP_TYPES``), so the decode stays float. ``float_outputs``: the head's last
    convolutions (those that reach a graph output through no other Conv) stay float.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise AdlaError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
    if batch < 1 or max_tiles < 1:
        raise AdlaError(f"--calib-batch and --calib-max must be >= 1 (got {batch}, {max_tiles})")
    model = _load(src)
    check_fp32_source(model, src)
    meta = adla_metadata(model, src) if raw_only else _metadata_or_empty(model)
    if raw_only and meta.get("variant", "raw") != "raw":
        raise AdlaError("INT8 quantization takes the raw-output model (decode and NMS stay outside): export "
                        "without --nms", src)
    size = input_size or meta.get("input_size")
    if not size:
        raise AdlaError("INT8 calibration needs a fixed input size: export without --dynamic-hw", src)
    files = calibration_files(calib_images, batch)
    t0 = time.perf_counter()
    tiles = calibration_tiles(files, (int(size[0]), int(size[1])), max(max_tiles, batch))
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="adla-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_optimization=True)
        q_path = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(q_path), _reader(tiles, batch), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=False, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=QUANT_OP_TYPES,
                        nodes_to_exclude=output_convs(onnx.load(str(pre))) if float_outputs else None,
                        calibrate_method=methods[method],
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": True,
                                       "CalibStridedMinMax": 1})  # one batch per collect_data (memory)
        qmodel = onnx.load(str(q_path))
    info = {"format": "QDQ", "library": f"onnxruntime {onnxruntime.__version__} quantize_static",
            "weights": "int8 per-channel symmetric", "activations": "int8 symmetric (zero point 0)",
            "calibration": {"folder": str(Path(calib_images).resolve()), "images": len(files), "tiles": len(tiles),
                            "tile_size": [int(size[0]), int(size[1])], "batch": batch, "method": method},
            "source": Path(src).name, "float_outputs": float_outputs}
    meta.update({"precision": "int8", "quantization": info})
    _set_metadata(qmodel, meta)
    qmodel.producer_name = "adla"
    with atomic_path(out_path) as tmp_out:
        onnx.save(qmodel, str(tmp_out))
    return QuantReport(out_path, "int8", count_ops(qmodel), out_path.stat().st_size / 2**20,
                       time.perf_counter() - t0, info)


def output_convs(model: Any) -> list[str]:
    """Names of the Conv nodes whose output reaches a graph output without passing another Conv."""
    prod = {o: n for n in model.graph.node for o in n.output}
    found: list[str] = []
    stack = [o.name for o in model.graph.output]
    seen: set[int] = set()
    while stack:
        node = prod.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Conv":
            found.append(node.name)
        else:
            stack.extend(node.input)
    return found


# -- FP16 ----------------------------------------------------------------------------------------------
def convert_fp16(src: str | Path, out_path: str | Path, *, require_metadata: bool = True) -> QuantReport:
    """Write the FP16 form of the FP32 ONNX file ``src``: half weights and activations, float32 ``images``
    in and float32 outputs (casts at the edges of the graph). ``require_metadata=False`` (the engine
    builder) also takes a graph without adla metadata (the EfficientNMS decode graph)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    t0 = time.perf_counter()
    model = _load(src)
    check_fp32_source(model, src)
    meta = adla_metadata(model, src) if require_metadata else _metadata_or_empty(model)
    half = convert_float_to_float16(model, keep_io_types=True)
    info = {"format": "fp16", "library": "onnxruntime.transformers.float16 (keep_io_types)",
            "io": "float32 inputs and outputs", "source": Path(src).name}
    meta.update({"precision": "fp16", "quantization": info})
    _set_metadata(half, meta)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp_out:
        onnx.save(half, str(tmp_out))
    return QuantReport(out_path, "fp16", 0, out_path.stat().st_size / 2**20, time.perf_counter() - t0, info)


# -- the CPU form of the INT8 graph --------------------------------------------------------------------
def _consumers(graph: Any) -> dict[str, list[Any]]:
    cons: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    return cons


def _clip_range(node: Any, inits: dict[str, Any]) -> tuple[float, float] | None:
    """(min, max) of a Relu (0, inf) or of a Clip with constant bounds; None otherwise."""
    from onnx import numpy_helper

    if node.op_type == "Relu":
        return 0.0, math.inf
    if node.op_type != "Clip" or len(node.input) < 3 or any(i not in inits for i in node.input[1:3]):
        return None
    return float(numpy_helper.to_array(inits[node.input[1]])), float(numpy_helper.to_array(inits[node.input[2]]))


def _fold_relus(graph: Any, inits: dict[str, Any]) -> int:
    """``x -> Q1 -> DQ1 -> Relu -> Q2`` becomes ``x -> Q2`` with a uint8 zero point 0 (the clamp at 0 is the
    ReLU; values above the calibrated range saturate at 255 steps instead of 127, closer to FP32). A ReLU6
    (``Clip(0, 6)``) folds the same way with the scale set to 6 / 255, so that the clamp at 255 is the 6."""
    from onnx import numpy_helper

    prod = {o: n for n in graph.node for o in n.output}
    cons = _consumers(graph)
    outputs = {o.name for o in graph.output}
    drop: set[int] = set()
    for relu in graph.node:
        bounds = _clip_range(relu, inits)
        if bounds is None or bounds[0] != 0.0 or relu.output[0] in outputs:
            continue
        dq1 = prod.get(relu.input[0])
        q1 = prod.get(dq1.input[0]) if dq1 is not None and dq1.op_type == "DequantizeLinear" else None
        after = cons.get(relu.output[0], [])
        if q1 is None or q1.op_type != "QuantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        assert dq1 is not None  # q1 was found through it
        if len(cons.get(q1.output[0], [])) != 1 or len(cons.get(dq1.output[0], [])) != 1:
            continue
        q2 = after[0]
        zp = inits.get(q2.input[2]) if len(q2.input) > 2 else None
        scale = inits.get(q2.input[1])
        if zp is None or scale is None or numpy_helper.to_array(zp).any() or len(cons.get(q2.input[2], [])) != 2:
            continue  # a zero point shared with other pairs is left alone
        if math.isfinite(bounds[1]):
            if len(cons.get(q2.input[1], [])) != 2:
                continue
            dtype = numpy_helper.to_array(scale).dtype
            scale.CopyFrom(numpy_helper.from_array(np.array(bounds[1] / 255, dtype=dtype), scale.name))
        q2.input[0] = q1.input[0]
        zp.CopyFrom(numpy_helper.from_array(np.zeros(zp.dims, np.uint8), zp.name))
        drop.update((id(q1), id(dq1), id(relu)))
    keep = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(keep)
    return len(drop) // 3


def _activations_to_uint8(graph: Any, inits: dict[str, Any]) -> int:
    """int8 activation zero points of 0 -> uint8 128: the same real values, U8S8 kernels on x86."""
    from onnx import numpy_helper

    names = {n.input[2] for n in graph.node
             if n.op_type in QDQ_OPS and len(n.input) > 2 and n.input[0] not in inits}
    changed = 0
    for name in names:
        zp = inits.get(name)
        if zp is None:
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype == np.int8 and not arr.any():
            zp.CopyFrom(numpy_helper.from_array(np.full(arr.shape, 128, np.uint8), name))
            changed += 1
    return changed


def cpu_int8_graph(model: Any) -> tuple[Any, dict[str, int]]:
    """The CPU form of a QDQ model with symmetric int8 activations (see the module docstring); returns the
    rewritten copy and {"relus_folded", "zero_points_to_uint8"}. A model without QDQ comes back unchanged."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    folded = _fold_relus(graph, inits)
    moved = _activations_to_uint8(graph, inits)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model, {"relus_folded": folded, "zero_points_to_uint8": moved}


def describe_precision(meta: dict) -> str:
    """One line: the precision of a model and, for INT8, what it was calibrated on."""
    precision = meta.get("precision", "fp32")
    q = meta.get("quantization") or {}
    cal = q.get("calibration")
    if precision == "int8" and cal:
        return (f"INT8 ({q.get('format', 'QDQ')}, {q.get('weights', '')}), calibrated on {cal['tiles']} tiles of "
                f"{cal['images']} images in {cal['folder']} ({cal['method']})")
    return precision.upper()
