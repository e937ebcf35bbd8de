"""``adla bench train-step``: time one training step with max-IoU vs ADLA on the same batch."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import torch

from adla.anchors import generate_anchors
from adla.config import RunConfig, load_config, small_model_overrides
from adla.model import build_detector
from adla.tables import format_table
from adla.timing import time_interleaved
from adla.train.assigners import build_assigner
from adla.train.distributed import pick_device
from adla.train.loss import DetectionLoss

ASSIGNER_SPECS: dict[str, tuple[str, dict]] = {"maxiou": ("maxiou", {}), "adla": ("adla", {})}


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


def _runs(cfg: RunConfig, dev: torch.device, use_amp: bool) -> dict[str, tuple]:
    """Per assigner (model, optimiser, loss, scaler), every model starting from the same weights."""
    torch.manual_seed(0)
    base = build_detector(cfg.model).to(dev)
    runs = {}
    for name, (aname, params) in ASSIGNER_SPECS.items():
        model = build_detector(cfg.model).to(dev)
        model.load_state_dict(base.state_dict())
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        loss = DetectionLoss(build_assigner(aname, params))
        runs[name] = (model, opt, loss, torch.amp.GradScaler("cuda", enabled=use_amp))
    return runs


def _row(name: str, times: list[float], positives: float, peak_mb: float | None, batch: int) -> dict:
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    med = statistics.median(times)
    return {"assigner": name, "median_ms": 1000 * med, "p10_ms": 1000 * q[0], "p90_ms": 1000 * q[-1],
            "positives": positives, "images_per_s": batch / med, "peak_mb": peak_mb}


def bench_train_step(*, config: str | None = None, size: int = 512, batch: int = 2, objects: int = 300,
                     steps: int = 10, warmup: int = 2, device: str = "auto", progress: float = 0.7,
                     amp: bool = False) -> dict:
    """Median step time (forward, assignment, loss, backward, SGD step) per assigner, interleaved.

    ``amp``: mixed precision as ``adla train`` runs it (autocast around the forward pass, GradScaler,
    gradient clipping at the config's ``optim.grad_clip``), on CUDA only. Each row also has images/s
    (batch / median step) and the peak GPU memory of that assigner's steps (None on the CPU): torch's
    max allocated, which counts both assigners' models and optimiser states (``adla train`` holds one).
    """
    # without a config: the small CPU model of the demo (adla.config.small_model_overrides)
    cfg: RunConfig = load_config(config, [] if config else small_model_overrides())
    dev = pick_device(device)
    use_amp = amp and dev.type == "cuda"
    images, targets = _batch(size, batch, objects, cfg.model.num_classes)
    images = images.to(dev)
    targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
    spec = cfg.model.anchors
    anchors = generate_anchors(spec, size, size, device=dev)
    counts = spec.level_counts(size, size)
    runs = _runs(cfg, dev, use_amp)
    clip = cfg.optim.grad_clip if use_amp else None

    pos: dict[str, float] = {}
    peak: dict[str, float | None] = {n: None for n in runs}

    def step(name: str) -> Callable[[], None]:
        """One training step of ``name`` (its positives and, on CUDA, the peak memory noted)."""
        model, opt, loss, scaler = runs[name]

        def run() -> None:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            with torch.autocast(dev.type, enabled=use_amp):
                cls, box = model(images)
            losses, _, npos = loss(cls, box, targets, anchors, progress, counts)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            if clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            pos[name] = float(npos)
            if dev.type == "cuda":
                peak[name] = max(peak[name] or 0.0, torch.cuda.max_memory_allocated(dev) / 2**20)
        return run

    # interleaved in a fixed order (maxiou, adla, maxiou, ...), so machine noise hits both alike
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    timed = time_interleaved([step(n) for n in runs], warmup=warmup, runs=steps, sync=sync, alternate=False)
    rows = [_row(name, ts, pos[name], peak[name], batch) for name, ts in zip(runs, timed)]
    ratio = rows[1]["median_ms"] / rows[0]["median_ms"]
    return {"device": str(dev), "amp": use_amp, "size": size, "batch": batch, "objects_per_image": objects,
            "anchors": int(anchors.shape[0]), "steps": steps, "progress": progress, "rows": rows,
            "ratio_adla_over_maxiou": ratio, "model": (f"{cfg.model.backbone} fpn{cfg.model.fpn_channels} "
                                                       f"head{cfg.model.head_channels}x{cfg.model.head_convs}")}


def format_step_table(res: dict) -> str:
    head = (f"train step on {res['device']}{' (AMP)' if res.get('amp') else ''}: {res['model']}, batch "
            f"{res['batch']} x {res['size']}^2 px, {res['objects_per_image']} GTs/image, {res['anchors']} anchors, "
            f"progress {res['progress']}, {res['steps']} timed steps each")
    rows = [("assigner", "median ms", "p10 ms", "p90 ms", "positives", "images/s", "peak GPU MB")]
    for r in res["rows"]:
        peak = "n/a" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
        rows.append((r["assigner"], f"{r['median_ms']:.1f}", f"{r['p10_ms']:.1f}", f"{r['p90_ms']:.1f}",
                     f"{r['positives']:.0f}", f"{r['images_per_s']:.2f}", peak))
    lines = [head, format_table(rows, align="lr", rule=False)]
    if any(r.get("peak_mb") is not None for r in res["rows"]):
        lines.append("peak GPU MB: max allocated during that assigner's steps, both models and optimisers resident")
    verdict = "within" if res["ratio_adla_over_maxiou"] <= 1.05 else "OVER"
    lines.append(f"ADLA / max-IoU step time: {res['ratio_adla_over_maxiou']:.3f} ({verdict} the 1.05x target)")
    return "\n".join(lines)
