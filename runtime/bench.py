"""``adla bench tiled``: end-to-end time and peak memory of tiled inference, three ways, same scene and model.

(a) ``runtime``: this runtime (``adla.runtime.pipeline.infer_reader``): windowed reads in background
    threads, batches of ``--batch`` tiles, per-tile decode + NMS, vectorised cross-tile merge.
(b) ``one-tile``: a faithful re-implementation of SAHI 0.12's ``get_sliced_prediction`` for a
    torchvision-style model (SAHI is not installed here; when ``import sahi`` works its code is not used
    either, so both sides run the same model wrapper): the whole scene is read into memory first, slices
    follow the same geometry, one forward call per slice (SAHI batches only ultralytics/HF models), every
    detection becomes a Python ``ObjectPrediction``-like object shifted to scene coordinates, and the
    merge is SAHI's default GREEDYNMM (match metric IOS, threshold 0.5, class-wise): greedy matching in
    torch per kept box, then a Python loop fusing prediction pairs. SAHI's default extra full-resolution
    whole-scene pass (``perform_standard_pred=True``) is left out, which only favours (b).
(c) ``model``: the backend alone on as many tiles as (a) ran, in pre-made batches (no I/O, no decode).

Each variant runs in its own subprocess, so its peak memory (``ru_maxrss`` of that process) is isolated;
"growth" is the peak during the timed runs minus the peak before them (imports, model, warm-up).
Speed-up = time(b) / time(a); pipeline efficiency = time(c) / time(a).

``--model A --model B`` (or ``--compare B``) also measures the latency ratio B / A of two models on the
scene with interleaved runs in one process (A B, B A, A B, ...), median over runs and its spread, and the
per-tile latency of each (one tile per call, ``--tile-runs`` interleaved rounds): FP32 vs INT8 (QDQ) or FP16
ONNX side by side (``--compare-only`` skips the three variants). An INT8 ONNX model runs in its CPU form on
the CPU (``adla.export.quantize.cpu_int8_graph``), as ``adla infer`` runs it.
``--sahi`` compares (a) with SAHI 0.12.8 itself (``get_sliced_prediction``, default GREEDYNMM merge, no
full-image pass) on the same model and decode, one slice per call and with ``perform_batch_inference``.
``--scale-test`` runs (a) with outputs written on synthetic scenes of growing size (``--sizes`` WxH, up
to 50,000 x 20,000), generated window by window (``synthetic.py``), and reports tiles/s, merge and write
seconds, detections and peak RSS per size; ``--stub-model`` swaps the model for a dense random stand-in.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from adla.errors import AdlaError
from adla.runtime.options import DEFAULT_BATCH, DEFAULT_OVERLAP, DEFAULT_TILE, DEFAULT_WORKERS
from adla.tables import format_table


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", nargs="?", help="scene file (not needed with --scale-test)")
    p.add_argument("--model", action="append", required=True,
                   help="model file; give it twice (or use --compare) for the latency ratio of two models")
    p.add_argument("--compare", default=None, help="second model for the latency ratio (same as a 2nd --model)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE)
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP)
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--score", type=float, default=0.3)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=int, default=1, help="timed runs per variant (median reported)")
    p.add_argument("--tile-runs", type=int, default=20,
                   help="with two models: interleaved one-tile calls per model for the per-tile latency (default 20)")
    p.add_argument("--compare-only", action="store_true",
                   help="with two models: only their side-by-side comparison (no runtime/one-tile/model variants)")
    p.add_argument("--variants", default="runtime,one-tile,model",
                   help="comma list of runtime, one-tile, model (default all three)")
    p.add_argument("--sahi", action="store_true",
                   help="compare with SAHI 0.12.8 itself (pip install -e .[sahi]): variants runtime, sahi (one slice "
                        "per call) and sahi-batched (its perform_batch_inference overridden), same model and decode")
    p.add_argument("--scale-test", action="store_true",
                   help="tiles/s, merge time, detections and peak memory of `adla infer` (outputs written) on "
                        "synthetic scenes of growing size (--sizes), generated window by window")
    p.add_argument("--sizes", nargs="+", default=["8192", "20000x20000", "50000x20000"],
                   help="scene sizes for --scale-test, WxH or a square side (default 8192 20000x20000 50000x20000)")
    p.add_argument("--ray", action="store_true",
                   help="the scene --ray-scenes times: one process vs Ray Data with --actors model actors "
                        "(pip install -e .[ray]); per-scene overhead of Ray")
    p.add_argument("--ray-scenes", type=int, default=8, help="--ray: copies of the scene per run (default 8)")
    p.add_argument("--actors", default="1,2", help="--ray: comma list of actor counts (default 1,2)")
    p.add_argument("--stub-model", action="store_true",
                   help="--scale-test: replace the model by a dense random stand-in (same anchors and classes, about "
                        "2000 boxes a tile): measures everything around the model, at any scale, in minutes")


# -- child process: one variant, timed, with its own peak RSS -----------------------------------------
def maxrss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _options(spec: dict):
    from adla.runtime.options import TileOptions

    return TileOptions(tile=spec["tile"], overlap=spec["overlap"], batch=spec["batch"], score_thr=spec["score"],
                       workers=spec["workers"])


def _variant_runtime(spec: dict, backend) -> tuple[float, dict]:
    from adla.runtime.pipeline import infer_scene

    t = time.perf_counter()
    r = infer_scene(spec["scene"], backend, _options(spec), progress=False)
    return time.perf_counter() - t, {"tiles": r.tiles, "tiles_run": r.tiles_run,
                                     "detections": r.num_detections}


class _ObjectPrediction:
    """SAHI's per-detection object: a Python box, score and category, shifted to full-image coordinates."""

    __slots__ = ("bbox", "category", "score")

    def __init__(self, bbox: list[float], score: float, category: int, shift: tuple[int, int]):
        self.bbox = [bbox[0] + shift[0], bbox[1] + shift[1], bbox[2] + shift[0], bbox[3] + shift[1]]
        self.score = score
        self.category = category


def _ios(a: list[float], b: list[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / smaller if smaller > 0 else 0.0


def _greedy_nmm(boxes, scores, thr: float) -> dict[int, list[int]]:
    """SAHI's ``greedy_nmm`` (IOS): keep index -> indices merged into it."""
    import torch

    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = scores.argsort()
    keep_to_merge: dict[int, list[int]] = {}
    while len(order) > 0:
        idx = order[-1]
        order = order[:-1]
        if len(order) == 0:
            keep_to_merge[int(idx)] = []
            break
        other = boxes[order]
        wh = (torch.minimum(other[:, 2:], boxes[idx, 2:]) - torch.maximum(other[:, :2], boxes[idx, :2])).clamp(min=0)
        ios = wh.prod(1) / torch.minimum(areas[order], areas[idx])
        mask = ios < thr
        matched = order[(~mask).nonzero().flatten()].flip(dims=(0,))
        unmatched = order[mask.nonzero().flatten()]
        order = unmatched[scores[unmatched].argsort()]
        keep_to_merge[int(idx)] = matched.tolist()
    return keep_to_merge


def _sahi_merge(preds: list[_ObjectPrediction], thr: float = 0.5) -> list[_ObjectPrediction]:
    """SAHI's GreedyNMMPostprocess, class-wise: greedy matching per category, then pairwise fusion."""
    import torch

    if not preds:
        return []
    table = torch.tensor([[*p.bbox, p.score, p.category] for p in preds])
    out: list[_ObjectPrediction] = []
    for cat in torch.unique(table[:, 5]):
        ids = (table[:, 5] == cat).nonzero().flatten()
        plan = _greedy_nmm(table[ids, :4], table[ids, 4], thr)
        for keep, merged in plan.items():
            k = preds[int(ids[keep])]
            for m in merged:
                other = preds[int(ids[m])]
                if _ios(k.bbox, other.bbox) >= thr:  # SAHI's has_match, then merge_object_prediction_pair
                    k.bbox = [min(k.bbox[0], other.bbox[0]), min(k.bbox[1], other.bbox[1]),
                              max(k.bbox[2], other.bbox[2]), max(k.bbox[3], other.bbox[3])]
                    k.score = max(k.score, other.score)
            out.append(k)
    return out


def _variant_one_tile(spec: dict, backend) -> tuple[float, dict]:
    import torch

    from adla.anchors import generate_anchors
    from adla.postprocess import PostprocessConfig, postprocess
    from adla.runtime.readers import SceneReader
    from adla.runtime.tiling import tile_windows

    t = time.perf_counter()
    reader = SceneReader(spec["scene"])
    image = reader.read_all()  # SAHI reads the whole scene first
    reader.close()
    windows = tile_windows(image.shape[1], image.shape[2], spec["tile"], spec["overlap"])
    m = backend.meta
    cfg = PostprocessConfig(score_thr=spec["score"], pre_nms_topk=m.post.pre_nms_topk, nms_iou=m.post.nms_iou,
                            max_dets=m.post.max_dets)
    anchor_cache: dict[tuple[int, int], torch.Tensor] = {}
    preds: list[_ObjectPrediction] = []
    stride = m.anchors.max_stride
    for x0, y0, x1, y1 in windows:
        crop = image[:, y0:y1, x0:x1]
        h, w = crop.shape[1:]
        ph, pw = m.input_size or (math.ceil(h / stride) * stride, math.ceil(w / stride) * stride)
        x = np.zeros((1, 3, ph, pw), dtype=np.float32)
        x[0, :, :h, :w] = crop
        if (ph, pw) not in anchor_cache:
            anchor_cache[(ph, pw)] = generate_anchors(m.anchors, ph, pw, device=backend.device)
        cls_logits, box_deltas = backend(x)  # one forward call per slice
        det = postprocess(anchor_cache[(ph, pw)], cls_logits, box_deltas, [(h, w)], cfg)[0]
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            preds.append(_ObjectPrediction(box, score, label, (x0, y0)))
    merged = _sahi_merge(preds)
    return time.perf_counter() - t, {"tiles": len(windows), "tiles_run": len(windows), "detections": len(merged)}


def _variant_model(spec: dict, backend) -> tuple[float, dict]:
    from adla.runtime.pipeline import input_size
    from adla.runtime.readers import SceneReader
    from adla.runtime.tiling import tile_windows

    reader = SceneReader(spec["scene"])
    windows = tile_windows(reader.height, reader.width, spec["tile"], spec["overlap"])
    reader.close()
    in_h, in_w = input_size(backend.meta.input_size, windows, spec["tile"],
                            stride=backend.meta.anchors.max_stride)
    n = spec.get("tiles") or len(windows)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (spec["batch"], 3, in_h, in_w), dtype=np.uint8)  # pre-made, no I/O
    t = time.perf_counter()
    for start in range(0, n, spec["batch"]):
        out = backend(batch[: min(spec["batch"], n - start)])
    if backend.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    del out
    return time.perf_counter() - t, {"tiles": n, "tiles_run": n, "detections": 0}


# longer than 60 lines: a class inside a function, because SAHI is an optional import
def _sahi_model(backend, spec: dict, batched: bool):
    """The same model and decode as ``adla infer`` wrapped as a SAHI 0.12 ``DetectionModel``; ``batched``
    overrides ``perform_batch_inference`` (what SAHI's docs invite any model to do)."""
    import torch
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction

    from adla.anchors import generate_anchors
    from adla.postprocess import PostprocessConfig, postprocess

    m = backend.meta
    cfg = PostprocessConfig(score_thr=spec["score"], pre_nms_topk=m.post.pre_nms_topk, nms_iou=m.post.nms_iou,
                            max_dets=m.post.max_dets)
    anchor_cache: dict[tuple[int, int], torch.Tensor] = {}
    stride = m.anchors.max_stride

    def predict(images: list[np.ndarray]) -> list[dict]:
        hs, ws = [i.shape[0] for i in images], [i.shape[1] for i in images]
        ph, pw = m.input_size or (math.ceil(max(hs) / stride) * stride, math.ceil(max(ws) / stride) * stride)
        x = np.zeros((len(images), 3, ph, pw), dtype=np.uint8)
        for k, img in enumerate(images):
            x[k, :, : img.shape[0], : img.shape[1]] = img.transpose(2, 0, 1)
        if (ph, pw) not in anchor_cache:
            anchor_cache[(ph, pw)] = generate_anchors(m.anchors, ph, pw, device=backend.device)
        cls_logits, box_deltas = backend(x)
        return postprocess(anchor_cache[(ph, pw)], cls_logits, box_deltas, list(zip(hs, ws)), cfg)

    class AdlaModel(DetectionModel):
        def check_dependencies(self, packages=None) -> None:
            pass

        def load_model(self) -> None:
            self.model = backend

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = predict([image])

        if batched:
            def perform_batch_inference(self, images: list[np.ndarray]) -> None:
                self._batch_images = None
                self._original_predictions = predict(images)

        @property
        def num_categories(self) -> int:
            return len(m.class_names)

        @property
        def has_mask(self) -> bool:
            return False

        @property
        def category_names(self) -> list[str]:
            return list(m.class_names)

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=None,
                                                                     full_shape_list=None) -> None:
            shifts = shift_amount_list or [[0, 0]]
            shapes = full_shape_list or [None] * len(shifts)
            if shifts and not isinstance(shifts[0], list):
                shifts = [shifts]
            if shapes and shapes[0] is not None and not isinstance(shapes[0], list):
                shapes = [shapes]
            self._object_prediction_list_per_image = [
                [ObjectPrediction(bbox=b, category_id=int(c), category_name=m.class_names[int(c)], score=float(s),
                                  shift_amount=shift, full_shape=shape)
                 for b, s, c in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist())]
                for d, shift, shape in zip(self._original_predictions, shifts, shapes)]

    return AdlaModel(confidence_threshold=spec["score"], category_mapping={str(i): n for i, n in
                                                                          enumerate(m.class_names)})


def _variant_sahi(spec: dict, backend, batched: bool = False) -> tuple[float, dict]:
    """SAHI 0.12.8 itself: ``get_sliced_prediction`` with its default GREEDYNMM merge (IOS 0.5), no
    full-image pass, the scene decoded into memory first as SAHI does."""
    from sahi.predict import get_sliced_prediction

    from adla.runtime.readers import SceneReader

    t = time.perf_counter()
    reader = SceneReader(spec["scene"])
    image = np.ascontiguousarray(reader.read_all().transpose(1, 2, 0))
    reader.close()
    res = get_sliced_prediction(image, _sahi_model(backend, spec, batched), slice_height=spec["tile"],
                                slice_width=spec["tile"], overlap_height_ratio=spec["overlap"],
                                overlap_width_ratio=spec["overlap"], perform_standard_pred=False, verbose=0,
                                batch_size=spec["batch"] if batched else 1)
    n = len(res.object_prediction_list)
    from adla.runtime.tiling import tile_windows

    tiles = len(tile_windows(image.shape[0], image.shape[1], spec["tile"], spec["overlap"]))
    return time.perf_counter() - t, {"tiles": tiles, "tiles_run": tiles, "detections": n}


def _variant_scale(spec: dict, backend) -> tuple[float, dict]:
    """``adla infer`` on a synthetic scene generated window by window, outputs streamed to a temporary folder."""
    from adla.runtime.pipeline import infer_reader
    from adla.runtime.synthetic import DenseStubBackend, SyntheticScene
    from adla.runtime.writers import SceneWriter

    scene = SyntheticScene(spec["width"], spec["height"])
    if spec.get("stub"):
        backend = DenseStubBackend(backend, score=spec["score"])
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="adla-scale-out-") as out:
        writer = SceneWriter(out, "scene", class_names=list(backend.meta.class_names), info=scene.info)
        r = infer_reader(scene, backend, _options(spec), progress=False, sink=writer)
    return time.perf_counter() - t, {"tiles": r.tiles, "tiles_run": r.tiles_run,
                                     "detections": r.num_detections, "phases": r.phases,
                                     "pending_peak": r.pending_peak}


VARIANTS = {"runtime": _variant_runtime, "one-tile": _variant_one_tile, "model": _variant_model,
            "sahi": _variant_sahi, "sahi-batched": lambda spec, backend: _variant_sahi(spec, backend, batched=True),
            "scale": _variant_scale}


def _warm_up(spec: dict, backend) -> None:
    stride = backend.meta.anchors.max_stride
    size = backend.meta.input_size or (math.ceil(spec["tile"] / stride) * stride,) * 2
    backend(np.zeros((1, 3, *size), dtype=np.uint8))


def _child(spec: dict) -> dict:
    from adla.runtime.backends import load_backend

    if spec["variant"] == "compare":
        return _child_compare(spec)
    backend = load_backend(spec["model"], spec["device"])
    _warm_up(spec, backend)
    before = maxrss_mb()
    times: list[float] = []
    info: dict = {}
    for _ in range(spec["runs"]):
        seconds, info = VARIANTS[spec["variant"]](spec, backend)
        times.append(seconds)
    peak = maxrss_mb()
    return {"seconds": times, "peak_mb": peak, "growth_mb": peak - before, **info}


def _child_compare(spec: dict) -> dict:
    """Interleaved runs of two models on one scene: A B, B A, A B, ... (cancels drifts in machine load)."""
    from adla.runtime.backends import load_backend

    backends = [load_backend(p, spec["device"]) for p in spec["models"]]
    for b in backends:
        _warm_up(spec, b)
    times: list[list[float]] = [[], []]
    dets: list[int] = [0, 0]
    for r in range(spec["runs"]):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            seconds, info = _variant_runtime(spec, backends[k])
            times[k].append(seconds)
            dets[k] = info["detections"]
    tile_ms: list[list[float]] = [[], []]
    stride = backends[0].meta.anchors.max_stride
    size = backends[0].meta.input_size or (math.ceil(spec["tile"] / stride) * stride,) * 2
    tile = np.random.default_rng(0).integers(0, 256, (1, 3, *size), dtype=np.uint8)
    for r in range(spec.get("tile_runs", 0)):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            backends[k](tile)
            tile_ms[k].append(1e3 * (time.perf_counter() - t))
    return {"times": times, "tile_ms": tile_ms, "tile_size": list(size), "detections": dets,
            "precision": [b.meta.precision_note for b in backends], "tiles": info["tiles_run"]}


def spawn_child(module: str, spec: dict, what: str) -> dict:
    """Run ``python -m module SPEC_JSON`` in its own process (own peak RSS); its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(spec)],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AdlaError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spawn(spec: dict) -> dict:
    return spawn_child("adla.runtime.bench", spec, f"benchmark variant {spec['variant']!r}")


# -- parent: tables (adla.tables.format_table) -------------------------------------------------------
def _scene_size(path: str) -> tuple[int, int]:
    from adla.runtime.readers import SceneReader

    reader = SceneReader(path)
    reader.close()
    return reader.width, reader.height


def _bench_variants(args: argparse.Namespace, model: str, base: dict) -> None:
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if getattr(args, "sahi", False):
        names = ["runtime", "sahi", "sahi-batched"]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise AdlaError(f"--variants: unknown {sorted(unknown)}; choose from {list(VARIANTS)}")
    results: dict[str, dict] = {}
    for name in [n for n in VARIANTS if n in names]:  # runtime first: (c) uses its tile count
        spec = {**base, "variant": name, "model": model, "tiles": results.get("runtime", {}).get("tiles_run")}
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = _spawn(spec)
    rows = [("variant", "time (s)", "tiles", "tiles/s", "detections", "peak RSS (MB)", "growth (MB)")]
    for name, r in results.items():
        t = statistics.median(r["seconds"])
        rows.append((name, f"{t:.2f}", str(r["tiles_run"]), f"{r['tiles_run'] / t:.2f}", str(r["detections"]),
                     f"{r['peak_mb']:.0f}", f"{r['growth_mb']:.0f}"))
    print(format_table(rows))
    med = {k: statistics.median(v["seconds"]) for k, v in results.items()}
    if "runtime" in med and "one-tile" in med:
        print(f"speed-up (one-tile / runtime): {med['one-tile'] / med['runtime']:.2f}x")
    for other in ("sahi", "sahi-batched"):
        if "runtime" in med and other in med:
            print(f"speed-up ({other} / runtime): {med[other] / med['runtime']:.2f}x")
    if "runtime" in med and "model" in med:
        print(f"pipeline efficiency (model / runtime): {med['model'] / med['runtime']:.2f}")


def _bench_compare(args: argparse.Namespace, models: list[str], base: dict) -> dict:
    runs = max(args.runs, 3)
    r = _spawn({**base, "variant": "compare", "models": models, "runs": runs, "tile_runs": args.tile_runs})
    a, b = r["times"]
    ratios = [tb / ta for ta, tb in zip(a, b)]
    print(format_table(compare_rows(models, r)))
    print(f"latency ratio {Path(models[1]).name} / {Path(models[0]).name}: {statistics.median(b) / statistics.median(a):.3f}"
          f" (per interleaved pair: {min(ratios):.3f} .. {max(ratios):.3f}, {runs} runs)")
    ta, tb = r["tile_ms"]
    if ta and tb:
        print(f"throughput {Path(models[1]).name} vs {Path(models[0]).name}: scene "
              f"{statistics.median(a) / statistics.median(b):.2f}x, one {r['tile_size'][0]}x{r['tile_size'][1]} tile "
              f"{statistics.median(ta) / statistics.median(tb):.2f}x")
    for name, note in zip(models, r["precision"]):
        print(f"{Path(name).name}: {note}")
    return r


def compare_rows(models: list[str], r: dict) -> list[tuple[str, ...]]:
    """Table rows of a two-model comparison: scene time (median, min, max, tiles/s), detections and the
    per-tile latency (median, p10-p90 ms)."""
    rows: list[tuple[str, ...]] = [("model", "precision", "scene median (s)", "min", "max", "tiles/s", "detections",
                                    "tile ms (p10-p90)")]
    for k, name in enumerate(models):
        t = r["times"][k]
        ms = r["tile_ms"][k]
        tile = (f"{statistics.median(ms):.1f} ({np.percentile(ms, 10):.1f}-{np.percentile(ms, 90):.1f})"
                if ms else "-")
        rows.append((Path(name).name, r["precision"][k].split(" ")[0], f"{statistics.median(t):.3f}", f"{min(t):.3f}",
                     f"{max(t):.3f}", f"{r['tiles'] / statistics.median(t):.2f}", str(r["detections"][k]), tile))
    return rows


def write_synthetic_scene(path: Path, side: int, block: int = 512, seed: int = 0) -> Path:
    """A tiled 3-band uint8 GeoTIFF ``side`` x ``side`` of synthetic tiny-object scenery (the same object
    density at every size, so the detections grow with the area as in a real scene), written block-row
    by block-row (flat memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from adla.data.synth import synth_image

    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": block, "blockysize": block, "crs": "EPSG:32632",
               "transform": from_origin(500000, 5000000, 0.5, 0.5)}
    with rasterio.open(path, "w", **profile) as ds:
        for y in range(0, side, block):
            h = min(block, side - y)
            img, _, _ = synth_image(h, side, rng, num_objects=max(1, h * side // 4000))
            ds.write(img.transpose(2, 0, 1), window=Window(0, y, side, h))
    return path


def _parse_size(text: str) -> tuple[int, int]:
    """``"50000x20000"`` -> (50000, 20000); ``"8192"`` -> (8192, 8192)."""
    try:
        w, _, h = text.lower().partition("x")
        return int(w), int(h or w)
    except ValueError as exc:
        raise AdlaError(f"--sizes: {text!r} is not WxH or a side") from exc


def _bench_scale(args: argparse.Namespace, model: str, base: dict) -> None:
    rows = [("scene", "pixels", "tiles", "time (s)", "tiles/s", "merge (s)", "write (s)", "detections",
             "most waiting", "peak RSS (MB)")]
    for text in args.sizes:
        width, height = _parse_size(text)
        print(f"scale test {width} x {height} ...", file=sys.stderr, flush=True)
        r = _spawn({**base, "variant": "scale", "model": model, "width": width, "height": height,
                    "stub": args.stub_model, "runs": 1})
        t = statistics.median(r["seconds"])
        rows.append((f"{width}x{height}", f"{width * height / 1e6:.0f} M", str(r["tiles_run"]), f"{t:.1f}",
                     f"{r['tiles_run'] / t:.1f}", f"{r['phases']['merge']:.1f}", f"{r['phases']['write']:.1f}",
                     str(r["detections"]), str(r["pending_peak"]), f"{r['peak_mb']:.0f}"))
    print(format_table(rows))
    if args.stub_model:
        print("model: a dense random stand-in (--stub-model); the figures are for reads, decode, merge and writing")


def run_bench(args: argparse.Namespace) -> int:
    models = list(args.model) + ([args.compare] if args.compare else [])
    if len(models) > 2:
        raise AdlaError("give at most two models (--model A --model B, or --model A --compare B)")
    for m in models:
        if not Path(m).is_file():
            raise AdlaError("model file not found", m)
        if Path(m).suffix in (".pt", ".pth"):  # checked here (one line), not first in a child process
            from adla.checkpoint import load_checkpoint

            load_checkpoint(m)
    base = {"scene": args.scene, "tile": args.tile, "overlap": args.overlap, "batch": args.batch,
            "workers": args.workers, "score": args.score, "device": args.device, "runs": args.runs}
    if args.scale_test:
        _bench_scale(args, models[0], base)
        return 0
    if not args.scene:
        raise AdlaError("give a SCENE (or use --scale-test)")
    if args.ray:
        from adla.runtime.bench_ray import run_bench_ray

        run_bench_ray(args, models[0])
        return 0
    width, height = _scene_size(args.scene)
    print(f"scene {Path(args.scene).name}: {width} x {height} px, tile {args.tile}, overlap {args.overlap}, "
          f"batch {args.batch}, workers {args.workers}, model {Path(models[0]).name}")
    if args.compare_only and len(models) < 2:
        raise AdlaError("--compare-only needs two models (--model A --model B, or --compare B)")
    if not args.compare_only:
        _bench_variants(args, models[0], base)
    if len(models) == 2:
        _bench_compare(args, models, base)
    return 0


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
