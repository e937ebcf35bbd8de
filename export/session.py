"""onnxruntime sessions on exported graphs: the one place that opens them for export's checks and profiling.

Its own module so that ``onnx_export`` (which runs the parity check after exporting) and ``parity`` (which
runs the exported graph) both depend on it and not on each other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adla.errors import AdlaError


def make_session(path: str | Path, device: str = "auto"):
    """An onnxruntime InferenceSession: CUDA when asked or ("auto") when available, else CPU.

    ``device`` is "auto", "cpu" or "cuda". CUDA needs the ``onnxruntime-gpu`` package (``pip install
    adla[gpu]``) and a GPU that torch sees.
    """
    import onnxruntime as ort

    if device not in ("auto", "cpu", "cuda"):
        raise AdlaError(f"unknown device {device!r}; choose auto, cpu or cuda")
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
    if device == "cuda" and not cuda_ok:
        raise AdlaError("device cuda asked, but onnxruntime has no CUDAExecutionProvider or no GPU is "
                        "visible: install onnxruntime-gpu (pip install 'adla[gpu]') on a machine with a GPU")
    providers = ["CPUExecutionProvider"]
    if cuda_ok and device in ("auto", "cuda"):
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    path = Path(path)
    if not path.is_file():
        raise AdlaError("ONNX file not found", path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise AdlaError(f"onnxruntime cannot load the model ({exc})", path) from exc
