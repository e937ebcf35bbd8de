"""Inference backends chosen by file type: torch checkpoint, ONNX (onnxruntime), TensorRT engine.

Every backend is a callable ``backend(images) -> (cls_logits [B,N,C], box_deltas [B,N,4])`` (float32
torch tensors on ``backend.device``), where ``images`` is [B,3,H,W] RGB 0-255 (numpy or torch; uint8 or
float32), and carries ``backend.meta`` (class names, input size, anchors, post-process settings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch

from adla.anchors import AnchorSpec
from adla.checks import check_readable_file, resolve_device
from adla.errors import AdlaError
from adla.postprocess import PostprocessConfig

if TYPE_CHECKING:
    import tensorrt as trt  # type: ignore[import-untyped]  # stubs do not parse (tensorrt-stubs 10.13)

Images = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ModelMeta:
    """What the runtime needs to know about a model, whatever its file type."""

    class_names: tuple[str, ...]
    anchors: AnchorSpec
    input_size: tuple[int, int] | None = None  # fixed (H, W) of the graph, None when dynamic
    post: PostprocessConfig = field(default_factory=PostprocessConfig)
    variant: str = "raw"
    max_batch: int | None = None  # largest batch the engine accepts; None: any
    precision: str = "fp32"  # fp32, fp16 or int8 (from the ONNX metadata or the engine sidecar)
    precision_note: str = "FP32"  # one line: the precision and, for INT8, what it was calibrated on

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_dict(cls, meta: dict, source: str | Path) -> ModelMeta:
        """From the ``"adla"`` metadata JSON of an ONNX file or an engine sidecar."""
        try:
            spec: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["anchors"].items()}
            anchors = AnchorSpec(**spec)
            post = PostprocessConfig(
                score_thr=float(meta.get("score_thr", PostprocessConfig.score_thr)),
                pre_nms_topk=int(meta.get("pre_nms_topk", PostprocessConfig.pre_nms_topk)),
                nms_iou=float(meta.get("nms_iou", PostprocessConfig.nms_iou)),
                max_dets=int(meta.get("max_dets", PostprocessConfig.max_dets)),
            )
            size = meta.get("input_size")
            names = tuple(meta["class_names"])
            precision = str(meta.get("precision", "fp32"))
        except (KeyError, TypeError, ValueError) as exc:
            raise AdlaError(f"model metadata is incomplete or invalid ({exc.__class__.__name__}: {exc})",
                            source) from exc
        from adla.export.quantize import describe_precision

        return cls(class_names=names, anchors=anchors, input_size=None if size is None else (size[0], size[1]),
                   post=post, variant=str(meta.get("variant", "raw")), precision=precision,
                   precision_note=describe_precision(meta))


class Backend(Protocol):
    meta: ModelMeta
    device: torch.device
    name: str

    def __call__(self, images: Images) -> tuple[torch.Tensor, torch.Tensor]: ...


def _to_float_tensor(images: Images, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    # move the compact uint8 tiles, convert on the device
    return t.to(device, non_blocking=True).float()


class TorchBackend:
    """A checkpoint through ``adla.checkpoint.load_model``; inference mode, fp16 autocast on CUDA."""

    name = "torch"

    def __init__(self, path: str | Path, device: torch.device):
        from adla.checkpoint import load_model

        self.device = device
        self.model, ckpt = load_model(path, device)
        cfg = ckpt["run_config"]
        self.meta = ModelMeta(class_names=tuple(ckpt["class_names"]), anchors=cfg.model.anchors, post=cfg.eval)

    def __call__(self, images: Images) -> tuple[torch.Tensor, torch.Tensor]:
        x = _to_float_tensor(images, self.device)
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=self.device.type == "cuda"):
            cls_logits, box_deltas = self.model(x)
        return cls_logits.float(), box_deltas.float()


class OnnxBackend:
    """An ONNX file through onnxruntime (CUDA provider when available, else CPU). An INT8 (QDQ) model runs
    on the CPU in its CPU form (``adla.export.quantize.cpu_int8_graph``: U8S8 kernels, ReLUs folded), built
    in memory; the file is not changed."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: torch.device):
        import onnxruntime as ort  # type: ignore[import-untyped]

        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        self.cpu_rewrite: dict[str, int] = {}
        try:
            source = self._cpu_int8_bytes(path) if providers == ["CPUExecutionProvider"] else None
            self.session = ort.InferenceSession(source or str(path), providers=providers)
        except AdlaError:
            raise
        except Exception as exc:  # the library raises many kinds; all mean "cannot read this file"
            raise AdlaError(f"cannot load ONNX model ({exc.__class__.__name__}: {exc})", path) from exc
        self.device = torch.device("cuda") if "CUDAExecutionProvider" in self.session.get_providers() \
            else torch.device("cpu")
        raw = self.session.get_modelmeta().custom_metadata_map.get("adla")
        if raw is None:
            raise AdlaError("ONNX file has no 'adla' metadata (export it with `adla export onnx`)", path)
        self.meta = ModelMeta.from_dict(json.loads(raw), path)
        if self.meta.variant != "raw":
            raise AdlaError(f"tiled inference needs the raw-output variant, this file is {self.meta.variant!r}",
                            path)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != ["images"] or not {"cls_logits", "box_deltas"} <= set(outputs):
            raise AdlaError(f"ONNX model has inputs {inputs} and outputs {outputs}; expected 'images' -> "
                            "'cls_logits', 'box_deltas'", path)

    def _cpu_int8_bytes(self, path: str | Path) -> bytes | None:
        """The serialized CPU form of an INT8 model, None for any other model (read as is)."""
        from adla.export.onnx_export import read_metadata

        try:
            precision = read_metadata(path).get("precision")
        except AdlaError:
            return None  # no adla metadata: the check after loading says so
        if precision != "int8":
            return None
        import onnx

        from adla.export.quantize import cpu_int8_graph

        model, self.cpu_rewrite = cpu_int8_graph(onnx.load(str(path)))
        return model.SerializeToString()

    def __call__(self, images: Images) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.cpu().numpy() if isinstance(images, torch.Tensor) else images
        x = np.ascontiguousarray(x, dtype=np.float32)
        cls_logits, box_deltas = self.session.run(["cls_logits", "box_deltas"], {"images": x})
        return (torch.from_numpy(cls_logits).to(self.device), torch.from_numpy(box_deltas).to(self.device))


def _import_tensorrt() -> Any:
    """The tensorrt module, imported on first use; AdlaError when only the stubs (or nothing) exist."""
    try:
        import tensorrt
    except ImportError as exc:
        raise AdlaError("running a TensorRT engine needs the `tensorrt` Python package (not installed)") from exc
    if not hasattr(tensorrt, "Runtime"):  # the type stubs alone make an empty namespace package
        raise AdlaError("running a TensorRT engine needs the `tensorrt` Python package; only its type stubs "
                        "are installed")
    return tensorrt


class TensorRTBackend:
    """A serialized TensorRT engine (``X.engine`` / ``X.plan``) with its metadata sidecar ``X.engine.json``.

    Buffers are torch CUDA tensors; the engine runs on torch's current CUDA stream (``execute_async_v3``).
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: torch.device):
        path = Path(path)
        trtm = _import_tensorrt()
        if not torch.cuda.is_available():
            raise AdlaError("a TensorRT engine needs a CUDA GPU; none is available", path)
        from adla.export.onnx_export import read_metadata

        sidecar = path.with_name(path.name + ".json")
        meta = read_metadata(path)
        self.device = torch.device("cuda", torch.cuda.current_device()) if device.type != "cuda" else device
        self.logger: trt.Logger = trtm.Logger(trtm.Logger.WARNING)
        self.runtime: trt.Runtime = trtm.Runtime(self.logger)
        engine: trt.ICudaEngine | None = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise AdlaError("TensorRT could not deserialize the engine (built by another TensorRT version or "
                            "for another GPU?)", path)
        self.engine: trt.ICudaEngine = engine
        self.context: trt.IExecutionContext = engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if "images" not in names or not {"cls_logits", "box_deltas"} <= set(names):
            raise AdlaError(f"engine has tensors {names}; expected 'images' -> 'cls_logits', 'box_deltas'", path)
        self._dtypes = {n: self._torch_dtype(trtm, self.engine.get_tensor_dtype(n)) for n in names}
        _, _, max_shape = self.engine.get_tensor_profile_shape("images", 0)
        base = ModelMeta.from_dict(meta, sidecar)
        self.meta = ModelMeta(class_names=base.class_names, anchors=base.anchors, input_size=base.input_size,
                              post=base.post, variant=base.variant, max_batch=int(max_shape[0]))
        if self.meta.variant != "raw":
            raise AdlaError(f"tiled inference needs the raw-output variant, this engine is {self.meta.variant!r}",
                            path)

    @staticmethod
    def _torch_dtype(trtm: Any, dtype: trt.DataType) -> torch.dtype:
        table = {trtm.DataType.FLOAT: torch.float32, trtm.DataType.HALF: torch.float16,
                 trtm.DataType.INT32: torch.int32, trtm.DataType.INT8: torch.int8,
                 trtm.DataType.BOOL: torch.bool}
        return table[dtype]

    def __call__(self, images: Images) -> tuple[torch.Tensor, torch.Tensor]:
        x = _to_float_tensor(images, self.device).to(self._dtypes["images"]).contiguous()
        if not self.context.set_input_shape("images", tuple(x.shape)):
            raise AdlaError(f"the engine does not accept input shape {tuple(x.shape)} (see its optimisation "
                            "profile)")
        self.context.set_tensor_address("images", x.data_ptr())
        outputs = {}
        for name in ("cls_logits", "box_deltas"):
            dims = self.context.get_tensor_shape(name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return outputs["cls_logits"].float(), outputs["box_deltas"].float()


BACKENDS = {".pt": TorchBackend, ".pth": TorchBackend, ".onnx": OnnxBackend,
            ".engine": TensorRTBackend, ".plan": TensorRTBackend}


def load_backend(model_path: str | Path, device: str = "auto") -> Backend:
    """The backend for ``model_path`` by file type: .pt/.pth torch, .onnx onnxruntime, .engine/.plan TensorRT."""
    path = Path(model_path)
    suffix = path.suffix.lower()
    if suffix not in BACKENDS:
        raise AdlaError(f"unknown model file type {suffix!r}; expected one of {sorted(BACKENDS)}", path)
    if not path.is_file():
        raise AdlaError("model file not found", path)
    return cast(Backend, BACKENDS[suffix](path, resolve_device(device, "device")))


def read_model_meta(model_path: str | Path) -> ModelMeta:
    """A model's metadata without building a session: the ONNX metadata, an engine's sidecar, or the
    checkpoint's classes and anchors (a checkpoint takes any input size)."""
    path = Path(model_path)
    if path.suffix.lower() not in BACKENDS:
        raise AdlaError(f"unknown model file type {path.suffix.lower()!r}; expected one of {sorted(BACKENDS)}",
                        path)
    check_readable_file(path, "model file")
    if path.suffix.lower() in (".pt", ".pth"):
        from adla.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        cfg = ckpt["run_config"]
        return ModelMeta(class_names=tuple(ckpt["class_names"]), anchors=cfg.model.anchors, post=cfg.eval)
    from adla.export.onnx_export import read_metadata

    return ModelMeta.from_dict(read_metadata(path), path)
