"""``adla bench train-step``: time one training step with max-IoU vs ADLA on the same batch."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from adla.anchors import generate_anchors
from adla.config import RunConfig, load_config
from adla.model import build_detector
from adla.train.assigners import build_assigner
from adla.train.distributed import pick_device
from adla.train.loss import DetectionLoss

# The small CPU model of the demo and the tests' default benchmark.
SMALL_MODEL = ["model.backbone=resnet18", "model.norm=bn", "model.num_classes=3",
               "model.fpn_channels=64", "model.head_channels=64", "model.head_convs=2"]

ASSIGNER_SPECS = {"maxiou": ("maxiou", {}), "adla": ("adla", {})}


def _batch(size: int, batch: int, objects: int, num_classes: int, seed: int = 0):
    from adla.data.synth import synth_image

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(batch):
        img, boxes, labels = synth_image(size, size, rng, num_objects=objects, num_classes=num_classes)
        images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float())
        targets.append({"boxes": torch.as_tensor(boxes, dtype=torch.float32),
                        "labels": torch.as_tensor(labels, dtype=torch.int64)})
    return torch.stack(images), targets


def bench_train_step(*, config: str | None = None, size: int = 512, batch: int = 2, objects: int = 300,
                     steps: int = 10, warmup: int = 2, device: str = "auto", progress: float = 0.7) -> dict:
    """Median step time (forward, assignment, loss, backward, SGD step) per assigner, interleaved."""
    cfg: RunConfig = load_config(config, [] if config else SMALL_MODEL)
    dev = pick_device(device)
    images, targets = _batch(size, batch, objects, cfg.model.num_classes)
    images = images.to(dev)
    targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
    spec = cfg.model.anchors
    anchors = generate_anchors(spec, size, size, device=dev)
    counts = spec.level_counts(size, size)
    torch.manual_seed(0)
    base = build_detector(cfg.model).to(dev)
    runs = {}
    for name, (aname, params) in ASSIGNER_SPECS.items():
        model = build_detector(cfg.model).to(dev)
        model.load_state_dict(base.state_dict())
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        loss = DetectionLoss(build_assigner(aname, params))
        runs[name] = (model, opt, loss)

    def step(name: str) -> tuple[float, float]:
        model, opt, loss = runs[name]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        cls, box = model(images)
        losses, _, npos = loss(cls, box, targets, anchors, progress, counts)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, float(npos)

    times: dict[str, list[float]] = {n: [] for n in runs}
    pos: dict[str, float] = {}
    for i in range(warmup + steps):
        for name in runs:  # interleaved, so machine noise hits both alike
            dt, npos = step(name)
            if i >= warmup:
                times[name].append(dt)
                pos[name] = npos
    rows = []
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10) if len(ts) >= 2 else [ts[0]] * 9
        rows.append({"assigner": name, "median_ms": 1000 * statistics.median(ts), "p10_ms": 1000 * q[0],
                     "p90_ms": 1000 * q[-1], "positives": pos[name]})
    ratio = rows[1]["median_ms"] / rows[0]["median_ms"]
    return {"device": str(dev), "size": size, "batch": batch, "objects_per_image": objects,
            "anchors": int(anchors.shape[0]), "steps": steps, "progress": progress, "rows": rows,
            "ratio_adla_over_maxiou": ratio, "model": (f"{cfg.model.backbone} fpn{cfg.model.fpn_channels} "
                                                       f"head{cfg.model.head_channels}x{cfg.model.head_convs}")}


def format_step_table(res: dict) -> str:
    head = (f"train step on {res['device']}: {res['model']}, batch {res['batch']} x {res['size']}^2 px, "
            f"{res['objects_per_image']} GTs/image, {res['anchors']} anchors, progress {res['progress']}")
    lines = [head,
             f"{'assigner':<10} {'median ms':>10} {'p10 ms':>9} {'p90 ms':>9} {'positives':>10}"]
    for r in res["rows"]:
        lines.append(f"{r['assigner']:<10} {r['median_ms']:>10.1f} {r['p10_ms']:>9.1f} {r['p90_ms']:>9.1f} "
                     f"{r['positives']:>10.0f}")
    verdict = "within" if res["ratio_adla_over_maxiou"] <= 1.05 else "OVER"
    lines.append(f"ADLA / max-IoU step time: {res['ratio_adla_over_maxiou']:.3f} ({verdict} the 1.05x target)")
    return "\n".join(lines)
