"""``adla demo``: the whole product in one command on built-in synthetic data (or a given COCO set).

1. make a synthetic tiny-object data set (unless --data is given);
2. train the max-IoU baseline and ADLA with the same short schedule, evaluate both, table side by side;
3. export the ADLA detector to ONNX and compare baseline vs ADLA at inference (params, FLOPs, graphs,
   latency): ADLA costs nothing there;
4. run the exported ADLA model over a large synthetic scene with the tiled runtime.

Like the CLI, this module orchestrates the stages and imports them inside its functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from adla.errors import AdlaError

# The small CPU model: ResNet-18 trained from scratch with BatchNorm, narrow 2-conv heads.
DEMO_OVERRIDES = [
    "model.backbone=resnet18", "model.norm=bn", "model.fpn_channels=64", "model.head_channels=64",
    "model.head_convs=2", "data.batch_size=4", "data.num_workers=2", "optim.lr=0.02",
    "optim.warmup_iters=50", "optim.grad_clip=10.0", "eval.score_thr=0.05", "log_every=5",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train baseline and ADLA briefly, evaluate, export, tiled inference, report")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--data", help="training COCO json (default: built-in synthetic data)")
    p.add_argument("--images", help="training images folder (with --data)")
    p.add_argument("--val", help="validation COCO json (with --data)")
    p.add_argument("--val-images", help="validation images folder (with --data)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs for each model (default 15)")
    p.add_argument("--train-images", type=int, default=96, help="synthetic training images (default 96)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--skip-export", action="store_true", help="stop after training and evaluation")
    p.add_argument("--scene-size", type=int, default=3072, help="side of the synthetic scene for tiled inference")
    p.set_defaults(func=run_demo)


def _synthetic_data(out: Path, n_train: int) -> tuple[Path, Path, Path, Path]:
    from adla.data.synth import make_synth_dataset

    root = out / "data"
    train = make_synth_dataset(root, num_images=n_train, size=(256, 256), seed=1, split_name="train")
    val = make_synth_dataset(root, num_images=max(n_train // 4, 8), size=(256, 256), seed=1, split_name="val")
    return train, root, val, root


def run_demo(args) -> int:
    from adla.config import load_config
    from adla.data.coco import CocoDetection
    from adla.metrics import format_metrics_table
    from adla.train.loop import train

    t_start = time.time()
    out = Path(args.out)
    if args.data:
        if not (args.images and args.val and args.val_images):
            raise AdlaError("--data needs --images, --val and --val-images")
        train_ann, train_img, val_ann, val_img = Path(args.data), Path(args.images), Path(args.val), \
            Path(args.val_images)
        print(f"[1/4] data: {train_ann} (train), {val_ann} (val)")
    else:
        print("[1/4] making synthetic tiny-object data ...")
        train_ann, train_img, val_ann, val_img = _synthetic_data(out, args.train_images)
    classes = CocoDetection(str(train_ann), str(train_img)).class_names
    base = DEMO_OVERRIDES + [
        f"model.num_classes={len(classes)}", f"optim.epochs={args.epochs}",
        f"optim.milestones=[{max(args.epochs - 2, 1)}]",
        f"data.train_ann={train_ann}", f"data.train_images={train_img}",
        f"data.val_ann={val_ann}", f"data.val_images={val_img}",
    ] + list(args.set)

    results, ckpts = {}, {}
    for i, name in enumerate(("maxiou", "adla")):
        print(f"[2/4] training {name} ({i + 1}/2), {args.epochs} epochs ...", flush=True)
        cfg = load_config(None, base + [f"assigner.name={name}", f"out_dir={out / name}"])
        res = train(cfg)
        results[name] = res.metrics or {}
        ckpts[name] = out / name / "model.pt"
    table = format_metrics_table({"max-IoU": results["maxiou"], "ADLA": results["adla"]})
    print("\nEvaluation (AI-TOD metrics, %):\n" + table, flush=True)
    report = ["# adla demo report", "", "## Evaluation (AI-TOD metrics, %)", "", "```", table, "```", ""]

    if not args.skip_export:
        from adla.export.onnx_export import export_onnx
        from adla.export.profile import compare_models, format_model_table
        from adla.runtime.pipeline import infer_scenes

        print("[3/4] exporting both detectors to ONNX and comparing them at inference ...", flush=True)
        onnx_path = out / "adla.onnx"
        export_onnx(ckpts["adla"], onnx_path, input_size=(512, 512))
        cmp = compare_models([ckpts["maxiou"], ckpts["adla"]], input_size=(512, 512), batch=1, runs=20,
                             warmup=3, out_dir=out / "bench_model")
        cmp_table = format_model_table(cmp)
        print(cmp_table, flush=True)
        report += ["## Inference cost: baseline vs ADLA", "", "```", cmp_table, "```", ""]

        print("[4/4] tiled inference of the exported ADLA model over a large synthetic scene ...", flush=True)
        scene = _synthetic_scene(out, args.scene_size)
        summaries = infer_scenes([scene], onnx_path, out / "infer", tile=512, overlap=0.2, batch=4, score_thr=0.3)
        report += ["## Tiled inference", "", "```", _summary_text(summaries), "```", ""]
    from adla.io import write_text

    write_text(out / "report.md", "\n".join(report))
    print(f"\ndemo finished in {time.time() - t_start:.0f} s; report: {out / 'report.md'}")
    return 0


def _synthetic_scene(out: Path, size: int) -> Path:
    from PIL import Image

    from adla.data.synth import synth_scene

    path = out / "scene.png"
    if not path.exists():
        img, *_ = synth_scene(size, size, seed=3)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    return path


def _summary_text(summaries) -> str:
    rows = []
    for s in summaries:
        d = dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(s)
        rows.append(", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (list, dict))))
    return "\n".join(rows)
