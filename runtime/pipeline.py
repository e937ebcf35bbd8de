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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from adla.anchors import generate_anchors
from adla.errors import AdlaError
from adla.postprocess import PostprocessConfig, postprocess
from adla.runtime.backends import Backend, load_backend
from adla.runtime.merge import Detections, empty_detections, merge_tiles
from adla.runtime.readers import SceneInfo, SceneReader
from adla.runtime.tiling import parse_shard, shard, tile_windows
from adla.runtime.writers import write_outputs

SCENE_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".jpg", ".jpeg")
_DONE = object()


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

    @property
    def detections(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


def _class_filter(classes: list[str] | None, names: tuple[str, ...]) -> torch.Tensor | None:
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


def _input_size(backend: Backend, windows: list[tuple[int, int, int, int]], tile: int) -> tuple[int, int]:
    """(H, W) of the model input: the graph's fixed size, or the largest window rounded up to 32."""
    fixed = backend.meta.input_size
    if fixed is not None:
        if max(y1 - y0 for _, y0, _, y1 in windows) > fixed[0] or max(x1 - x0 for x0, _, x1, _ in windows) > fixed[1]:
            raise AdlaError(f"tile {tile} is larger than the model's fixed input size {fixed[0]}x{fixed[1]}; "
                            f"use --tile {min(fixed)} or export with a dynamic size")
        return fixed
    h = max(y1 - y0 for _, y0, _, y1 in windows)
    w = max(x1 - x0 for x0, _, x1, _ in windows)
    return math.ceil(h / 32) * 32, math.ceil(w / 32) * 32


class _TileReader:
    """Reader threads: windows in, (index, uint8 [3,h,w] or None, or an exception) out, bounded queue."""

    def __init__(self, reader: SceneReader, windows: list, workers: int, capacity: int):
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


def _run_batch(backend: Backend, images: np.ndarray, sizes: list[tuple[int, int]], anchors: torch.Tensor,
               cfg: PostprocessConfig) -> list[dict[str, torch.Tensor]]:
    """Forward + per-tile decode, score threshold and NMS; ``images`` uint8 [B,3,H,W], sizes (h, w) per tile."""
    max_batch = backend.meta.max_batch or len(images)
    outs = []
    for start in range(0, len(images), max_batch):
        cls_logits, box_deltas = backend(images[start : start + max_batch])
        outs += postprocess(anchors, cls_logits, box_deltas, sizes[start : start + max_batch], cfg)
    return outs


def _full_pass(reader: SceneReader, backend: Backend, in_hw: tuple[int, int], cfg: PostprocessConfig
               ) -> dict[str, torch.Tensor]:
    """The whole scene down-scaled to fit the model input, for objects larger than a tile."""
    image, scale = reader.read_overview(min(in_hw))
    h, w = image.shape[1:]
    buf = np.zeros((1, 3, *in_hw), dtype=np.uint8)
    buf[0, :, :h, :w] = image
    anchors = generate_anchors(backend.meta.anchors, *in_hw, device=backend.device)
    det = _run_batch(backend, buf, [(h, w)], anchors, cfg)[0]
    det["boxes"] = det["boxes"] * scale
    return det


def infer_reader(reader: SceneReader, backend: Backend, *, tile: int = 800, overlap: float = 0.2, batch: int = 8,
                 score_thr: float = 0.3, workers: int = 2, merge_cut: bool = False, full_pass: bool = False,
                 classes: list[str] | None = None, progress: bool = True) -> SceneResult:
    """Tiled inference over an open ``SceneReader`` (see ``infer_scene``)."""
    if batch < 1:
        raise AdlaError(f"--batch must be >= 1, got {batch}")
    t0 = time.perf_counter()
    meta = backend.meta
    height, width = reader.height, reader.width
    windows = tile_windows(height, width, tile, overlap)
    in_h, in_w = _input_size(backend, windows, tile)
    anchors = generate_anchors(meta.anchors, in_h, in_w, device=backend.device)
    cfg = PostprocessConfig(score_thr=score_thr, pre_nms_topk=meta.post.pre_nms_topk, nms_iou=meta.post.nms_iou,
                            max_dets=meta.post.max_dets)
    keep_labels = _class_filter(classes, meta.class_names)
    win_t = torch.tensor(windows, dtype=torch.long)
    offsets = win_t[:, :2].repeat(1, 2).float().to(backend.device)  # [T,4] (x0, y0, x0, y0)

    buf = np.zeros((batch, 3, in_h, in_w), dtype=np.uint8)
    pending: list[int] = []  # window index of each filled slot of buf
    parts: list[Detections] = []
    tiles_run = 0

    def flush() -> None:
        sizes = [(windows[i][3] - windows[i][1], windows[i][2] - windows[i][0]) for i in pending]
        dets = _run_batch(backend, buf[: len(pending)], sizes, anchors, cfg)
        idx = torch.tensor(pending, device=backend.device)
        counts = torch.tensor([len(d["scores"]) for d in dets], device=backend.device)
        tiles = torch.repeat_interleave(idx, counts)
        part = {"boxes": torch.cat([d["boxes"] for d in dets]) + offsets[tiles],
                "scores": torch.cat([d["scores"] for d in dets]), "labels": torch.cat([d["labels"] for d in dets]),
                "tiles": tiles}
        if keep_labels is not None:
            part = {k: v[torch.isin(part["labels"], keep_labels.to(v.device))] for k, v in part.items()}
        parts.append(part)
        pending.clear()

    producer = _TileReader(reader, windows, workers, capacity=2 * batch + workers)
    bar = tqdm(total=len(windows), unit="tile", desc=reader.path.name, disable=not progress, leave=False)
    try:
        for _ in range(len(windows)):
            i, tile_img = producer.out.get()
            bar.update(1)
            if isinstance(tile_img, Exception):
                raise AdlaError(f"cannot read window {windows[i]} ({tile_img.__class__.__name__}: {tile_img})",
                                reader.path) from tile_img
            if tile_img is None:
                continue
            slot = len(pending)
            h, w = tile_img.shape[1:]
            if h != in_h or w != in_w:
                buf[slot] = 0
            buf[slot, :, :h, :w] = tile_img
            pending.append(i)
            tiles_run += 1
            if len(pending) == batch:
                flush()
        if pending:
            flush()
    finally:
        producer.close()
        bar.close()

    if full_pass:
        det = _full_pass(reader, backend, (in_h, in_w), cfg)
        full_idx = len(windows)
        win_t = torch.cat([win_t, torch.tensor([[0, 0, width, height]])])
        det["tiles"] = torch.full_like(det["labels"], full_idx)
        if keep_labels is not None:
            det = {k: v[torch.isin(det["labels"], keep_labels.to(v.device))] for k, v in det.items()}
        parts.append(det)
    dets = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else empty_detections(backend.device)
    dets = merge_tiles(dets, win_t, (height, width), nms_iou=meta.post.nms_iou, merge_cut=merge_cut)
    dets = {k: v.cpu() for k, v in dets.items()}
    return SceneResult(path=reader.path, width=width, height=height, tiles=len(windows), tiles_run=tiles_run,
                       seconds=time.perf_counter() - t0, boxes=dets["boxes"], scores=dets["scores"],
                       labels=dets["labels"], class_names=list(meta.class_names), info=reader.info)


def infer_scene(scene_path: str | Path, backend: Backend, *, tile: int = 800, overlap: float = 0.2,
                batch: int = 8, score_thr: float = 0.3, workers: int = 2, merge_cut: bool = False,
                full_pass: bool = False, classes: list[str] | None = None, progress: bool = True,
                bands: tuple[int, ...] | None = None) -> SceneResult:
    """Detections of one scene, tiled ``tile`` x ``tile`` with ``overlap`` (fraction), ``batch`` tiles per call.

    Returns a ``SceneResult`` with boxes [K,4] xyxy scene pixels, scores [K], labels [K] (0-based), merged
    across tiles by class-wise NMS (and cut-box fusion with ``merge_cut``; plus a down-scaled whole-scene
    pass with ``full_pass``). Raises ``AdlaError`` when the scene cannot be read.
    """
    reader = SceneReader(scene_path, bands=bands)
    try:
        return infer_reader(reader, backend, tile=tile, overlap=overlap, batch=batch, score_thr=score_thr,
                            workers=workers, merge_cut=merge_cut, full_pass=full_pass, classes=classes,
                            progress=progress)
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


def summary_table(results: list[SceneResult]) -> str:
    """Plain aligned table: scene, size, tiles, tiles/s, detections, time, status."""
    rows = [("scene", "size (WxH)", "tiles", "tiles/s", "detections", "time (s)", "status")]
    for r in results:
        if r.error:
            rows.append((r.path.name, "-", "-", "-", "-", "-", "FAILED"))
        else:
            rows.append((r.path.name, f"{r.width}x{r.height}", f"{r.tiles} ({r.tiles_run} run)",
                         f"{r.tiles_per_s:.1f}", str(r.detections), f"{r.seconds:.2f}", "ok"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in results if r.error]
    if failed:
        lines.append(f"{len(failed)} of {len(results)} scenes failed:")
        lines += [f"  {r.error}" for r in failed]
    return "\n".join(lines)


def infer_scenes(scene_paths: list[str | Path], model_path: str | Path, out_dir: str | Path, *,
                 device: str = "auto", shard_spec: str | None = None, preview_size: int = 2048,
                 bands: tuple[int, ...] | None = None, print_summary: bool = True, **opts) -> list[SceneResult]:
    """Run ``infer_scene`` over scenes (folders expanded; ``shard_spec`` "i/n" keeps scene k with k % n == i)
    and write per scene ``{stem}.coco.json``, ``{stem}.geojson`` and ``{stem}.preview.jpg`` into ``out_dir``.

    ``opts`` are ``infer_scene``'s keyword arguments. A scene that cannot be read is reported (its
    ``SceneResult.error``) and the others still run. Prints the summary table.
    """
    scenes = expand_scenes(list(scene_paths))
    if shard_spec:
        scenes = shard(scenes, *parse_shard(shard_spec))
    if not scenes:
        raise AdlaError("no scenes to process")
    backend = load_backend(model_path, device)
    results = []
    for path, stem in zip(scenes, _unique_stems(scenes)):
        reader = None
        try:
            reader = SceneReader(path, bands=bands)
            result = infer_reader(reader, backend, **opts)
            preview = reader.read_overview(preview_size) if preview_size > 0 else None
            result.outputs = write_outputs(out_dir, stem, boxes=result.boxes, scores=result.scores,
                                           labels=result.labels, class_names=result.class_names, info=reader.info,
                                           preview=preview)
        except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the others; reported in the summary
            msg = str(exc) if isinstance(exc, AdlaError) else f"{exc.__class__.__name__}: {exc}"
            print(f"error: {msg}", file=sys.stderr)
            result = SceneResult(path=path, error=msg)
        finally:
            if reader is not None:
                reader.close()
        results.append(result)
    if print_summary:
        print(summary_table(results))
    return results
