"""``adla infer --ray``: many scenes on Ray Data.

The stream: scenes -> tile windows (``flat_map``) -> windowed reads (tasks; no worker holds a scene) ->
batched inference with per-tile decode + NMS in a pool of model actors (``map_batches`` over an actor
class; one GPU each, or CPU actors) -> back to this process, which merges each scene's tiles as they
arrive (``LocalMerger``) and streams its outputs (``SceneWriter``), as the single-process pipeline does.

Memory stays bounded by Ray Data's backpressure; only detections come back to the driver. Fault
tolerance is Ray's: a killed read task is retried, a killed actor is restarted and its batch retried
(Ray Data's defaults for actor pools: ``max_restarts=-1``, ``max_task_retries=-1``), so a dead worker
costs a retry of its tiles, not a scene. The driver counts each tile once (a retried tile that arrives
twice is dropped) and a scene is written only when all of its tiles have arrived.

Rows that come back hold one detection each, plus one marker row per tile (``label`` -1; ``score`` 1
when the tile went through the model, 0 when it held no data) that says the tile is complete.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adla.errors import AdlaError
from adla.runtime.backends import read_model_meta
from adla.runtime.claims import SceneClaim
from adla.runtime.merge import LocalMerger
from adla.runtime.options import PREVIEW_SCORE, TileOptions
from adla.runtime.pipeline import (
    SceneResult,
    claim_scene,
    failed_scene,
    input_size,
    open_writer,
    plan_scenes,
    summary_table,
)
from adla.runtime.readers import SceneReader
from adla.runtime.tiling import tile_windows
from adla.runtime.writers import SceneWriter

INSTALL_HINT = "--ray needs Ray Data: pip install 'adla[ray]' (or pip install 'ray[data]')"
FAULT_ENV = "ADLA_RAY_KILL"  # "read|model:CALL:MARKER": kill that stage's process once, at its CALL-th call
FOOTER = ("on Ray Data: time = first tile back to outputs written; reads, model and decode ran on the "
          "workers (phases not timed)")
READ_CPUS = 0.25  # a read task is mostly waiting on the file


def require_ray():
    """The ``ray`` module, or an AdlaError saying what to install."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise AdlaError(f"{INSTALL_HINT} ({exc})") from exc
    return ray


def _maybe_die(stage: str) -> None:
    """Fault injection for the tests (``ADLA_RAY_KILL``): SIGKILL this worker process once, mid-run."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want, at, marker = spec.split(":", 2)
    if want != stage:
        return
    count_file = Path(f"{marker}.{stage}.{os.getpid()}")
    calls = int(count_file.read_text()) + 1 if count_file.exists() else 1
    count_file.write_text(str(calls))
    if calls < int(at):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # once over all processes
    except FileExistsError:
        return
    os.write(fd, f"{stage} pid {os.getpid()} killed at call {calls}\n".encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


# -- the stages that run on Ray's workers -------------------------------------------------------------
def _windows(row: dict) -> list[dict]:
    """One scene row -> its tile rows (the same windows the driver computed)."""
    windows = tile_windows(int(row["height"]), int(row["width"]), int(row["tile"]), float(row["overlap"]))
    return [{"scene": row["scene"], "tile": i, "path": row["path"], "x0": w[0], "y0": w[1], "x1": w[2],
             "y1": w[3], "in_h": row["in_h"], "in_w": row["in_w"]} for i, w in enumerate(windows)]


def _read_tiles(batch: dict[str, np.ndarray], bands: tuple[int, ...] | None) -> dict[str, np.ndarray]:
    """A batch of tile rows -> the same rows with their pixels: uint8 [B,3,H,W] zero-padded to the
    largest model input in the batch, ``ok`` False for tiles with no data, ``error`` when a read failed."""
    _maybe_die("read")
    n = len(batch["tile"])
    h, w = int(batch["in_h"].max()), int(batch["in_w"].max())
    image = np.zeros((n, 3, h, w), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    error = np.array([""] * n, dtype=object)
    readers: dict[str, SceneReader] = {}
    try:
        for k in range(n):
            path = str(batch["path"][k])
            x0, y0, x1, y1 = (int(batch[c][k]) for c in ("x0", "y0", "x1", "y1"))
            window = (x0, y0, x1, y1)
            try:
                reader = readers.get(path) or readers.setdefault(path, SceneReader(path, bands=bands))
                pixels = reader.read_window(window)
            except Exception as exc:  # noqa: BLE001 - reported for this scene by the driver
                error[k] = f"cannot read window {window} ({exc.__class__.__name__}: {exc})"
                continue
            if pixels is not None:
                image[k, :, : pixels.shape[1], : pixels.shape[2]] = pixels
                ok[k] = True
    finally:
        for reader in readers.values():
            reader.close()
    return {**{c: batch[c] for c in ("scene", "tile", "x0", "y0", "x1", "y1", "in_h", "in_w")},
            "image": image, "ok": ok, "error": error}


class _TileModel:
    """A model actor: batches of tiles -> detection rows in scene pixels (plus a marker row per tile).

    Built through ``_bound`` with its arguments in the class, so that Ray restarts a killed actor from
    the class alone (constructor arguments kept in the object store could be gone by then).
    """

    ARGS: tuple = ()

    def __init__(self):
        from adla.runtime.backends import load_backend
        from adla.runtime.pipeline import class_filter

        model_path, device, options, threads = self.ARGS
        torch.set_num_threads(max(1, threads))
        self.backend = load_backend(model_path, device)
        self.cfg = options.post_config(self.backend.meta.post)
        self.keep = class_filter(options.classes, self.backend.meta.class_names)
        self.anchors: dict[tuple[int, int], torch.Tensor] = {}

    def _detect(self, batch: dict[str, np.ndarray], rows: np.ndarray, hw: tuple[int, int]) -> list[dict]:
        from adla.anchors import generate_anchors
        from adla.runtime.pipeline import keep_classes, run_batch

        if hw not in self.anchors:
            self.anchors[hw] = generate_anchors(self.backend.meta.anchors, *hw, device=self.backend.device)
        images = np.ascontiguousarray(batch["image"][rows, :, : hw[0], : hw[1]])
        sizes = [(int(batch["y1"][k] - batch["y0"][k]), int(batch["x1"][k] - batch["x0"][k])) for k in rows]
        dets = run_batch(self.backend, images, sizes, self.anchors[hw], self.cfg)
        return [keep_classes(d, self.keep) for d in dets]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _maybe_die("model")
        n = len(batch["tile"])
        dets: list[dict | None] = [None] * n
        ok = batch["ok"].astype(bool) & (batch["error"] == "")
        hws = sorted({(int(batch["in_h"][k]), int(batch["in_w"][k])) for k in np.flatnonzero(ok)})
        for hw in hws:  # one forward per model input size in the batch
            rows = np.array([k for k in np.flatnonzero(ok) if (int(batch["in_h"][k]), int(batch["in_w"][k])) == hw])
            for k, det in zip(rows, self._detect(batch, rows, hw)):
                dets[k] = det
        cols: dict[str, list] = {c: [] for c in ("scene", "tile", "x0", "y0", "x1", "y1", "score", "label", "error")}
        for k in range(n):
            d = dets[k]
            m = 0 if d is None else len(d["scores"])
            if m:
                assert d is not None
                boxes = d["boxes"].numpy() + np.array([batch["x0"][k], batch["y0"][k]] * 2, dtype=np.float32)
                for c, j in zip(("x0", "y0", "x1", "y1"), range(4)):
                    cols[c].append(boxes[:, j])
                cols["score"].append(d["scores"].numpy())
                cols["label"].append(d["labels"].numpy())
            # the marker row: tile k is complete
            for c in ("x0", "y0", "x1", "y1"):
                cols[c].append(np.zeros(1, dtype=np.float32))
            cols["score"].append(np.array([1.0 if d is not None else 0.0], dtype=np.float32))
            cols["label"].append(np.array([-1]))
            cols["scene"].append(np.full(m + 1, batch["scene"][k], dtype=np.int64))
            cols["tile"].append(np.full(m + 1, batch["tile"][k], dtype=np.int64))
            cols["error"].append(np.array([""] * m + [str(batch["error"][k])], dtype=object))
        out = {c: np.concatenate(v) for c, v in cols.items()}
        for c in ("x0", "y0", "x1", "y1", "score"):
            out[c] = out[c].astype(np.float32)
        out["label"] = out["label"].astype(np.int64)
        return out


def _bound(model_path: str, device: str, options: TileOptions, threads: int) -> type[_TileModel]:
    return type("TileModel", (_TileModel,), {"ARGS": (model_path, device, options, threads)})


# -- the driver ---------------------------------------------------------------------------------------
@dataclass
class _SceneRun:
    """One scene in progress on the driver: its merge, its writer and what has arrived."""

    path: Path
    stem: str
    width: int
    height: int
    windows: list
    merger: LocalMerger | None = None
    writer: SceneWriter | None = None
    t0: float = 0.0
    done: set[int] = field(default_factory=set)
    pending: dict[int, list[np.ndarray]] = field(default_factory=dict)  # tile -> detection rows so far
    tiles_run: int = 0
    count: int = 0
    error: str | None = None
    claim: SceneClaim | None = None  # the right to write the scene's outputs, held by the driver

    def emit(self, dets: dict[str, torch.Tensor]) -> None:
        if len(dets["scores"]):
            self.count += len(dets["scores"])
            assert self.writer is not None
            self.writer.write(dets)


def _actor_resources(ray, device: str, actors: int | None) -> tuple[str, int, dict, int]:
    """(device for the actors, number of actors, their Ray resources, torch threads each)."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    use_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if use_gpu:
        if gpus < 1:
            raise AdlaError(f"--device {device}: the Ray cluster has no GPU")
        n = actors or gpus
        return "cuda", n, {"num_gpus": 1}, 1  # Ray gives each actor its own GPU: cuda:0 in the actor
    n = actors or 1
    share = max(0.1, (cpus - READ_CPUS) / n)  # leave room for the read tasks: an actor pool must not starve them
    return "cpu", n, {"num_cpus": share}, max(1, int(share))


def _open_scenes(plan, out_dir, options: TileOptions, meta) -> tuple[list[_SceneRun | SceneResult], list[dict]]:
    """Claim each scene and read its header on the driver (errors are the scene's result) -> runs and
    scene rows. The driver holds each claim until its scene is written or has failed."""
    runs: list[_SceneRun | SceneResult] = []
    rows = []
    for scene in plan:
        claim = claim_scene(scene, out_dir)
        if isinstance(claim, SceneResult):
            runs.append(claim)
            continue
        try:
            reader = SceneReader(scene.path, bands=options.bands)
            try:
                height, width = reader.height, reader.width
            finally:
                reader.close()
            windows = tile_windows(height, width, options.tile, options.overlap)
            in_h, in_w = input_size(meta.input_size, windows, options.tile, stride=meta.anchors.max_stride)
        except Exception as exc:  # noqa: BLE001 - the scene fails, the others run
            claim.release()
            runs.append(failed_scene(scene.path, exc))
            continue
        rows.append({"scene": len(runs), "path": str(scene.path), "height": height, "width": width,
                     "tile": options.tile, "overlap": options.overlap, "in_h": in_h, "in_w": in_w})
        runs.append(_SceneRun(path=scene.path, stem=scene.stem, width=width, height=height, windows=windows,
                              claim=claim))
    return runs, rows


def _start_scene(run: _SceneRun, out_dir, meta, options: TileOptions, preview_size: int, preview_score: float):
    run.t0 = time.perf_counter()
    run.merger = LocalMerger(torch.tensor(run.windows), nms_iou=meta.post.nms_iou, merge_cut=options.merge_cut)
    reader = SceneReader(run.path, bands=options.bands)
    try:
        run.writer = open_writer(reader, out_dir, run.stem, list(meta.class_names), preview_size=preview_size,
                                 preview_score=preview_score)
    finally:
        reader.close()


def _finish_scene(run: _SceneRun, meta) -> SceneResult:
    assert run.merger is not None and run.writer is not None
    run.emit(run.merger.finish())
    outputs = run.writer.close()
    if run.claim is not None:
        run.claim.release()
    return SceneResult(path=run.path, width=run.width, height=run.height, tiles=len(run.windows),
                       tiles_run=run.tiles_run, seconds=time.perf_counter() - run.t0,
                       class_names=list(meta.class_names), count=run.count, outputs=outputs,
                       pending_peak=run.merger.pending_peak)


def _add_tile(run: _SceneRun, tile: int, rows: list[np.ndarray], ran: bool) -> None:
    """Tile ``tile`` of ``run`` is complete with detection ``rows`` [k,6] (x0 y0 x1 y1 score label)."""
    assert run.merger is not None
    det = np.concatenate(rows) if rows else np.zeros((0, 6), dtype=np.float32)
    run.done.add(tile)
    run.tiles_run += int(ran)
    run.emit(run.merger.add(tile, torch.from_numpy(det[:, :4].copy()), torch.from_numpy(det[:, 4].copy()),
                            torch.from_numpy(det[:, 5].astype(np.int64))))
    if run.merger.ready():
        run.emit(run.merger.step())


def _consume(batch: dict[str, np.ndarray], runs, state: dict, bar) -> None:
    """Feed one batch of result rows to the scenes' merges; finish the scenes that are complete."""
    det = np.stack([batch[c] for c in ("x0", "y0", "x1", "y1", "score")] + [batch["label"].astype(np.float32)], 1)
    for r in range(len(batch["tile"])):
        run = runs[int(batch["scene"][r])]
        tile = int(batch["tile"][r])
        if not isinstance(run, _SceneRun) or run.error or tile in run.done:
            continue  # a failed scene, or a retried tile seen before: counted once
        if batch["label"][r] >= 0:
            run.pending.setdefault(tile, []).append(det[r : r + 1])
            continue
        bar.update(1)
        rows = run.pending.pop(tile, [])
        try:
            if batch["error"][r]:
                raise AdlaError(str(batch["error"][r]), run.path)
            if run.writer is None:
                _start_scene(run, *state["start"])
            _add_tile(run, tile, rows, ran=bool(batch["score"][r] > 0))
            if len(run.done) == len(run.windows):
                runs[int(batch["scene"][r])] = _finish_scene(run, state["meta"])
        except Exception as exc:  # noqa: BLE001 - the scene fails, the others run
            run.error = str(exc)
            if run.writer is not None:
                run.writer.abort()
            if run.claim is not None:
                run.claim.release()
            runs[int(batch["scene"][r])] = failed_scene(run.path, exc)


def infer_scenes_ray(scene_paths: list[str | Path], model_path: str | Path, out_dir: str | Path,
                     options: TileOptions | None = None, *, address: str | None = None, actors: int | None = None,
                     device: str = "auto", shard_spec: str | None = None, preview_size: int = 2048,
                     preview_score: float = PREVIEW_SCORE, resume: bool = False, print_summary: bool = True,
                     progress: bool = True) -> list[SceneResult]:
    """``infer_scenes`` on Ray Data: same outputs, same results, scenes in parallel over a pool of actors.

    ``address`` None: a local Ray instance started (and stopped) here; else the cluster to join
    (``auto``, ``HOST:PORT``, ``ray://HOST:10001``); adla must be installed on its nodes and the scenes,
    the model and ``out_dir`` reachable there at the same paths. ``actors``: model actors (default one per
    GPU of the cluster, else 1).
    """
    options = options or TileOptions()
    if options.full_pass:
        raise AdlaError("--full-pass is not supported with --ray yet; run it without --ray")
    ray = require_ray()
    meta = read_model_meta(model_path)
    plan = plan_scenes(scene_paths, out_dir, shard_spec=shard_spec, resume=resume)
    runs, rows = _open_scenes(plan, out_dir, options, meta)
    started = False
    if rows:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False, configure_logging=True)
            started = True
        try:
            _run_ray(ray, rows, runs, model_path, out_dir, options, meta, device=device, actors=actors,
                     preview_size=preview_size, preview_score=preview_score, progress=progress)
        except AdlaError:
            raise
        except Exception as exc:  # Ray's own errors (a worker that cannot start, a lost node ...): one line
            done = sum(isinstance(r, SceneResult) and not r.error and not r.skipped for r in runs)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise AdlaError(f"the Ray Data run failed after {done} scene(s) were written "
                            f"({exc.__class__.__name__}: {first}); rerun with --resume to skip them") from exc
        finally:
            if started:
                ray.shutdown()
            for r in runs:  # scenes never finished (a Ray error, or no tiles back): their claims go
                if isinstance(r, _SceneRun) and r.claim is not None:
                    r.claim.release()
    results = [r if isinstance(r, SceneResult) else failed_scene(r.path, AdlaError("tiles missing", r.path))
               for r in runs]
    if print_summary:
        print(summary_table(results, footer=FOOTER))
    return results


def _run_ray(ray, rows: list[dict], runs: list, model_path, out_dir, options: TileOptions, meta, *, device: str,
             actors: int | None, preview_size: int, preview_score: float, progress: bool) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.verbose_progress = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # errors still raise; info is noise here
    actor_device, n_actors, resources, threads = _actor_resources(ray, device, actors)
    model_cls = _bound(str(Path(model_path).resolve()), actor_device, options, threads)
    # the tests' fault injection reaches workers of a Ray instance started before it was set
    extra = {"runtime_env": {"env_vars": {FAULT_ENV: os.environ[FAULT_ENV]}}} if os.environ.get(FAULT_ENV) else {}
    total = sum(len(r.windows) for r in runs if isinstance(r, _SceneRun))
    ds = (ray.data.from_items(rows, override_num_blocks=len(rows))
          .flat_map(_windows, num_cpus=READ_CPUS)
          .map_batches(_read_tiles, fn_kwargs={"bands": options.bands}, batch_size=options.batch,
                       batch_format="numpy", num_cpus=READ_CPUS, **extra)
          .map_batches(model_cls, batch_size=options.batch, batch_format="numpy",
                       compute=ray.data.ActorPoolStrategy(size=n_actors), **resources, **extra))
    state = {"meta": meta, "start": (out_dir, meta, options, preview_size, preview_score)}
    bar = tqdm(total=total, unit="tile", desc=f"ray: {len(rows)} scenes, {n_actors} actor(s)", disable=not progress,
               file=sys.stderr)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            _consume(batch, runs, state, bar)
    finally:
        bar.close()
        for r in runs:  # anything left open (an error above): partial outputs kept, claims released
            if isinstance(r, _SceneRun) and r.writer is not None and not r.error:
                r.writer.abort()
            if isinstance(r, _SceneRun) and r.claim is not None:
                r.claim.release()
