"""``adla analyze-assign`` (positives per GT size, per assigner) and ``adla bench assign`` (speed, memory).

Heavy imports happen inside the handlers, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BENCH_SIZE = 800
DEFAULT_BENCH_GTS = (10, 100, 1000, 5000)
RATIO_TARGET = 1.3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze-assign",
        help="positives per GT by AI-TOD size bucket for several assigners, from a COCO json alone",
        description="Run assigners on the anchors of every image of a COCO json (anchors from the image "
                    "size, no pixels read) and report mean positives per GT and the share of GTs without "
                    "a positive, per AI-TOD size bucket (very tiny < 8 px, tiny 8-16, small 16-32, medium). "
                    "No predictions exist here: ADLA shows its adaptive thresholds at progress 0.",
    )
    p.add_argument("ann_json", type=Path, help="COCO annotation json")
    p.add_argument("--assigners", nargs="+", default=["maxiou", "adla", "atss", "nwd", "rfla"], metavar="SPEC",
                   help="assigner names, optionally with parameters: 'maxiou:match_low_quality=false' "
                        "'adla:adaptive=false' (default: maxiou adla atss nwd rfla)")
    p.add_argument("--out", type=Path, default=Path("runs/assign_analysis"),
                   help="folder for assign_analysis.json and assign_analysis.png (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images")
    p.set_defaults(func=_analyze)


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    p = bench_subparsers.add_parser(
        "assign",
        help="time and peak memory of max-IoU, ADLA, NWD and RFLA at 800x800 (~118k anchors), tiny GTs",
        description="Times the maxiou, adla, nwd and rfla assigners (or those of --assigners) with their "
                    "defaults (regressed boxes = jittered anchors, progress 0.7, so ADLA's dynamic IoU is "
                    "active) on the anchors of an 800x800 input and random tiny GTs, on CPU and on CUDA "
                    "when present.",
    )
    p.add_argument("--gts", type=int, nargs="+", default=list(DEFAULT_BENCH_GTS), help="GT counts to run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    p.add_argument("--size", type=int, default=BENCH_SIZE, help="input side in pixels (default: 800)")
    p.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                   help="cpu, cuda, or all available (default)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--assigners", nargs="+", default=list(BENCH_ASSIGNERS), metavar="NAME",
                   help="assigners to time, with their defaults (default: %(default)s); maxiou is always "
                        "timed, first, as the base of the x columns")
    p.set_defaults(func=_bench)


def _analyze(args: argparse.Namespace) -> int:
    from adla.errors import AdlaError
    from adla.train.analyze import (
        analyze_assignment,
        format_analysis_table,
        specs_from_strings,
        write_analysis,
    )

    if args.max_images is not None and args.max_images < 1:
        raise AdlaError(f"--max-images must be >= 1, got {args.max_images}")
    specs = specs_from_strings(args.assigners)
    result = analyze_assignment(args.ann_json, specs, max_images=args.max_images)
    json_path, png_path = write_analysis(result, args.out)
    print(format_analysis_table(result))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


# ----------------------------------------------------------------------------------------------------
# bench assign
# ----------------------------------------------------------------------------------------------------


def random_tiny_gts(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random boxes [n,4] xyxy inside a ``size`` x ``size`` image, sides 2-16 px (AI-TOD-like)."""
    import torch

    wh = torch.rand(n, 2, generator=generator) * 14 + 2
    xy = torch.rand(n, 2, generator=generator) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def jittered(anchors: torch.Tensor, generator: torch.Generator, shift: float = 0.1, scale: float = 0.1):
    """Stand-in regressed boxes: anchors [A,4] with centres moved by N(0, shift * side) and sides scaled
    by exp(N(0, scale))."""
    import torch

    wh = anchors[:, 2:] - anchors[:, :2]
    c = (anchors[:, :2] + anchors[:, 2:]) * 0.5 + torch.randn(wh.shape, generator=generator) * shift * wh
    wh = wh * torch.exp(torch.randn(wh.shape, generator=generator) * scale)
    return torch.cat([c - wh / 2, c + wh / 2], dim=1)


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_peak_mb(fn: Callable[[], object]) -> float | None:
    """Peak resident memory above the resident memory before ``fn`` (MB), from Linux's VmHWM after
    resetting it (``/proc/self/clear_refs`` 5); None where that is not possible."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the baseline is honest
    except (OSError, AttributeError):
        pass
    base = _rss_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    fn()
    peak = _rss_kb("VmHWM")
    if base is None or peak is None:
        return None
    return max(0, peak - base) / 1024


def _cuda_peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    import torch

    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _median_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    import torch

    from adla.timing import time_callable

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    return 1000 * statistics.median(time_callable(fn, warmup=1, runs=repeats, sync=sync))


BENCH_ASSIGNERS = ("maxiou", "adla", "nwd", "rfla")


# about 60 lines: one loop over GT counts x assigners x devices filling one result dict
def bench_assign(
    gts: Sequence[int] = DEFAULT_BENCH_GTS,
    repeats: int = 5,
    size: int = BENCH_SIZE,
    devices: Sequence[str] = ("cpu",),
    seed: int = 0,
    show_progress: bool = True,
    names: Sequence[str] = BENCH_ASSIGNERS,
) -> dict:
    """Median time and peak memory of each assigner in ``names`` (default settings) per (device, GT
    count); a JSON-ready dict. Row keys ``<name>_ms``, ``<name>_peak_mb``, ``<name>_pos``."""
    import torch
    from tqdm import tqdm

    from adla.anchors import AnchorSpec, generate_anchors
    from adla.train.assigners import build_assigner

    assigners = {name: build_assigner(name, {}) for name in names}
    progress = 0.7
    rows = []
    cells = [(d, n) for d in devices for n in gts]
    spec = AnchorSpec()
    for dev_name, n in tqdm(cells, desc="bench assign", disable=not show_progress):
        device = torch.device(dev_name)
        gen = torch.Generator().manual_seed(seed + n)
        anchors_cpu = generate_anchors(spec, size, size)
        anchors = anchors_cpu.to(device)
        pred = jittered(anchors_cpu, gen).to(device)
        gt = random_tiny_gts(n, size, gen).to(device)
        labels = torch.zeros(n, dtype=torch.long, device=device)
        levels = spec.level_counts(size, size)
        row = {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "gts": n,
            "anchors": anchors.shape[0],
            "dense_matrix_mb": anchors.shape[0] * n * 4 / 2**20,
        }
        for name, assigner in assigners.items():
            def run(assigner=assigner, gt=gt, labels=labels, anchors=anchors, pred=pred, levels=levels):
                return assigner.assign(anchors, gt, labels, pred_boxes=pred, progress=progress,
                                       num_level_anchors=levels)

            row[f"{name}_ms"] = _median_ms(run, repeats, device)
            row[f"{name}_peak_mb"] = _cuda_peak_mb(run, device) if device.type == "cuda" else _cpu_peak_mb(run)
            row[f"{name}_pos"] = run().num_pos
        base = row.get("maxiou_ms", 0.0)
        row["ratio"] = row["adla_ms"] / base if base > 0 and "adla_ms" in row else float("nan")
        rows.append(row)
    return {
        "size": size,
        "repeats": repeats,
        "progress": progress,
        "threads": torch.get_num_threads(),
        "assigners": list(names),
        "memory_method": {
            "cpu": "peak RSS above the pre-call RSS (Linux VmHWM reset by /proc/self/clear_refs, "
                   "malloc_trim first)",
            "cuda": "torch.cuda.max_memory_allocated above the pre-call allocation",
        },
        "rows": rows,
    }


def format_bench_table(res: dict) -> str:
    def mb(v):
        return "n/a" if v is None else f"{v:.1f}"

    names = res["assigners"]
    n_anchors = res["rows"][0]["anchors"] if res["rows"] else 0
    title = (f"assign bench: {res['size']}x{res['size']} input, {n_anchors} anchors, random tiny GTs "
             f"(2-16 px), ADLA at progress {res['progress']} with jittered anchors as regressed boxes; "
             f"median of {res['repeats']} runs, {res['threads']} CPU threads")
    head = f"{'device':<12} {'GTs':>6}" + "".join(f" {n + ' ms':>10} {'x':>5}" for n in names)
    head += "".join(f" {n + ' MB':>10}" for n in names) + f" {'AxG MB':>8}  positives ({'/'.join(names)})"
    lines = [title, head]
    for r in res["rows"]:
        base = r.get("maxiou_ms", 0.0)
        cells = "".join(f" {r[n + '_ms']:>10.1f} {r[n + '_ms'] / base if base else float('nan'):>5.2f}"
                        for n in names)
        cells += "".join(f" {mb(r[n + '_peak_mb']):>10}" for n in names)
        pos = "/".join(str(r[n + "_pos"]) for n in names)
        lines.append(f"{r['device'][:12]:<12} {r['gts']:>6}{cells} {r['dense_matrix_mb']:>8.0f}  {pos}")
    lines += [
        (f"x = time / maxiou's; ratio = adla / maxiou (target <= {RATIO_TARGET}); nwd and rfla (never 0, "
         "pruned exactly by centre distance) target <= 3; AxG MB = one dense float32 anchors x GTs "
         "matrix, for scale"),
        f"peak MB: CPU = {res['memory_method']['cpu']}; CUDA = {res['memory_method']['cuda']}",
    ]
    return "\n".join(lines)


def _bench(args: argparse.Namespace) -> int:
    import torch

    from adla.errors import AdlaError
    from adla.io import write_json
    from adla.train.assigners import ASSIGNERS

    if args.repeats < 1 or any(n < 1 for n in args.gts) or args.size < 32:
        raise AdlaError("--repeats and --gts must be >= 1 and --size >= 32")
    names = ["maxiou", *[n for n in dict.fromkeys(args.assigners) if n != "maxiou"]]
    unknown = sorted(set(names) - set(ASSIGNERS))
    if unknown:
        raise AdlaError(f"--assigners: unknown {unknown}; known: {sorted(ASSIGNERS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise AdlaError("--device cuda: no CUDA device is available")
    devices = {"cpu": ["cpu"], "cuda": ["cuda"]}.get(args.device) or (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    res = bench_assign(args.gts, args.repeats, args.size, devices, args.seed, names=names)
    print(format_bench_table(res))
    if args.json:
        write_json(args.json, res)
        print(f"wrote {args.json}")
    return 0
