"""``adla infer``'s arguments checked once, before the first scene: a bad argument is one line, exit 2,
not the same failure repeated for every scene after hours of work."""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

from adla.checks import check_device, check_writable_dir
from adla.errors import AdlaError

from .backends import ModelMeta, read_model_meta
from .options import DEFAULT_TILE, TileOptions
from .pipeline import expand_scenes


def check_output_names(scenes: list[Path]) -> None:
    """AdlaError when two scenes would write the same ``--out/STEM.*`` files.

    Checked over the whole scene list before ``--shard`` splits it, so that shards run separately
    cannot overwrite each other's outputs either.
    """
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in scenes:
        by_stem[p.stem].append(p)
    clashes = {stem: ps for stem, ps in by_stem.items() if len(ps) > 1}
    if clashes:
        stem, ps = next(iter(clashes.items()))
        more = f" ({len(clashes) - 1} more name(s) clash too)" if len(clashes) > 1 else ""
        raise AdlaError(f"scenes {', '.join(map(str, ps[:3]))} would all write {stem}.* in --out{more}; give "
                        "them distinct file names or run them into separate --out folders")


def resolve_tile(tile: int | None, meta: ModelMeta, model_path: str | Path) -> tuple[int, str | None]:
    """The tile side for ``meta`` and a warning (or None).

    A model with a fixed input (H, W) sets the default tile to min(H, W); a larger ``tile`` cannot run
    (AdlaError); a smaller one runs but pads every tile to the full input: warn.
    """
    fixed = meta.input_size
    if fixed is None:
        return (tile or DEFAULT_TILE), None
    side = min(fixed)
    if tile is None:
        return side, None
    if tile > side:
        raise AdlaError(f"--tile {tile} is larger than the model's fixed input size {fixed[0]}x{fixed[1]}; use "
                        f"--tile {side} (the default for this model) or export with --dynamic-hw", model_path)
    if tile < side:
        cost = (side / tile) ** 2
        return tile, (f"--tile {tile} with a model fixed at {fixed[0]}x{fixed[1]}: every tile is padded to the full "
                      f"input, about {cost:.1f}x the compute per scene pixel; --tile {side} is faster")
    return tile, None


def check_infer_args(args: argparse.Namespace) -> TileOptions:
    """Check ``adla infer``'s arguments against each other, the machine and the model, once, and return
    the run's ``TileOptions``.

    The tile side defaults to the model's fixed input size, else 800; a warning is printed when a
    fixed-size model is given a smaller tile. ``--score`` not given: the model's own threshold.
    """
    # the ranges (TileOptions checks them), before the model is read; a tile not given is resolved below
    TileOptions(**({"tile": args.tile} if args.tile is not None else {}), overlap=args.overlap, batch=args.batch,
                workers=args.workers, score_thr=args.score)
    if getattr(args, "ray", None) is None:
        check_device(args.device)
    else:  # the GPUs are the cluster's, not necessarily this machine's: checked against the cluster later
        from .ray_infer import require_ray

        if args.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", args.device):
            raise AdlaError(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
        if args.full_pass:
            raise AdlaError("--full-pass is not supported with --ray yet; run it without --ray")
        if args.actors is not None and args.actors < 1:
            raise AdlaError(f"--actors must be at least 1, got {args.actors}")
        require_ray()
    check_output_names(expand_scenes(list(args.scenes)))
    check_writable_dir(args.out, "--out")
    meta = read_model_meta(args.model)
    for c in args.classes or []:
        if c not in meta.class_names and not (str(c).isdigit() and int(c) < meta.num_classes):
            raise AdlaError(f"--classes: unknown class {c!r}; the model has {list(meta.class_names)}", args.model)
    tile, warning = resolve_tile(args.tile, meta, args.model)
    if warning:
        print(f"adla: warning: {warning}", file=sys.stderr)
    return TileOptions(tile=tile, overlap=args.overlap, batch=args.batch, score_thr=args.score,
                       workers=args.workers, merge_cut=args.merge_cut, full_pass=args.full_pass,
                       classes=tuple(args.classes) if args.classes else None,
                       bands=tuple(args.bands) if args.bands else None)
