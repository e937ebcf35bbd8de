"""Parameters, FLOPs and latency of checkpoints, and the baseline-vs-ADLA comparison (``adla bench model``).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs.
fvcore, thop and mmdetection's ``get_flops`` count multiply-adds (MACs) and call them FLOPs: we print
both, GFLOPs (2 per MAC) and GMACs. Latency is the median of ``runs`` timed calls after ``warmup`` calls,
with the 10th-90th percentile spread. With two or more checkpoints the calls are interleaved (model A,
model B, B, A, ...) so machine noise hits all alike, and the ratio to the first checkpoint is the median
of the per-round ratios with its p10-p90.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from adla.checkpoint import load_model
from adla.checks import resolve_device
from adla.errors import AdlaError
from adla.io import atomic_path, write_json, write_text
from adla.tables import format_table
from adla.timing import time_interleaved

from .compare import graphs_identical
from .onnx_export import check_input_size, export_onnx
from .session import make_session

BACKENDS = ("torch", "onnxruntime", "tensorrt")
INT8_BACKEND = "onnxruntime-int8"  # the QDQ model of each checkpoint, with --calib-images


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters (trainable or frozen; buffers such as BN statistics not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, input_size: tuple[int, int], batch: int = 1) -> int:
    """FLOPs of one forward pass on [batch,3,H,W] (FlopCounterMode: a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, 3, *input_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def _spread(times_ms: list[float]) -> dict[str, float]:
    a = np.asarray(times_ms)
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "runs": len(a)}


def _torch_runner(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
    return run


def _ort_runner(onnx_path: Path, x: torch.Tensor) -> Callable[[], None]:
    from .quantize import _load, cpu_int8_graph, precision_of

    model = _load(onnx_path)
    if precision_of(model) == "int8" and not torch.cuda.is_available():  # as adla infer runs it on the CPU
        import onnxruntime as ort

        sess = ort.InferenceSession(cpu_int8_graph(model)[0].SerializeToString(), providers=["CPUExecutionProvider"])
    else:
        sess = make_session(onnx_path, device="auto")
    feed = {"images": x.cpu().numpy()}
    return lambda: sess.run(None, feed)


def _trt_runner(ckpt: Path, engine_path: Path, x: torch.Tensor, input_size: tuple[int, int]) -> Callable[[], None]:
    from .tensorrt_build import EngineOptions, EngineRunner, build_engine

    b = x.shape[0]
    build_engine(ckpt, engine_path, EngineOptions(input_size=input_size, min_batch=b, opt_batch=b, max_batch=b))
    runner = EngineRunner(engine_path)
    xc = x.cuda()

    def run() -> None:
        runner(xc)
        torch.cuda.synchronize()
    return run


def _interleaved(runners: list[Callable[[], None]], runs: int, warmup: int, desc: str) -> list[list[float]]:
    """Per-runner lists of ``runs`` call times (ms); round r calls the runners forward or backward (the
    runners synchronise CUDA themselves)."""
    times = time_interleaved(runners, warmup=warmup, runs=runs,
                             progress=lambda rounds: tqdm(rounds, desc=desc, leave=False))
    return [[1e3 * t for t in ts] for ts in times]


def _check_compare_args(ckpts: list[Path], batch: int, runs: int, warmup: int, backends: tuple[str, ...],
                        device: str) -> tuple[list[str], dict[str, str]]:
    """(backends to time, {backend: why skipped}); AdlaError on bad arguments."""
    from .tensorrt_build import tensorrt_available

    if not ckpts:
        raise AdlaError("give at least one checkpoint")
    if batch < 1 or runs < 1 or warmup < 0:
        raise AdlaError(f"batch and runs must be >= 1 and warmup >= 0 (got {batch}, {runs}, {warmup})")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise AdlaError(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    skipped: dict[str, str] = {}
    if "tensorrt" in backends and not (tensorrt_available() and device == "cuda"):
        skipped["tensorrt"] = "TensorRT or a CUDA GPU is not available"
    return [b for b in backends if b not in skipped], skipped


def compare_models(ckpts: list[Path], *, input_size: tuple[int, int] = (800, 800), batch: int = 1,
                   runs: int = 50, warmup: int = 10, out_dir: Path | None = None,
                   backends: tuple[str, ...] = ("torch", "onnxruntime"), calib_images: Path | None = None) -> dict:
    """Profile checkpoints: params, FLOPs, latency per backend; with >= 2, the comparison to the first.

    Returns {"input_size", "batch", "runs", "warmup", "device", "models": [{name, path, params, flops,
    gmacs, latency: {backend: {median_ms, p10_ms, p90_ms, runs}}}], "comparison": [{name, same_params,
    same_flops, graphs_identical, graph_differences, latency_ratio: {backend: {median, p10, p90}}}],
    "verdict": str | None}. With ``out_dir``: model_bench.json, model_bench.txt and model_bench.png.
    "tensorrt" is skipped (noted in "skipped") when TensorRT or a GPU is absent. With ``calib_images``
    each checkpoint's QDQ INT8 model is made too (``adla.export.quantize``, 16 tiles, minmax): its latency
    is the "onnxruntime-int8" backend and "qdq_graphs_identical" compares the INT8 graphs.
    """
    input_size = check_input_size(input_size)
    device = resolve_device("auto").type
    active, skipped = _check_compare_args(ckpts, batch, runs, warmup, backends, device)
    if calib_images is not None:
        active.append(INT8_BACKEND)
    x = torch.rand(batch, 3, *input_size, generator=torch.Generator().manual_seed(0)) * 255
    result: dict[str, Any] = {"input_size": list(input_size), "batch": batch, "runs": runs, "warmup": warmup,
                              "device": device, "backends": active, "skipped": skipped, "models": []}
    models = []
    stems = [Path(c).stem for c in ckpts]
    names = [f"{Path(c).parent.name}/{Path(c).stem}" if stems.count(Path(c).stem) > 1 else Path(c).stem
             for c in ckpts]
    with tempfile.TemporaryDirectory(prefix="adla-bench-") as tmp:
        onnx_paths = []
        for i, ck in enumerate(tqdm(ckpts, desc="export + count", leave=False)):
            model, _ = load_model(ck, device)
            flops = count_flops(model, input_size, batch)
            onnx_path = Path(tmp) / f"model{i}.onnx"
            export_onnx(ck, onnx_path, input_size=input_size, variant="raw", check=False)
            onnx_paths.append(onnx_path)
            if calib_images is not None:
                import contextlib
                import io

                from .quantize import calibration_files, quantize_int8

                batch_cal = min(8, len(calibration_files(calib_images, 1)))
                with contextlib.redirect_stdout(io.StringIO()):
                    quantize_int8(onnx_path, onnx_path.with_suffix(".int8.onnx"), calib_images, max_tiles=16,
                                  batch=batch_cal, method="minmax")
            models.append(model)
            result["models"].append({"name": names[i], "path": str(ck), "params": count_params(model),
                                     "flops": flops, "gflops": flops / 1e9, "gmacs": flops / 2e9, "latency": {}})
        times: dict[str, list[list[float]]] = {}
        for backend in active:
            if backend == "torch":
                runners = [_torch_runner(m, x.to(device)) for m in models]
            elif backend == "onnxruntime":
                runners = [_ort_runner(p, x) for p in onnx_paths]
            elif backend == INT8_BACKEND:
                runners = [_ort_runner(p.with_suffix(".int8.onnx"), x) for p in onnx_paths]
            else:
                runners = [_trt_runner(Path(ck), Path(tmp) / f"model{i}.engine", x, input_size)
                           for i, ck in enumerate(ckpts)]
            times[backend] = _interleaved(runners, runs, warmup, backend)
            for entry, t in zip(result["models"], times[backend]):
                entry["latency"][backend] = _spread(t)
            del runners
        result["comparison"] = [{"index": j, **_compare(result["models"][0], result["models"][j], onnx_paths[0],
                                                        onnx_paths[j], {b: (times[b][0], times[b][j]) for b in active})}
                                for j in range(1, len(ckpts))]
    result["verdict"] = verdict(result) if result["comparison"] else None
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(out_dir / "model_bench.json", result)
        write_text(out_dir / "model_bench.txt", format_model_table(result) + "\n")
        plot_latency(result, out_dir / "model_bench.png")
    return result


def _compare(a: dict, b: dict, onnx_a: Path, onnx_b: Path, times: dict[str, tuple[list, list]]) -> dict:
    same, diffs = graphs_identical(onnx_a, onnx_b)
    qdq: dict[str, Any] = {}
    if INT8_BACKEND in times:  # the QDQ graphs: identical up to weights and scales
        q_same, q_diffs = graphs_identical(onnx_a.with_suffix(".int8.onnx"), onnx_b.with_suffix(".int8.onnx"))
        qdq = {"qdq_graphs_identical": q_same, "qdq_graph_differences": q_diffs}
        same, diffs = same and q_same, diffs + [f"INT8: {d}" for d in q_diffs]
    ratios = {}
    for backend, (ta, tb) in times.items():
        r = np.asarray(tb) / np.asarray(ta)  # paired: the same round, adjacent calls
        ratios[backend] = {"median": float(np.median(r)), "p10": float(np.percentile(r, 10)),
                           "p90": float(np.percentile(r, 90))}
    return {"name": b["name"], "reference": a["name"], "same_params": a["params"] == b["params"],
            "same_flops": a["flops"] == b["flops"], "graphs_identical": same, "graph_differences": diffs,
            "latency_ratio": ratios, **qdq}


def verdict(result: dict) -> str:
    """One line per compared checkpoint: does it add anything at inference over the first one?"""
    ref = result["models"][0]
    lines = []
    for c in result["comparison"]:
        other = result["models"][c["index"]]
        lat = "; ".join(f"latency ratio {v['median']:.2f} ({v['p10']:.2f}-{v['p90']:.2f}) {k}"
                        for k, v in c["latency_ratio"].items())
        if c["same_params"] and c["same_flops"] and c["graphs_identical"]:
            lines.append(f"{c['name']} vs {ref['name']}: adds nothing at inference: same parameters "
                         f"({ref['params']:,}), same FLOPs ({ref['gflops']:.2f} GFLOPs = {ref['gmacs']:.2f} GMACs), "
                         f"identical graphs{' (FP32 and INT8 QDQ)' if c.get('qdq_graphs_identical') else ''}; {lat}")
        else:
            what = []
            if not c["same_params"]:
                what.append(f"parameters {ref['params']:,} vs {other['params']:,}")
            if not c["same_flops"]:
                what.append(f"GFLOPs {ref['gflops']:.2f} vs {other['gflops']:.2f}")
            if not c["graphs_identical"]:
                what.append(f"graphs differ ({len(c['graph_differences'])} differences, first: "
                            f"{c['graph_differences'][0]})")
            lines.append(f"{c['name']} vs {ref['name']}: DIFFERENT networks: {'; '.join(what)}; {lat}")
    return "\n".join(lines)


def format_model_table(result: dict) -> str:
    """Plain aligned table of a ``compare_models`` result, then the verdict."""
    backends = result["backends"]
    head = ["model", "params", "GFLOPs", "GMACs"] + [f"{b} ms (p10-p90)" for b in backends]
    rows = [head]
    for m in result["models"]:
        row = [m["name"], f"{m['params']:,}", f"{m['gflops']:.2f}", f"{m['gmacs']:.2f}"]
        for b in backends:
            lat = m["latency"][b]
            row.append(f"{lat['median_ms']:.2f} ({lat['p10_ms']:.2f}-{lat['p90_ms']:.2f})")
        rows.append(row)
    lines = [(f"input {result['input_size'][0]}x{result['input_size'][1]}, batch {result['batch']}, "
              f"{result['runs']} runs after {result['warmup']} warm-up, device {result['device']}; "
              f"FLOPs: 1 multiply-add = 2 FLOPs (GMACs = GFLOPs / 2, mmdet/fvcore's 'FLOPs')")]
    lines.append(format_table(rows, align="lr", rule=False))
    for b, why in result.get("skipped", {}).items():
        lines.append(f"{b}: skipped ({why})")
    if result.get("verdict"):
        lines.append(result["verdict"])
    return "\n".join(lines)


def plot_latency(result: dict, path: Path) -> Path:
    """Bar plot (PNG) of median latency per backend and model, p10-p90 as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends, models = result["backends"], result["models"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(backends) * max(1, len(models)) / 2, 3.6))
    width = 0.8 / max(1, len(models))
    for j, m in enumerate(models):
        med = [m["latency"][b]["median_ms"] for b in backends]
        lo = [m["latency"][b]["median_ms"] - m["latency"][b]["p10_ms"] for b in backends]
        hi = [m["latency"][b]["p90_ms"] - m["latency"][b]["median_ms"] for b in backends]
        xs = np.arange(len(backends)) + (j - (len(models) - 1) / 2) * width
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=3,
               label=f"{m['name']} ({m['params'] / 1e6:.2f} M params, {m['gflops']:.1f} GFLOPs)")
    ax.set_xticks(np.arange(len(backends)), backends)
    ax.set_ylabel("latency, ms (median, p10-p90)")
    ax.set_title(f"{result['input_size'][0]}x{result['input_size'][1]}, batch {result['batch']}, {result['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
