"""``adla bench merge``: time and peak memory of the cross-tile merge on synthetic dense tiled output,
the local merge (``LocalMerger``, fed tile by tile in row-major order) against class-wise NMS over the whole
scene at once (``nms_merge``, torchvision's ``batched_nms``, what ``adla infer`` ran before).

Synthetic detections laid out like tiled output: tiny objects (6-24 px) scattered over a scene of
``--tile`` tiles with ``--overlap``; every tile that sees an object reports it with a jittered box clipped to
the tile, three classes, then per-tile NMS, as ``adla infer`` does. The scene grows with ``--boxes``.

Each run is its own subprocess: its peak RSS growth (the peak during the merge minus the RSS before it,
the detections already made) is the merge's own memory.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import TYPE_CHECKING

from adla.errors import AdlaError
from adla.runtime.bench import maxrss_mb, spawn_child
from adla.tables import format_table

if TYPE_CHECKING:
    import torch

DETS_PER_TILE = 2000  # detections per 512 px tile after per-tile NMS, about: a dense scene or a low --score
OBJECT_SIDES = (6.0, 24.0)


def parse_count(text: str) -> int:
    """``30k`` -> 30000, ``3M`` -> 3000000, ``1500`` -> 1500."""
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError as exc:
        raise AdlaError(f"--boxes: cannot read {text!r} (e.g. 30k,300k,3M)") from exc


def synthetic_tiled_detections(boxes: int, *, tile: int = 512, overlap: float = 0.2, seed: int = 0,
                               per_tile: int = DETS_PER_TILE, return_objects: bool = False):
    """(per-tile detections [{boxes [K,4] scene px, scores, labels, tiles}], windows [T,4]): about ``boxes``
    detections in all; with ``return_objects`` also the objects {boxes [N,4], labels [N]} they come from."""
    import torch
    from torchvision.ops import batched_nms

    from adla.runtime.tiling import tile_windows

    g = torch.Generator().manual_seed(seed)
    step = tile - int(overlap * tile)
    # tiles needed, then a scene about 3 wide for 2 high
    tiles = max(1, math.ceil(boxes / per_tile))
    rows = max(1, round(math.sqrt(tiles * 2 / 3)))
    cols = max(1, math.ceil(tiles / rows))
    height, width = tile + step * (rows - 1), tile + step * (cols - 1)
    windows = torch.tensor(tile_windows(height, width, tile, overlap))
    # objects: enough that a tile sees about DETS_PER_TILE of them (its area over the scene's, per object)
    density = per_tile / (tile * tile)
    n_obj = int(density * height * width)
    centre = torch.rand(n_obj, 2, generator=g) * torch.tensor([width, height], dtype=torch.float32)
    side = torch.rand(n_obj, 2, generator=g) * (OBJECT_SIDES[1] - OBJECT_SIDES[0]) + OBJECT_SIDES[0]
    obj = torch.cat([centre - side / 2, centre + side / 2], 1)
    conf = torch.rand(n_obj, generator=g) * 0.9 + 0.05
    label = torch.randint(0, 3, (n_obj,), generator=g)
    order = obj[:, 1].argsort()  # objects by top edge, so a row of tiles takes a slice
    obj, conf, label = obj[order], conf[order], label[order]
    top = obj[:, 1].contiguous()
    parts = []
    for t, (x0, y0, x1, y1) in enumerate(windows.tolist()):
        lo = int(torch.searchsorted(top, torch.tensor(float(y0 - OBJECT_SIDES[1]))))
        hi = int(torch.searchsorted(top, torch.tensor(float(y1))))
        o = obj[lo:hi]
        sel = ((o[:, 2] > x0) & (o[:, 0] < x1) & (o[:, 3] > y0)).nonzero().squeeze(1)
        b = o[sel] + torch.randn(len(sel), 4, generator=g) * 1.0
        b[:, 0::2] = b[:, 0::2].clamp(x0, x1)
        b[:, 1::2] = b[:, 1::2].clamp(y0, y1)
        s = (conf[lo:hi][sel] + torch.randn(len(sel), generator=g) * 0.02).clamp(0.01, 1.0)
        lab = label[lo:hi][sel]
        ok = ((b[:, 2] - b[:, 0]) >= 2) & ((b[:, 3] - b[:, 1]) >= 2)
        b, s, lab = b[ok], s[ok], lab[ok]
        k = batched_nms(b, s, lab, 0.5)
        parts.append({"boxes": b[k], "scores": s[k], "labels": lab[k], "tiles": torch.full((len(k),), t)})
    if return_objects:
        return parts, windows, {"boxes": obj, "labels": label}
    return parts, windows


def _child(spec: dict) -> dict:
    import torch

    from adla.runtime.merge import LocalMerger, cat_detections, nms_merge

    parts, windows = synthetic_tiled_detections(spec["boxes"], tile=spec["tile"], overlap=spec["overlap"])
    before = maxrss_mb()
    t = time.perf_counter()
    if spec["method"] == "local":  # fed tile by tile, as adla infer does
        merger = LocalMerger(windows, nms_iou=0.5, merge_cut=spec.get("merge_cut", False))
        kept = 0
        for tile, p in enumerate(parts):
            kept += len(merger.add(tile, p["boxes"], p["scores"], p["labels"])["scores"])
            if merger.ready():
                kept += len(merger.step()["scores"])
        kept += len(merger.finish()["scores"])
        pending = merger.pending_peak
    else:
        torch.set_num_threads(1)  # torchvision's CPU NMS is single-threaded; spare the 2nd core the spinning
        kept = len(nms_merge(cat_detections(parts), 0.5)["scores"])
        pending = 0
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "growth_mb": maxrss_mb() - before, "boxes_in": sum(len(p["scores"]) for p in parts),
            "boxes_out": kept, "tiles": len(windows), "pending_peak": pending}


def _spawn(spec: dict) -> dict:
    return spawn_child("adla.runtime.bench_merge", spec, f"merge benchmark {spec}")


def _sahi_greedy_nmm(dets: dict, thr: float = 0.5) -> dict:
    """SAHI 0.12's own GreedyNMMPostprocess (IOS 0.5, class-wise), its default merge, on the same boxes."""
    import torch
    from sahi.postprocess.combine import GreedyNMMPostprocess
    from sahi.prediction import ObjectPrediction

    preds = [ObjectPrediction(bbox=b, category_id=int(c), category_name=str(int(c)), score=float(s))
             for b, s, c in zip(dets["boxes"].tolist(), dets["scores"].tolist(), dets["labels"].tolist())]
    out = GreedyNMMPostprocess(match_threshold=thr, match_metric="IOS", class_agnostic=False)(preds)
    return {"boxes": torch.tensor([p.bbox.to_xyxy() for p in out], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([p.score.value for p in out]), "labels": torch.tensor([p.category.id for p in out])}


def _whole(out: dict, objects: dict, seam: torch.Tensor, iou: float = 0.7) -> float:
    """Fraction of the objects on seams that some output box of their class covers whole (IoU >= ``iou``)."""
    import torch
    from torchvision.ops import box_iou

    obj = objects["boxes"][seam]
    if len(obj) == 0 or len(out["scores"]) == 0:
        return 0.0
    hit = torch.zeros(len(obj), dtype=torch.bool)
    for start in range(0, len(obj), 4096):
        m = box_iou(obj[start : start + 4096], out["boxes"])
        m[objects["labels"][seam][start : start + 4096, None] != out["labels"][None]] = 0
        hit[start : start + 4096] = m.max(1).values >= iou
    return float(hit.float().mean())


def run_merge_quality(args: argparse.Namespace) -> int:
    """Seam pieces left by each merge on the same synthetic tiled detections (objects cut by tile borders)."""
    from adla.runtime.merge import TileGrid, cat_detections, merge_tiles, seam_leftovers

    n = parse_count(args.boxes.split(",")[0])
    parts, windows, objects = synthetic_tiled_detections(n, tile=args.tile, overlap=args.overlap,
                                                         per_tile=args.per_tile, return_objects=True)
    dets = cat_detections(parts)
    rng = TileGrid(windows).ranges(objects["boxes"])
    seam = ((rng[:, 1] - rng[:, 0] + 1) * (rng[:, 3] - rng[:, 2] + 1)) >= 2
    merges = {"adla (NMS)": lambda: merge_tiles(dets, windows, nms_iou=0.5),
              "adla --merge-cut": lambda: merge_tiles(dets, windows, nms_iou=0.5, merge_cut=True)}
    try:
        import sahi  # noqa: F401

        merges["SAHI 0.12 GREEDYNMM (IOS 0.5)"] = lambda: _sahi_greedy_nmm(dets)
    except ImportError:
        print("sahi is not installed (pip install -e .[sahi]): its row is left out", file=sys.stderr)
    rows = [("merge", "time (s)", "detections", "seam pairs IoS>=0.5, IoU<0.5", "seam objects found whole")]
    for name, fn in merges.items():
        t = time.perf_counter()
        out = fn()
        sec = time.perf_counter() - t
        rows.append((name, f"{sec:.2f}", str(len(out["scores"])), str(seam_leftovers(out, windows)),
                     f"{100 * _whole(out, objects, seam):.1f} %"))
    print(f"{len(dets['scores'])} detections of {len(objects['labels'])} synthetic objects ({int(seam.sum())} on "
          f"seams), {len(windows)} tiles of {args.tile} px, overlap {args.overlap}")
    print(format_table(rows))
    print("seam pairs: pairs of output boxes of one class, both meeting 2+ tile windows, with intersection >= 0.5 "
          "of the smaller box but IoU < 0.5 (pieces NMS leaves); found whole: an output box with IoU >= 0.7")
    return 0


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--boxes", default="30k,300k,3M", help="comma list of detection counts (default 30k,300k,3M)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--global-max", default="300k",
                   help="run the whole-scene NMS only up to this many boxes (it grows faster than linearly)")
    p.add_argument("--merge-cut", action="store_true", help="also time the local merge with --merge-cut")
    p.add_argument("--per-tile", type=int, default=300,
                   help="--quality: objects a tile sees (default 300: sparse enough that objects rarely overlap)")
    p.add_argument("--quality", action="store_true",
                   help="instead: seam pieces left by NMS, --merge-cut and SAHI's GREEDYNMM (first --boxes size)")


def run_bench_merge(args: argparse.Namespace) -> int:
    if args.quality:
        return run_merge_quality(args)
    sizes = [parse_count(s) for s in args.boxes.split(",") if s.strip()]
    global_max = parse_count(args.global_max)
    methods = ["local"] + (["local, merge-cut"] if args.merge_cut else []) + ["global"]
    rows = [("boxes in", "tiles", "merge", "time (s)", "boxes/s", "peak growth (MB)", "most waiting", "boxes out",
             "same count as global")]
    skipped = []
    for n in sizes:
        results = {}
        for method in methods:
            if method == "global" and n > global_max:
                skipped.append(n)
                continue
            print(f"merge bench: {n} boxes, {method} ...", file=sys.stderr, flush=True)
            spec = {"boxes": n, "tile": args.tile, "overlap": args.overlap, "method": method.split(",")[0],
                    "merge_cut": method.endswith("merge-cut")}
            results[method] = r = _spawn(spec)
        for method, r in results.items():
            same = "-" if method != "local" or "global" not in results else \
                ("yes" if r["boxes_out"] == results["global"]["boxes_out"] else "NO")
            rows.append((str(r["boxes_in"]), str(r["tiles"]), method, f"{r['seconds']:.3f}",
                         f"{r['boxes_in'] / max(r['seconds'], 1e-9):,.0f}", f"{r['growth_mb']:.0f}",
                         str(r["pending_peak"]) if method != "global" else "-", str(r["boxes_out"]), same))
    print(format_table(rows))
    if skipped:
        print(f"global NMS skipped at {', '.join(map(str, skipped))} boxes (over --global-max {args.global_max}: "
              "torchvision's NMS over the whole scene would take minutes)")
    return 0


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
