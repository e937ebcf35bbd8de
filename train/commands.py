"""``adla train`` and ``adla bench train-step``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a detector from a YAML config",
        description="Train a detector. Multi-GPU / multi-node: launch with torchrun, e.g. "
                    "`torchrun --nproc_per_node 4 -m adla.app.cli train CONFIG` (gloo is used on CPU).")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. optim.epochs=2 data.batch_size=4")
    p.add_argument("--out", help="output folder (overrides out_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue from <out>/last.pt, or from CKPT")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an --out that holds a run, deleting its last.pt, model.pt, metrics and log "
                        "(and replace a config.yaml, metrics.json or log.csv there that adla train did not write)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    p.set_defaults(func=_train)


def _train(args) -> int:
    import os

    from adla.config import load_config
    from adla.metrics import format_metrics_table
    from adla.train.distributed import pick_device
    from adla.train.loop import train
    from adla.train.run_dir import check_config_output, prepare_run_dir

    overrides = list(args.set) + ([f"out_dir={args.out}"] if args.out else [])
    cfg = load_config(args.config, overrides)
    pick_device(args.device)  # a missing GPU is one line, before any work
    check_config_output(cfg, args.config)
    stale = prepare_run_dir(cfg.out_dir, resume=bool(args.resume), overwrite=args.overwrite,
                            is_main=os.environ.get("RANK", "0") == "0")
    if stale:
        print(f"removed {len(stale)} stale temporary file(s) of a killed write from {cfg.out_dir}")
    result = train(cfg, resume=args.resume, device=args.device, evaluate=not args.no_eval)
    if result.metrics:
        print(format_metrics_table({cfg.assigner.name: result.metrics}))
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    return 3 if result.interrupted else 0


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-step", help="step time of max-IoU vs ADLA training on the same batch")
    p.add_argument("--config", help="YAML config for the model (default: the small CPU config)")
    p.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--objects", type=int, default=300, help="GTs per image (default 300)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per assigner (default 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision as adla train runs it (autocast, GradScaler, clipping); CUDA only")
    p.add_argument("--json", help="write the results as JSON here")
    p.set_defaults(func=_bench_train_step)


def _bench_train_step(args) -> int:
    from adla.train.bench_step import bench_train_step, format_step_table

    res = bench_train_step(config=args.config, size=args.size, batch=args.batch, objects=args.objects,
                           steps=args.steps, warmup=args.warmup, device=args.device, amp=args.amp)
    print(format_step_table(res))
    if args.json:
        from adla.io import write_json
        write_json(args.json, res)
    return 0
