"""CLI: ``adla data convert`` and ``adla data synth`` (``adla evaluate`` is in ``adla.app.evaluate``).

``register(subparsers)`` adds the commands; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adla.errors import AdlaError


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="convert label formats to COCO json, make synthetic data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{convert,synth}")

    conv = data_sub.add_parser(
        "convert", help="DOTA / YOLO / YOLO-OBB / Airbus CSV labels to COCO json",
        description="Convert labels to COCO json (horizontal boxes, xywh pixels). Without --downscale the json "
                    "references the original images relative to --images; with it, resized PNGs are written to "
                    "--out-images (default: <out stem>_images beside the json).")
    conv.add_argument("--format", required=True, choices=["dota", "yolo", "yolo-obb", "airbus-csv"])
    conv.add_argument("--images", required=True, type=Path, help="image folder")
    conv.add_argument("--labels", required=True, type=Path,
                      help="label folder (same-stem .txt files), or the CSV file for airbus-csv")
    conv.add_argument("--out", required=True, type=Path, help="output COCO json")
    conv.add_argument("--names", type=Path, help="class names: a .names/.txt file (one a line) or a dataset yaml")
    conv.add_argument("--classes", help="class names as a comma-separated list (instead of --names)")
    conv.add_argument("--include", help="glob on image file names, e.g. 'MOS*'")
    conv.add_argument("--dedupe", metavar="SEP",
                      help="keep one image per source name, the part of the file name before SEP (e.g. '.rf.' "
                           "for the augmented copies of a Roboflow export)")
    conv.add_argument("--downscale", type=float, default=1.0, help="resize factor in (0, 1], e.g. 0.5")
    conv.add_argument("--out-images", type=Path, help="folder for resized images (with --downscale)")
    conv.add_argument("--overwrite", action="store_true",
                      help="replace an --out json or resized images that adla data convert did not write")
    conv.set_defaults(func=_convert)

    syn = data_sub.add_parser("synth", help="write a synthetic tiny-object data set (train.json, val.json, PNGs)")
    syn.add_argument("--out", required=True, type=Path)
    syn.add_argument("--train", type=int, default=64, help="training images")
    syn.add_argument("--val", type=int, default=16, help="validation images")
    syn.add_argument("--size", type=int, default=256, help="image side in pixels")
    syn.add_argument("--classes", type=int, default=3)
    syn.add_argument("--objects", type=int, default=None, help="objects per image (default: by area)")
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_synth)


def _convert(args: argparse.Namespace) -> int:
    from adla.checks import check_output_file, check_writable_dir
    from adla.data.convert import convert_dataset, format_summary

    if args.names and args.classes:
        raise AdlaError("give --names or --classes, not both")
    check_output_file(args.out, "--out")  # before converting, not after
    if args.out_images is not None:
        check_writable_dir(args.out_images, "--out-images")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    summary = convert_dataset(args.format, args.images, args.labels, args.out, class_names=classes,
                              names_file=args.names, include=args.include, downscale=args.downscale,
                              out_images_dir=args.out_images, progress=True, overwrite=args.overwrite,
                              dedupe=args.dedupe)
    print(format_summary(summary))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from adla.data.coco import CocoDetection
    from adla.data.synth import make_synth_dataset

    if args.size < 32 or args.classes < 1 or args.train < 0 or args.val < 0:
        raise AdlaError("need --size >= 32, --classes >= 1 and non-negative --train/--val")
    from adla.checks import check_writable_dir

    check_writable_dir(args.out, "--out")
    rows = []
    for split, n in (("train", args.train), ("val", args.val)):
        if n == 0:
            continue
        ann = make_synth_dataset(args.out, num_images=n, size=(args.size, args.size), num_classes=args.classes,
                                 seed=args.seed, split_name=split, num_objects=args.objects)
        ds = CocoDetection(ann, args.out)
        rows.append((split, str(len(ds)), str(ds.num_boxes), str(ann)))
    from adla.tables import format_table

    print(format_table([("split", "images", "boxes", "json"), *rows]))
    print(f"images under {args.out}; train with --images {args.out}")
    return 0
