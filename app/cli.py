"""The ``adla`` command. Each stage registers its own subcommands; this module only assembles them.

In the app layer (``adla.app``), above the core and the stages: with the demo and the evaluate command it
is the one place that imports every stage. They are imported when the parser is built, so ``import adla``
alone never pulls in training, export or runtime code (``python -m adla.app.cli`` runs it).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from adla import __version__
from adla.errors import AdlaError, one_line


def process_settings() -> None:
    """What the ``adla`` command sets for its whole process, before any command imports torch. Importing
    adla changes no process-wide state; running the command does, here and only here.

    - OpenMP threads that wait for work sleep instead of spinning. On a small machine shared with another
      process (or with loader workers), spinning threads steal the cores the work needs: a training step of
      the real-data recipe took 2.24 s with spinning and 0.86 s without, next to another training job on
      2 cores, at a cost of about 20 % alone (0.45 -> 0.54 s; README, "Training"). An OMP_WAIT_POLICY
      already set (ACTIVE for a dedicated machine) is kept.
    - PNG/JPEG scenes have no georeference; that is expected (the writers say so in the outputs), not a
      warning for each file. A filter, not ``catch_warnings``, which is not thread-safe (readers run in
      threads).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    warnings.filterwarnings("ignore", message="Dataset has no geotransform, gcps, or rpcs")


def build_parser() -> argparse.ArgumentParser:
    from adla.app import demo, evaluate, weights
    from adla.data import commands as data_commands
    from adla.export import commands as export_commands
    from adla.runtime import commands as runtime_commands
    from adla.train import assign_commands
    from adla.train import commands as train_commands

    parser = argparse.ArgumentParser(
        prog="adla",
        description="Tiny-object detection in aerial imagery with adaptive dynamic label assignment: "
                    "train, evaluate, export (ONNX/TensorRT) and run tiled inference on large scenes.",
    )
    parser.add_argument("--version", action="version", version=f"adla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.register(sub)
    train_commands.register(sub)
    data_commands.register(sub)
    evaluate.register(sub)
    assign_commands.register(sub)
    export_commands.register(sub)
    runtime_commands.register(sub)
    weights.register(sub)
    bench = sub.add_parser("bench", help="benchmarks that print a table (assign, train-step, model, tiled)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    assign_commands.register_bench(bench_sub)
    train_commands.register_bench(bench_sub)
    export_commands.register_bench(bench_sub)
    runtime_commands.register_bench(bench_sub)
    def bench_help(args: argparse.Namespace) -> int:
        bench.print_help()
        return 2

    bench.set_defaults(func=bench_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    process_settings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AdlaError as exc:
        print(f"adla: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a bug, keep the traceback
            raise
        # a path the user gave cannot be read or written (permissions, a file where a folder must be)
        print(f"adla: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adla: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
