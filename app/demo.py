"""``adla demo``: the whole product in one command on built-in synthetic data (or a given COCO set).

1. make a synthetic tiny-object data set (unless --data is given);
2. train the max-IoU baseline and ADLA with the same short schedule, evaluate both, table side by side;
3. export the ADLA detector to ONNX and compare baseline vs ADLA at inference (params, FLOPs, graphs,
   latency): ADLA costs nothing there;
4. run the exported ADLA model over a large synthetic scene with the tiled runtime.

In the app layer with the CLI: it orchestrates the stages and imports them inside its functions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from adla.errors import AdlaError

# The demo trains the small CPU model (``adla.config.small_model_overrides()``: ResNet-18 from scratch with
# BatchNorm, narrow 2-conv heads; its class count is the data's) with these settings. The model's
# overrides are fetched when the demo runs: adla.config imports torch, which building the CLI must not.
DEMO_OVERRIDES = [
    "data.batch_size=4", "data.num_workers=2", "optim.lr=0.02",
    "optim.warmup_iters=50", "optim.grad_clip=10.0", "eval.score_thr=0.05", "log_every=5",
]
SYNTH_EPOCHS = 15
# The recipe for real data (--data without --epochs): from-scratch training that converges on a few dozen
# aerial images in minutes on 2 CPU cores. Each part was measured on KIT AIS (README, "Training from
# scratch on real data"). The budget is in training pixels, so that small crops get more iterations in
# the same time: crop side and iterations follow from the data (``real_recipe``).
REAL_RECIPE = [
    "model.norm=gn", "data.rot90=true", "data.photometric=0.2", "optim.schedule=step", "optim.warmup_iters=100",
    "optim.ema=0.998", "optim.ema_warmup=100",
]
REAL_PIXELS = 900 * 4 * 224 * 224  # training budget: 900 iterations of 4 crops of 224 px (450: -5.4 car AP50, dev split)
REAL_DECAY_AT = 5 / 6  # the step decay (x0.1) at this share of the budget
# With ImageNet MobileNetV2 weights in torch's hub cache (``adla weights get mobilenet_v2``; the demo never
# downloads), the real-data recipe fine-tunes that backbone instead: frozen BN inside it (its ImageNet
# statistics; batch 4 cannot estimate better ones), GroupNorm in FPN and heads, which start from scratch.
# The rest of the recipe (views, crops, EMA, decay, lr 0.02 with 100 warm-up iterations) is the one above;
# on the development split of the training street (README, m1-m3) lr 0.01 gave no more, and 600 iterations
# the same car AP50 as 900 (95.1 vs 95.3) in the time a training may take (4 min on 2 cores).
PRETRAINED_BACKBONE = "mobilenet_v2"
PRETRAINED_RECIPE = [
    "model.backbone=mobilenet_v2", "model.backbone_weights=imagenet", "model.norm=frozen_bn", "model.head_norm=gn",
]
PRETRAINED_PIXELS = 600 * 4 * 224 * 224  # 600 iterations at KIT 0.5x (900: AP_t +3.8, car AP50 +0.2, 1.5x the time)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train baseline and ADLA briefly, evaluate, export, tiled inference, report")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--data", help="training COCO json (default: built-in synthetic data)")
    p.add_argument("--images", help="training images folder (with --data)")
    p.add_argument("--val", help="validation COCO json (with --data)")
    p.add_argument("--val-images", help="validation images folder (with --data)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs for each model (default: {SYNTH_EPOCHS} on the synthetic data; with "
                        "--data, the real-data recipe's iteration budget)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train each model with this many seeds and report mean +- std and the paired "
                        "difference ADLA - max-IoU (default 1)")
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


# about 60 lines: the demo's four steps in order, each a call; reads best as the script it is
def run_demo(args) -> int:
    from adla.config import load_config, small_model_overrides
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
    if args.seeds < 1:
        raise AdlaError(f"--seeds must be at least 1, got {args.seeds}")
    base = small_model_overrides(num_classes=len(classes)) + DEMO_OVERRIDES + [
        f"data.train_ann={train_ann}", f"data.train_images={train_img}",
        f"data.val_ann={val_ann}", f"data.val_images={val_img}",
    ] + _schedule(args, train_ann, train_img) + list(args.set)
    backbone = ""
    if args.data:
        backbone = _backbone_line(load_config(None, base).model)
        print(f"      backbone: {backbone}", flush=True)

    steps: list[tuple[str, float, str]] = []  # (step, seconds, outcome) for the closing recap
    runs: dict[str, list[dict]] = {"maxiou": [], "adla": []}
    ckpts = {}
    for seed in range(args.seeds):
        for i, name in enumerate(("maxiou", "adla")):
            tag = f"{name}, seed {seed}" if args.seeds > 1 else name
            run_dir = out / name if seed == 0 else out / f"{name}_seed{seed}"
            cfg = load_config(None, base + [f"assigner.name={name}", f"out_dir={run_dir}", f"seed={seed}"])
            print(f"[2/4] training {tag} ({seed * 2 + i + 1}/{2 * args.seeds}), {_plan(cfg)} ...", flush=True)
            t0 = time.time()
            res = train(cfg)
            m = res.metrics or {}
            runs[name].append(m)
            if seed == 0:
                ckpts[name] = run_dir / "model.pt"
            steps.append((f"train + evaluate {tag}", time.time() - t0,
                          f"AP50 {100 * m.get('AP50', 0):.1f} %, AP_vt {_pct(m.get('AP_vt'))}"))
    results = {name: ms[0] for name, ms in runs.items()}
    table = format_metrics_table({"max-IoU": results["maxiou"], "ADLA": results["adla"]})
    title = "Evaluation (AI-TOD metrics, %" + (", seed 0)" if args.seeds > 1 else ")")
    print(f"\n{title}:\n" + table, flush=True)
    report = ["# adla demo report", ""] + ([f"Backbone: {backbone}.", ""] if backbone else []) + [
        f"## {title}", "", "```", table, "```", ""]
    if args.seeds > 1:
        report += _seed_report(runs, classes, out, args.seeds)

    if not args.skip_export:
        if args.data:  # a large real scene: the validation images tiled into one mosaic, with their boxes
            scene = _mosaic(val_ann, val_img, out)
        else:
            scene = _synthetic_scene(out, args.scene_size)
        report += _export_and_infer(out, ckpts, scene, steps)
    from adla.io import write_text

    recap = _recap(steps)
    report += ["## Steps", "", "```", recap, "```", ""]
    write_text(out / "report.md", "\n".join(report))
    print("\n" + recap)
    print(f"\ndemo finished in {time.time() - t_start:.0f} s; report: {out / 'report.md'}")
    return 0


def _export_and_infer(out: Path, ckpts: dict[str, Path], scene_gt: tuple[Path, Path],
                      steps: list[tuple[str, float, str]]) -> list[str]:
    from adla.export.onnx_export import export_onnx
    from adla.export.profile import compare_models, format_model_table
    from adla.metrics import evaluate_detections, format_metrics_table, load_results
    from adla.runtime.options import TileOptions
    from adla.runtime.pipeline import infer_scenes, summary_table

    print("[3/4] exporting the ADLA detector to ONNX and comparing both detectors at inference ...", flush=True)
    t0 = time.time()
    onnx_path = out / "adla.onnx"
    rep = export_onnx(ckpts["adla"], onnx_path, input_size=(512, 512))
    steps.append(("export ONNX + parity", time.time() - t0, f"{onnx_path.name}, parity {_parity(rep)}"))
    t0 = time.time()
    cmp = compare_models([ckpts["maxiou"], ckpts["adla"]], input_size=(512, 512), batch=1, runs=30,
                         warmup=3, out_dir=out / "bench_model")
    cmp_table = format_model_table(cmp)
    print(cmp_table, flush=True)
    steps.append(("bench model (baseline vs ADLA)", time.time() - t0, "see table"))

    print("[4/4] tiled inference of the exported ADLA model over a large scene ...", flush=True)
    t0 = time.time()
    scene, gt = scene_gt
    runs = infer_scenes([scene], onnx_path, out / "infer", TileOptions(tile=512, overlap=0.2, batch=4, score_thr=0.05),
                        print_summary=False)
    tiled = summary_table(runs)
    print(tiled)
    scored = evaluate_detections(gt, load_results(out / "infer" / f"{scene.stem}.coco.json", _load(gt)))
    scene_table = format_metrics_table({"ADLA, tiled": scored})
    print(f"scene {scene.name} scored end to end against its {_count(gt)} objects:\n{scene_table}")
    steps.append(("tiled inference + scoring", time.time() - t0,
                  f"{runs[0].tiles} tiles, AP50 {100 * scored['AP50']:.1f} %"))
    return ["## Inference cost: baseline vs ADLA", "", "```", cmp_table, "```", "",
            "## Tiled inference of the ADLA ONNX model", "", "```", tiled, "", scene_table, "```", "",
            f"Outputs: {out / 'infer'} (COCO json, GeoJSON, preview).", ""]


def _schedule(args, train_ann: Path, train_img: Path) -> list[str]:
    """Schedule overrides: --epochs when given, else the real-data recipe (--data) or the synthetic default."""
    if args.epochs is not None:
        if args.epochs < 1:
            raise AdlaError(f"--epochs must be at least 1, got {args.epochs}")
        return [f"optim.epochs={args.epochs}", f"optim.milestones=[{max(args.epochs - 2, 1)}]"]
    if args.data:
        return real_recipe(train_ann, train_img, pretrained=_pretrained_weights() is not None)
    return [f"optim.epochs={SYNTH_EPOCHS}", f"optim.milestones=[{SYNTH_EPOCHS - 2}]"]


def _pretrained_weights() -> Path | None:
    """The checked ImageNet weights of the pretrained recipe's backbone in torch's hub cache, or None.

    Never downloads; a file there that fails its sha256 is an error naming the fix, not a silent fallback."""
    from adla.weights import find

    return find(PRETRAINED_BACKBONE)


def _backbone_line(model_cfg) -> str:
    """Which backbone and weights a run's model config builds, in words (printed and in report.md)."""
    from adla.model import resolved_head_norm, resolved_norm

    norms = f"{resolved_norm(model_cfg)} norm in the backbone, {resolved_head_norm(model_cfg)} in FPN and heads"
    if not model_cfg.backbone_weights:
        why = ""
        if _pretrained_weights() is None:
            from adla.weights import get_command, hub_dir

            why = (f"; no {PRETRAINED_BACKBONE} ImageNet weights in {hub_dir()}, `{get_command(PRETRAINED_BACKBONE)}`"
                   " gets them")
        return f"{model_cfg.backbone} from scratch ({norms}){why}"
    from adla.weights import IMAGENET, resolve

    where = resolve(model_cfg.backbone, model_cfg.backbone_weights, download=False)
    what = "ImageNet weights" if model_cfg.backbone_weights == IMAGENET else "weights"
    return f"{model_cfg.backbone} with {what} {where} (sha256 checked; {norms})"


def real_recipe(train_ann: Path, train_img: Path, batch: int = 4, pretrained: bool = False) -> list[str]:
    """The real-data recipe for a training set: square crops as large as the shorter side of its
    smallest image (a multiple of the model's largest stride, 32, between 128 and 512), and the iterations
    that spend ``REAL_PIXELS`` (``PRETRAINED_PIXELS`` and ``PRETRAINED_RECIPE`` with ``pretrained``)."""
    import math

    from adla.anchors import DEFAULT_MAX_STRIDE  # the demo keeps the default anchors
    from adla.data.coco import CocoDetection

    ds = CocoDetection(str(train_ann), str(train_img))
    short = min(min(int(r["height"]), int(r["width"])) for r in ds.images)
    s = DEFAULT_MAX_STRIDE
    crop = min(512, max(128, s * math.ceil(short / s)))
    iters = max(1, round((PRETRAINED_PIXELS if pretrained else REAL_PIXELS) / (batch * crop * crop)))
    decay_epoch = max(1, int(REAL_DECAY_AT * iters / math.ceil(len(ds) / batch)))  # milestones count epochs
    return REAL_RECIPE + (PRETRAINED_RECIPE if pretrained else []) + [
        f"data.crop={crop}", f"optim.iters={iters}", f"data.batch_size={batch}", f"optim.milestones=[{decay_epoch}]"]


def _plan(cfg) -> str:
    if cfg.optim.iters:
        ema = f", EMA {cfg.optim.ema}" if cfg.optim.ema else ""
        return (f"real-data recipe: {cfg.model.backbone}, {cfg.optim.iters} iterations of {cfg.data.batch_size} "
                f"crops of {cfg.data.crop} px, {cfg.model.norm} norm, D4 views, {cfg.optim.schedule} lr{ema}")
    return f"{cfg.optim.epochs} epochs"


def _seed_report(runs: dict[str, list[dict]], classes: list[str], out: Path, seeds: int) -> list[str]:
    from adla.app.seeds import format_seed_table, plot_seeds, summarize
    from adla.io import write_json

    labels = {"maxiou": "max-IoU", "adla": "ADLA"}
    rows = summarize(runs, "maxiou", "adla", classes)
    table = format_seed_table(rows, "maxiou", "adla", labels, seeds=seeds)
    print(f"\nOver {seeds} seeds (%):\n{table}", flush=True)
    plot = plot_seeds(rows, "maxiou", "adla", out / "seeds.png", labels)
    write_json(out / "seeds.json", {"seeds": seeds, "runs": runs, "summary": rows})
    return [f"## Over {seeds} seeds (AI-TOD metrics, %)", "", "```", table, "```", "",
            f"![per-seed results]({plot.name})", ""]


def _pct(v) -> str:
    return "-" if v is None or v < 0 else f"{100 * v:.1f} %"


def _parity(rep) -> str:
    return "ok (onnxruntime = PyTorch)" if rep.ok() else "FAILED"


def _load(path: Path) -> dict:
    from adla.io import read_json

    return read_json(path, "ground truth")


def _count(path: Path) -> int:
    return len(_load(path)["annotations"])


def _recap(steps: list[tuple[str, float, str]]) -> str:
    from adla.tables import format_table

    rows = [("step", "time (s)", "result")] + [(name, f"{sec:.0f}", outcome) for name, sec, outcome in steps]
    return format_table(rows, align="lrl", short_last_rule=True)


def _mosaic(ann: Path, image_dir: Path, out: Path, max_side: int = 8192) -> tuple[Path, Path]:
    """The images of a COCO set placed on one canvas (row-major grid), and its ground truth as COCO json."""
    import math

    import numpy as np
    from PIL import Image

    from adla.data.coco import CocoDetection
    from adla.io import atomic_path, write_json

    ds = CocoDetection(str(ann), str(image_dir))
    ch = max(int(r["height"]) for r in ds.images)
    cw = max(int(r["width"]) for r in ds.images)
    n = min(len(ds), (max_side // ch) * (max_side // cw))
    cols = max(1, min(max_side // cw, round(math.sqrt(n * ch / cw))))
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * ch, cols * cw, 3), dtype=np.uint8)
    anns: list[dict] = []
    for i in range(n):
        image, target = ds[i]
        y0, x0 = (i // cols) * ch, (i % cols) * cw
        h, w = image.shape[1:]
        canvas[y0:y0 + h, x0:x0 + w] = image.permute(1, 2, 0).clamp(0, 255).byte().numpy()
        for (bx0, by0, bx1, by1), lab in zip(target["boxes"].tolist(), target["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": ds.cat_ids[lab],
                         "bbox": [bx0 + x0, by0 + y0, bx1 - bx0, by1 - by0], "area": (bx1 - bx0) * (by1 - by0),
                         "iscrowd": 0})
    path, gt = out / "scene_mosaic.png", out / "scene_mosaic_gt.json"
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG", compress_level=1)
    cats = [{"id": cid, "name": name} for cid, name in zip(ds.cat_ids, ds.class_names)]
    write_json(gt, {"images": [{"id": 1, "file_name": path.name, "width": cols * cw, "height": rows * ch}],
                    "annotations": anns, "categories": cats})
    print(f"      mosaic of {n} validation images: {cols * cw} x {rows * ch} px, {len(anns)} objects")
    return path, gt


def _synthetic_scene(out: Path, size: int) -> tuple[Path, Path]:
    """A large synthetic scene (PNG) and its ground truth as COCO json."""
    from PIL import Image

    from adla.data.synth import class_names, synth_scene
    from adla.io import atomic_path, write_json

    path, gt = out / "scene.png", out / "scene_gt.json"
    img, boxes, labels = synth_scene(size, size, seed=3)
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG", compress_level=1)
    anns = [{"id": k + 1, "image_id": 1, "category_id": int(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
             "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            for k, ((x0, y0, x1, y1), c) in enumerate(zip(boxes.tolist(), labels.tolist()))]
    write_json(gt, {"images": [{"id": 1, "file_name": path.name, "width": size, "height": size}],
                    "annotations": anns,
                    "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names(3))]})
    return path, gt
