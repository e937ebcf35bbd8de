"""``adla bench tiled SCENE --model M --ray``: the same scene ``--ray-scenes`` times through the
single-process pipeline and through Ray Data with 1 and 2 (``--actors``) model actors.

Each run writes its outputs (no preview) to a temporary folder, as ``adla infer`` does. The Ray instance
is started once before the runs (its start is reported on its own); each Ray run still pays for its
actors' start (a fresh process imports torch and loads the model), which is part of what Ray costs per
run. Overhead per scene = (Ray time - single-process time) / scenes.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time

from adla.errors import AdlaError
from adla.runtime.options import TileOptions
from adla.tables import format_table
from adla.timing import time_call


def _timed(fn, runs: int) -> tuple[float, list]:
    """Median seconds of ``runs`` calls ``fn(out_dir)``, each into a fresh temporary folder; its last results."""
    times: list[float] = []
    results: list = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="adla-bench-ray-") as out:
            seconds, results = time_call(functools.partial(fn, out))
            times.append(seconds)
    failed = [r.error for r in results if r.error]
    if failed:
        raise AdlaError(f"a scene failed: {failed[0]}")
    return statistics.median(times), results


def run_bench_ray(args: argparse.Namespace, model: str) -> list[tuple[str, ...]]:
    from adla.runtime.pipeline import infer_scenes
    from adla.runtime.ray_infer import infer_scenes_ray, require_ray

    ray = require_ray()
    options = TileOptions(tile=args.tile, overlap=args.overlap, batch=args.batch, score_thr=args.score,
                          workers=args.workers)
    scenes = [args.scene] * args.ray_scenes
    common = {"device": args.device, "preview_size": 0, "print_summary": False, "progress": False}
    rows: list[tuple[str, ...]] = [("variant", "scenes", "tiles", "time (s)", "tiles/s", "s / scene", "overhead / scene (s)")]

    def row(name: str, t: float, results: list, base: float | None) -> None:
        tiles = sum(r.tiles for r in results)
        over = "-" if base is None else f"{(t - base) / len(results):+.2f}"
        rows.append((name, str(len(results)), str(tiles), f"{t:.2f}", f"{tiles / t:.1f}", f"{t / len(results):.2f}",
                     over))

    t_single, res = _timed(lambda out: infer_scenes(scenes, model, out, options, **common), args.runs)
    row("single process", t_single, res, None)
    started = not ray.is_initialized()
    t = time.perf_counter()
    if started:
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    t_start = time.perf_counter() - t
    try:
        for n in sorted({int(a) for a in args.actors.split(",")}):
            t_ray, res = _timed(lambda out, n=n: infer_scenes_ray(scenes, model, out, options, actors=n, **common),
                                args.runs)
            row(f"ray, {n} actor{'s' if n > 1 else ''}", t_ray, res, t_single)
        cpus = ray.cluster_resources().get("CPU", 0)
    finally:
        if started:
            ray.shutdown()
    print(format_table(rows))
    start = f"ray start (local instance, once): {t_start:.1f} s" if started else "ray: joined the running instance"
    print(f"{start}; cluster CPUs {cpus:g}; each ray run includes starting its actors (import torch, load the "
          "model)")
    return rows
