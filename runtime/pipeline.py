"""Tiled inference on large scenes: windows read in background threads, batched forward, per-tile
decode + NMS, shift to scene coordinates, cross-tile merge.

Memory stays flat in the scene size: reader threads put tiles into a bounded queue, so at most a few
batches of uint8 tiles exist at once, and each thread reads through its own GDAL handle.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adla.anchors import generate_anchors
from adla.errors import AdlaError
from adla.postprocess import PostprocessConfig, postprocess
from adla.runtime.backends import Backend, load_backend
from adla.runtime.claims import SceneClaim, clean_partials, is_complete, manifest_state
from adla.runtime.merge import Detections, LocalMerger, cat_detections, single_thread
from adla.runtime.options import PREVIEW_SCORE, TileOptions
from adla.runtime.readers import SceneInfo, SceneReader, SceneSource
from adla.runtime.tiling import parse_shard, shard, tile_windows
from adla.runtime.writers import SceneWriter
from adla.tables import format_table

SCENE_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".jpg", ".jpeg")


@dataclass
class SceneResult:
    """Detections of one scene (boxes [K,4] xyxy scene px, scores [K], labels [K] 0-based) and its figures."""

    path: Path
    width: int = 0
    height: int = 0
    tiles: int = 0  # windows over the scene
    tiles_run: int = 0  # tiles that went through the model (empty / nodata tiles are skipped)
    seconds: float = 0.0
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4)))
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    class_names: list[str] = field(default_factory=list)
    info: SceneInfo | None = None
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    count: int = 0  # detections (streamed to the outputs; boxes/scores/labels hold them only in memory runs)
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase (Phases.NAMES)
    pending_peak: int = 0  # most boxes the merge held waiting at once
    skipped: bool = False  # not run: done before (--resume), or another run has it
    note: str = ""  # why it was skipped, for the summary

    @property
    def num_detections(self) -> int:
        """Detections of the scene: ``count`` (streamed runs) or the rows of ``boxes`` (in-memory runs)."""
        return max(self.count, int(self.boxes.shape[0]))

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


def keep_classes(det: dict[str, torch.Tensor], keep_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One tile's detections on the CPU, only those of ``keep_labels`` (``class_filter``; None: all)."""
    det = {k: v.cpu() for k, v in det.items()}
    if keep_labels is not None:
        det = {k: v[torch.isin(det["labels"], keep_labels)] for k, v in det.items()}
    return det


def class_filter(classes: tuple[str, ...] | list[str] | None, names: tuple[str, ...]) -> torch.Tensor | None:
    """Label ids [k] kept by ``classes`` (names or 0-based ids), or None for all."""
    if not classes:
        return None
    ids = []
    for c in classes:
        if c in names:
            ids.append(names.index(c))
        elif str(c).isdigit() and int(c) < len(names):
            ids.append(int(c))
        else:
            raise AdlaError(f"--classes: unknown class {c!r}; the model has {list(names)}")
    return torch.tensor(sorted(set(ids)))


def input_size(fixed: tuple[int, int] | None, windows: list[tuple[int, int, int, int]],
               tile: int, stride: int) -> tuple[int, int]:
    """(H, W) of the model input: the graph's ``fixed`` size, or the largest window rounded up to a multiple
    of ``stride``, the model's largest (``meta.anchors.max_stride``)."""
    if fixed is not None:
        if max(y1 - y0 for _, y0, _, y1 in windows) > fixed[0] or max(x1 - x0 for x0, _, x1, _ in windows) > fixed[1]:
            raise AdlaError(f"tile {tile} is larger than the model's fixed input size {fixed[0]}x{fixed[1]}; "
                            f"use --tile {min(fixed)} or export with a dynamic size")
        return fixed
    h = max(y1 - y0 for _, y0, _, y1 in windows)
    w = max(x1 - x0 for x0, _, x1, _ in windows)
    return math.ceil(h / stride) * stride, math.ceil(w / stride) * stride


class _TileReader:
    """Reader threads: windows in, (index, uint8 [3,h,w] or None, or an exception) out, bounded queue."""

    def __init__(self, reader: SceneSource, windows: list, workers: int, capacity: int):
        self.reader, self.windows = reader, windows
        self.out: queue.Queue = queue.Queue(maxsize=capacity)
        self._next = iter(range(len(windows)))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                i = next(self._next, None)
            if i is None:
                break
            try:
                item: object = (i, self.reader.read_window(self.windows[i]))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which reports it for this scene
                item = (i, exc)
            if not self._put(item):
                return

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


class Phases:
    """Wall seconds per phase of a scene (read: waiting for tiles; model; decode: per-tile decode + NMS;
    merge; write), summed over the calls of ``with phases("model"): ...``."""

    NAMES = ("read", "model", "decode", "merge", "write")

    def __init__(self):
        self.seconds = dict.fromkeys(self.NAMES, 0.0)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t


def run_batch(backend: Backend, images: np.ndarray, sizes: list[tuple[int, int]], anchors: torch.Tensor,
               cfg: PostprocessConfig, phases: Phases | None = None) -> list[dict[str, torch.Tensor]]:
    """Forward + per-tile decode, score threshold and NMS; ``images`` uint8 [B,3,H,W], sizes (h, w) per tile."""
    phases = phases or Phases()
    max_batch = backend.meta.max_batch or len(images)
    outs = []
    for start in range(0, len(images), max_batch):
        with phases("model"):
            cls_logits, box_deltas = backend(images[start : start + max_batch])
        # one thread: many small ops, whose intra-op threads stall each other on a busy machine (measured
        # at --score 0.01 beside a niced job: 13 ms a tile on one thread, 40-100 ms on two)
        with phases("decode"), single_thread():
            outs += postprocess(anchors, cls_logits, box_deltas, sizes[start : start + max_batch], cfg)
    return outs


def _full_pass(reader: SceneSource, backend: Backend, in_hw: tuple[int, int], cfg: PostprocessConfig,
               phases: Phases) -> dict[str, torch.Tensor]:
    """The whole scene down-scaled to fit the model input, for objects larger than a tile. The read is
    decimated (GDAL picks the GeoTIFF's overviews when it has them): the full-resolution scene is never
    in memory."""
    with phases("read"):
        image, scale = reader.read_overview(min(in_hw))
    h, w = image.shape[1:]
    buf = np.zeros((1, 3, *in_hw), dtype=np.uint8)
    buf[0, :, :h, :w] = image
    anchors = generate_anchors(backend.meta.anchors, *in_hw, device=backend.device)
    det = run_batch(backend, buf, [(h, w)], anchors, cfg, phases)[0]
    det["boxes"] = det["boxes"] * scale
    return det


class _Collect:
    """The default sink: keeps the final detections in memory (for ``infer_scene``'s result)."""

    def __init__(self):
        self.parts: list[Detections] = []

    def write(self, dets: Detections) -> None:
        self.parts.append(dets)

    def close(self) -> None:
        pass


class _TiledScene:
    """One scene's tiles through the model: slots of a batch buffer, per-tile decode, the cross-tile merge,
    and final detections handed to ``sink`` as they become final."""

    def __init__(self, reader: SceneSource, backend: Backend, options: TileOptions, sink, phases: Phases):
        meta = backend.meta
        self.backend, self.sink, self.phases = backend, sink, phases
        self.windows = tile_windows(reader.height, reader.width, options.tile, options.overlap)
        self.in_hw = input_size(meta.input_size, self.windows, options.tile, stride=meta.anchors.max_stride)
        self.anchors = generate_anchors(meta.anchors, *self.in_hw, device=backend.device)
        self.cfg = options.post_config(meta.post)
        self.keep_labels = class_filter(options.classes, meta.class_names)
        self.offsets = torch.tensor(self.windows, dtype=torch.float32)[:, :2].repeat(1, 2)  # [T,4] x0 y0 x0 y0
        self.merger = LocalMerger(torch.tensor(self.windows), nms_iou=meta.post.nms_iou, merge_cut=options.merge_cut)
        self.buf = np.zeros((options.batch, 3, *self.in_hw), dtype=np.uint8)
        self.pending: list[int] = []  # window index of each filled slot of buf
        self.tiles_run = 0
        self.count = 0

    def emit(self, dets: Detections) -> None:
        if len(dets["scores"]):
            self.count += len(dets["scores"])
            with self.phases("write"):
                self.sink.write(dets)

    def filtered(self, det: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return keep_classes(det, self.keep_labels)

    def full_pass(self, reader: SceneSource) -> None:
        """The down-scaled whole-scene pass; first, as its boxes must be known before a tile box is final."""
        det = self.filtered(_full_pass(reader, self.backend, self.in_hw, self.cfg, self.phases))
        with self.phases("merge"):
            self.merger.add_global(det["boxes"], det["scores"], det["labels"])

    def add_tile(self, i: int, tile_img: np.ndarray | None) -> None:
        """Tile ``i``'s pixels (None: no data, complete with no detections); runs the batch when full."""
        if tile_img is None:
            self.emit(self.merger.add(i, torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long)))
            return
        slot = len(self.pending)
        h, w = tile_img.shape[1:]
        if (h, w) != self.in_hw:
            self.buf[slot] = 0
        self.buf[slot, :, :h, :w] = tile_img
        self.pending.append(i)
        self.tiles_run += 1
        if len(self.pending) == len(self.buf):
            self.flush()

    def flush(self) -> None:
        """The model on the filled slots; their detections into the merge; what became final out."""
        if not self.pending:
            return
        win = self.windows
        sizes = [(win[i][3] - win[i][1], win[i][2] - win[i][0]) for i in self.pending]
        dets = run_batch(self.backend, self.buf[: len(self.pending)], sizes, self.anchors, self.cfg, self.phases)
        for i, d in zip(self.pending, dets):
            d = self.filtered(d)
            with self.phases("merge"):
                final = self.merger.add(i, d["boxes"] + self.offsets[i], d["scores"], d["labels"])
            self.emit(final)
        self.pending.clear()
        if self.merger.ready():
            with self.phases("merge"):
                final = self.merger.step()
            self.emit(final)

    def finish(self) -> None:
        """The last batch, the rest of the merge, and the sink closed (the outputs written)."""
        self.flush()
        with self.phases("merge"):
            final = self.merger.finish()
        self.emit(final)
        with self.phases("write"):
            self.sink.close()


def infer_reader(reader: SceneSource, backend: Backend, options: TileOptions | None = None, *,
                 progress: bool = True, sink=None) -> SceneResult:
    """Tiled inference over an open ``SceneSource`` (a ``SceneReader``; see ``infer_scene``).

    Detections are merged as tiles complete (``LocalMerger``) and handed to ``sink.write(dets)`` as soon as
    they are final, then ``sink.close()``; without a sink they are kept and returned in the result.
    """
    options = options or TileOptions()
    t0 = time.perf_counter()
    phases = Phases()
    collect = sink is None
    sink = _Collect() if collect else sink
    run = _TiledScene(reader, backend, options, sink, phases)
    windows = run.windows
    if options.full_pass:
        run.full_pass(reader)
    producer = _TileReader(reader, windows, options.workers, capacity=2 * options.batch + options.workers)
    # the bar's last step is the final merge and the writing of the outputs
    bar = tqdm(total=len(windows) + 1, unit="tile", desc=reader.path.name, disable=not progress, leave=False)
    try:
        for _ in range(len(windows)):
            with phases("read"):
                i, tile_img = producer.out.get()
            bar.update(1)
            if isinstance(tile_img, Exception):
                raise AdlaError(f"cannot read window {windows[i]} ({tile_img.__class__.__name__}: {tile_img})",
                                reader.path) from tile_img
            run.add_tile(i, tile_img)
        producer.close()
        bar.set_description(f"{reader.path.name}: merge + write")
        run.finish()
        bar.update(1)
    finally:
        producer.close()
        bar.close()

    result = SceneResult(path=reader.path, width=reader.width, height=reader.height, tiles=len(windows),
                         tiles_run=run.tiles_run, seconds=time.perf_counter() - t0,
                         class_names=list(backend.meta.class_names), info=reader.info, count=run.count,
                         phases=dict(phases.seconds), pending_peak=run.merger.pending_peak)
    if collect:
        dets = cat_detections(sink.parts)
        order = dets["scores"].argsort(descending=True, stable=True)
        result.boxes, result.scores, result.labels = dets["boxes"][order], dets["scores"][order], dets["labels"][order]
    return result


def infer_scene(scene_path: str | Path, backend: Backend, options: TileOptions | None = None, *,
                progress: bool = True) -> SceneResult:
    """Detections of one scene, cut into ``options.tile`` squares with ``options.overlap`` (fraction),
    ``options.batch`` tiles per call.

    Returns a ``SceneResult`` with boxes [K,4] xyxy scene pixels, scores [K], labels [K] (0-based), merged
    across tiles by class-wise NMS (and cut-box fusion with ``merge_cut``; plus a down-scaled whole-scene
    pass with ``full_pass``). Raises ``AdlaError`` when the scene cannot be read.
    """
    options = options or TileOptions()
    reader = SceneReader(scene_path, bands=options.bands)
    try:
        return infer_reader(reader, backend, options, progress=progress)
    finally:
        reader.close()


def expand_scenes(paths: list[str | Path]) -> list[Path]:
    """Scene files: files as given, folders expanded to their raster files (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in SCENE_SUFFIXES)
        else:
            out.append(p)
    return out


def _unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f"{p.stem}_{n + 1}")
    return stems


PIPELINE_FOOTER = "read = waiting for tiles (reads run in background threads); the merge runs as tiles complete"


def summary_table(results: list[SceneResult], footer: str = PIPELINE_FOOTER) -> str:
    """Plain aligned table: scene, size, tiles, tiles/s, detections, time, time per phase, status."""
    rows = [("scene", "size (WxH)", "tiles", "tiles/s", "detections", "time (s)",
             "read/model/decode/merge/write (s)", "status")]
    for r in results:
        if r.error:
            rows.append((r.path.name, "-", "-", "-", "-", "-", "-", "FAILED"))
        elif r.skipped:
            rows.append((r.path.name, "-", "-", "-", "-", "-", "-", r.note or "done before (--resume)"))
        else:
            ph = "/".join(f"{r.phases.get(k, 0.0):.1f}" for k in Phases.NAMES)
            rows.append((r.path.name, f"{r.width}x{r.height}", f"{r.tiles} ({r.tiles_run} run)",
                         f"{r.tiles_per_s:.1f}", str(r.num_detections), f"{r.seconds:.2f}", ph, "ok"))
    lines = [format_table(rows)]
    failed = [r for r in results if r.error]
    if failed:
        lines.append(f"{len(failed)} of {len(results)} scenes failed:")
        lines += [f"  {r.error}" for r in failed]
    lines.append(footer)
    return "\n".join(lines)


@dataclass
class PlannedScene:
    """A scene of a run: its file, its output stem, whether its outputs were complete when planned
    (``--resume``) and its manifest's state then (another run may finish it meanwhile)."""

    path: Path
    stem: str
    done: bool
    seen: tuple[int, int] | None


def plan_scenes(scene_paths: list[str | Path], out_dir: str | Path, *, shard_spec: str | None = None,
                resume: bool = False) -> list[PlannedScene]:
    """The scenes of a run, in order.

    Folders are expanded; ``shard_spec`` "i/n" keeps scene k with k % n == i; ``resume`` skips scenes whose
    outputs are complete in ``out_dir`` (their manifest ``{stem}.done.json``, written last, lists every file
    at its size: ``adla.runtime.claims.is_complete``).
    """
    scenes = expand_scenes(list(scene_paths))
    if shard_spec:
        scenes = shard(scenes, *parse_shard(shard_spec))
    if not scenes:
        raise AdlaError("no scenes to process")
    return [PlannedScene(path, stem, resume and is_complete(out_dir, stem), manifest_state(out_dir, stem))
            for path, stem in zip(scenes, _unique_stems(scenes))]


def claim_scene(scene: PlannedScene, out_dir: str | Path) -> SceneClaim | SceneResult:
    """The claim on a scene's outputs, or the result that says why it is skipped: done before
    (``--resume``; its leftover partial files removed), written by another run meanwhile, or being written
    by another run now; or failed (the lock cannot be taken)."""
    try:
        claim = SceneClaim.take(out_dir, scene.stem)
    except AdlaError as exc:  # e.g. a link planted as the lock file: this scene fails, the others run
        return failed_scene(scene.path, exc)
    if isinstance(claim, str):
        return SceneResult(path=scene.path, skipped=True, note=f"skipped: {claim}")
    if scene.done or manifest_state(out_dir, scene.stem) != scene.seen:
        if scene.done:
            clean_partials(out_dir, scene.stem)
        claim.release()
        note = "done before (--resume)" if scene.done else "skipped: another adla run finished it meanwhile"
        return SceneResult(path=scene.path, skipped=True, note=note)
    return claim


def open_writer(reader: SceneReader, out_dir: str | Path, stem: str, class_names: list[str], *,
                preview_size: int, preview_score: float) -> SceneWriter:
    """The scene's streaming writer, with its preview picture read decimated (none when ``preview_size`` 0)."""
    preview = reader.read_overview(preview_size) if preview_size > 0 else None
    return SceneWriter(out_dir, stem, class_names=class_names, info=reader.info, preview=preview,
                       preview_score=preview_score)


def failed_scene(path: Path, exc: BaseException) -> SceneResult:
    """The result of a scene that failed, its one-line reason printed to stderr."""
    msg = str(exc) if isinstance(exc, AdlaError) else f"{exc.__class__.__name__}: {exc}"
    print(f"error: {msg}", file=sys.stderr)
    return SceneResult(path=path, error=msg)


def infer_scenes(scene_paths: list[str | Path], model_path: str | Path, out_dir: str | Path,
                 options: TileOptions | None = None, *, device: str = "auto", shard_spec: str | None = None,
                 preview_size: int = 2048, print_summary: bool = True, resume: bool = False,
                 preview_score: float = PREVIEW_SCORE, progress: bool = True) -> list[SceneResult]:
    """Run tiled inference over scenes (see ``plan_scenes``) in this process and stream per scene
    ``{stem}.coco.json``, ``{stem}.geojson``, ``{stem}.preview.jpg`` and last the manifest ``{stem}.done.json``
    into ``out_dir`` (``SceneWriter``: a killed run leaves ``{stem}.partial.geojsonl``). Each scene is
    claimed first (``claim_scene``): a scene that another run is writing is skipped and said so.

    A scene that cannot be read is reported (its ``SceneResult.error``) and the others still run. Prints
    the summary table. ``adla.runtime.ray_infer.infer_scenes_ray`` does the same on Ray Data.
    """
    options = options or TileOptions()
    plan = plan_scenes(scene_paths, out_dir, shard_spec=shard_spec, resume=resume)
    backend = load_backend(model_path, device)
    results = []
    for scene in plan:
        claim = claim_scene(scene, out_dir)
        if isinstance(claim, SceneResult):
            results.append(claim)
            continue
        reader = writer = None
        try:
            reader = SceneReader(scene.path, bands=options.bands)
            writer = open_writer(reader, out_dir, scene.stem, list(backend.meta.class_names),
                                 preview_size=preview_size, preview_score=preview_score)
            result = infer_reader(reader, backend, options, progress=progress, sink=writer)
            result.outputs = writer.outputs
        except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the others; reported in the summary
            result = failed_scene(scene.path, exc)
            if writer is not None:
                writer.abort()
        finally:
            if reader is not None:
                reader.close()
            claim.release()
        results.append(result)
    if print_summary:
        print(summary_table(results))
    return results
