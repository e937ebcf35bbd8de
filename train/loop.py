"""The training loop: one process, DDP under torchrun (gloo on CPU, NCCL on CUDA), AMP on CUDA.

Checkpoints are written atomically after every epoch (``last.pt``, with the resolved config and the
full training state), ``--resume`` continues exactly where a run stopped, and SIGTERM/SIGINT end the
run cleanly after the current step with a checkpoint that resumes mid-epoch.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from adla.anchors import generate_anchors
from adla.checkpoint import load_checkpoint, save_checkpoint
from adla.config import RunConfig, dump_yaml, to_dict
from adla.data.augment import AugmentOptions
from adla.data.coco import CocoDetection, collate
from adla.data.verify import check_has_boxes, check_image_headers
from adla.errors import AdlaError
from adla.io import write_json, write_text
from adla.model import build_detector
from adla.train.assigners import build_assigner
from adla.train.distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from adla.train.loss import SIZE_BUCKETS, AssignStats, DetectionLoss
from adla.train.schedule import EpochSampler, WeightEMA, lr_factor


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path | None
    epochs_done: int
    iterations: int
    history: list[dict] = field(default_factory=list)
    metrics: dict | None = None
    interrupted: bool = False


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it after every step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> Self:
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def current_alpha(assigner, progress: float) -> float:
    """The dynamic-IoU weight alpha the assigner uses at ``progress`` (1.0 for static assigners)."""
    return float(assigner.alpha(progress))


def build_datasets(cfg: RunConfig) -> tuple[CocoDetection, CocoDetection | None]:
    d = cfg.data
    if not d.train_ann or not d.train_images:
        raise AdlaError("data.train_ann and data.train_images must be set (config or --set)")
    lo, hi = (tuple(d.scale) * 2)[:2]
    aug = AugmentOptions(hflip=d.hflip, vflip=d.vflip, rot90=d.rot90, crop=d.crop, scale=(lo, hi),
                         min_visible=d.min_visible, photometric=d.photometric)
    train_ds = CocoDetection(d.train_ann, d.train_images, train=True, augment=aug, seed=cfg.seed)
    val_ds = CocoDetection(d.val_ann, d.val_images, train=False) if d.val_ann and d.val_images else None
    if len(train_ds) == 0:
        raise AdlaError("the training set has no images", d.train_ann)
    check_has_boxes(train_ds)
    for ds in (train_ds, val_ds) if val_ds is not None else (train_ds,):
        check_image_headers(ds)  # a corrupt image stops the run now, not when an epoch reaches it
    return train_ds, val_ds


def _worker_init(_worker_id: int) -> None:
    # One thread per loader worker: with torch's default (one per core) the workers' OpenMP pools
    # compete with the training step's on a small machine and an epoch takes several times longer.
    torch.set_num_threads(1)


def plan_iterations(cfg: RunConfig, iters_per_epoch: int) -> tuple[int, int]:
    """(epochs, total iterations) of a run: ``optim.iters`` when set (the last epoch may be partial)."""
    if cfg.optim.iters:
        return math.ceil(cfg.optim.iters / max(iters_per_epoch, 1)), cfg.optim.iters
    return cfg.optim.epochs, cfg.optim.epochs * iters_per_epoch


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def _format_epoch(row: dict) -> str:
    pos = " ".join(f"{name[:2] if name != 'very_tiny' else 'vt'}={row[f'pos_per_gt/{name}']:.2f}"
                   for name, _, _ in SIZE_BUCKETS)
    return (f"epoch {row['epoch']:>3} lr {row['lr']:.2e} loss {row['loss']:.4f} (cls {row['loss_cls']:.4f} "
            f"box {row['loss_box']:.4f}) pos/GT {pos} zero-pos {100 * row['zero_pos_share']:.1f}% "
            f"alpha {row['alpha']:.3f} {row['time_s']:.0f}s")


def evaluate_model(model, dataset: CocoDetection, cfg: RunConfig, device, progress: bool = True) -> dict:
    """AI-TOD metrics of ``model`` on ``dataset`` with the config's post-process settings."""
    from adla.metrics import evaluate_detections
    from adla.predict import predict_dataset

    results = predict_dataset(model, dataset, batch_size=max(cfg.data.batch_size, 1), device=device,
                              post_cfg=cfg.eval, progress=progress)
    return evaluate_detections(dataset.ann_file, results, class_names=dataset.class_names)


def _final_metrics(model, train_ds: CocoDetection, val_ds: CocoDetection | None, cfg: RunConfig, dev,
                   progress: bool, max_train_images: int = 50) -> dict:
    """Validation metrics (when there is a validation set) plus ``train/...`` AP on up to 50 training images.

    The training-set AP next to the validation AP shows under-fitting (both low) apart from
    over-fitting (training high, validation low).
    """
    from adla.metrics import evaluate_detections
    from adla.predict import predict_dataset

    metrics = evaluate_model(model, val_ds, cfg, dev, progress) if val_ds is not None else {}
    sub = train_ds.subset_file(max_train_images, Path(cfg.out_dir) / "train_subset.json")
    plain = CocoDetection(sub, train_ds.image_dir, train=False)
    results = predict_dataset(model, plain, batch_size=max(cfg.data.batch_size, 1), device=dev,
                              post_cfg=cfg.eval, progress=progress)
    on_train = evaluate_detections(sub, results, class_names=plain.class_names)
    metrics.update({f"train/{k}": v for k, v in on_train.items() if k in ("AP", "AP50", "AP_vt", "AP_t", "AP_s")})
    parts = [f"training set ({len(plain)} images): AP50 {100 * on_train['AP50']:.1f}"]
    if val_ds is not None:
        parts.append(f"validation: AP50 {100 * metrics['AP50']:.1f}")
    print("; ".join(parts), flush=True)
    return metrics


def train(cfg: RunConfig, *, resume: str | Path | bool | None = None, device: str = "auto",
          progress: bool = True, stop_after_iters: int | None = None, evaluate: bool = True) -> TrainResult:
    """Train a detector as ``cfg`` says and return where its checkpoints went.

    ``resume``: True continues from ``<out_dir>/last.pt``; a path continues from that checkpoint.
    ``stop_after_iters`` ends the run after that many global iterations as a signal would (tests).
    """
    info = init_distributed(device)
    try:
        return _train(cfg, info, resume, progress and info.is_main, stop_after_iters, evaluate)
    finally:
        cleanup(info)


def _train(cfg: RunConfig, info: DistInfo, resume, progress: bool, stop_after_iters, evaluate) -> TrainResult:
    out = Path(cfg.out_dir)
    dev = info.device
    state = None
    if resume:
        path = out / "last.pt" if resume is True else Path(resume)
        state = load_checkpoint(path)
        if to_dict(state["run_config"].model) != to_dict(cfg.model):
            raise AdlaError("cannot resume: the checkpoint's model config differs from this run's", path)
    _seed_all(cfg.seed + info.rank)

    train_ds, val_ds = build_datasets(cfg)
    if cfg.model.num_classes != len(train_ds.class_names):
        raise AdlaError(f"model.num_classes is {cfg.model.num_classes} but the data has "
                        f"{len(train_ds.class_names)} categories {train_ds.class_names}", cfg.data.train_ann)
    sampler = EpochSampler(len(train_ds), seed=cfg.seed, shuffle=True, rank=info.rank, world_size=info.world_size)
    # The loader draws its workers' base seed from its own generator, re-seeded every epoch, so the
    # global RNG (which the flips use in-process) advances only with the samples themselves.
    loader_gen = torch.Generator()
    loader = DataLoader(train_ds, batch_size=cfg.data.batch_size, sampler=sampler, generator=loader_gen,
                        num_workers=cfg.data.num_workers, drop_last=False,
                        collate_fn=functools.partial(collate, size_divisor=cfg.data.size_divisor),
                        persistent_workers=False, worker_init_fn=_worker_init)
    iters_per_epoch = math.ceil(sampler.per_rank / cfg.data.batch_size)
    epochs, total_iters = plan_iterations(cfg, iters_per_epoch)

    model = build_detector(cfg.model).to(dev)
    if state is not None:
        model.load_state_dict(state["model"])
    ema = WeightEMA(model, cfg.optim.ema, cfg.optim.ema_warmup) if cfg.optim.ema > 0 else None
    if ema is not None and state is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    use_amp = cfg.optim.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    assigner = build_assigner(cfg.assigner.name, cfg.assigner.params)
    criterion = DetectionLoss(assigner, focal_alpha=cfg.loss.focal_alpha, focal_gamma=cfg.loss.focal_gamma,
                              box_weight=cfg.loss.box_weight)
    ddp_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if info.enabled else model

    start_epoch, start_iter, history = 0, 0, []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        start_iter = state.get("iter_in_epoch", 0)
        history = list(state.get("history", []))
        if state.get("rng") and info.rank < len(state["rng"]):
            _set_rng_state(state["rng"][info.rank])

    tb = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", dump_yaml(cfg))
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(out / "tb"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            tb = None

    anchor_cache: dict[tuple[int, int], tuple[torch.Tensor, list[int]]] = {}

    def anchors_for(h: int, w: int):
        if (h, w) not in anchor_cache:
            spec = cfg.model.anchors
            anchor_cache[(h, w)] = (generate_anchors(spec, h, w, device=dev), spec.level_counts(h, w))
        return anchor_cache[(h, w)]

    def save(path: Path, epoch: int, iter_in_epoch: int, global_iter: int, partial: dict | None = None) -> Path:
        rng = [_rng_state()]
        if info.enabled:  # gather every rank's RNG so each resumes its own stream
            gathered: list = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if not info.is_main:
            return path
        return save_checkpoint(path, cfg, model, train_ds.class_names, epoch=epoch, iter_in_epoch=iter_in_epoch,
                               iteration=global_iter, optimizer=opt.state_dict(), scaler=scaler.state_dict(),
                               rng=rng, history=history, world_size=info.world_size, partial_epoch=partial,
                               ema=ema.state_dict() if ema is not None else None)

    global_iter = start_epoch * iters_per_epoch + start_iter
    interrupted = False
    last_ckpt: Path | None = None
    stop_now = False
    with _StopFlag() as stop:
        for epoch in range(start_epoch, epochs):
            first = start_iter if epoch == start_epoch else 0
            sampler.set_epoch(epoch, start=first * cfg.data.batch_size)
            train_ds.set_epoch(epoch)
            epoch_iters = min(iters_per_epoch, total_iters - epoch * iters_per_epoch)
            loader_gen.manual_seed((cfg.seed * 1_000_003 + epoch) * 64 + info.rank)
            ddp_model.train()
            t0 = time.time()
            sums = torch.zeros(3, dtype=torch.float64)  # cls, box, total (weighted by steps)
            stats = AssignStats.zeros()
            steps = 0
            if epoch == start_epoch and state is not None and state.get("partial_epoch") and info.is_main:
                # the part of this epoch run before the interruption counts in its log row (rank 0's
                # share of it under DDP: the other ranks' partial sums are not saved)
                p = state["partial_epoch"]
                sums, steps, t0 = p["sums"].clone(), p["steps"], time.time() - p["time_s"]
                stats = AssignStats(p["gts"].clone(), p["positives"].clone(), p["zero_pos"].clone())
            bar = tqdm(loader, total=epoch_iters - first, disable=not progress, leave=False,
                       desc=f"epoch {epoch + 1}/{epochs}", dynamic_ncols=True)
            it = first
            for images, targets in bar:
                if it >= epoch_iters:  # the iteration budget ends inside this epoch
                    break
                prog = global_iter / total_iters
                factor = lr_factor(global_iter, iters_per_epoch, warmup_iters=cfg.optim.warmup_iters,
                                   warmup_ratio=cfg.optim.warmup_ratio, milestones=cfg.optim.milestones,
                                   gamma=cfg.optim.lr_gamma, schedule=cfg.optim.schedule,
                                   total_iters=total_iters, min_ratio=cfg.optim.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = cfg.optim.lr * factor
                images = images.to(dev, non_blocking=True)
                anchors, counts = anchors_for(images.shape[-2], images.shape[-1])
                with torch.autocast(dev.type, enabled=use_amp):
                    cls_logits, box_deltas = ddp_model(images)
                losses, st, _ = criterion(cls_logits, box_deltas, targets, anchors, prog, counts)
                if not torch.isfinite(losses["total"]):
                    raise AdlaError(f"loss became {losses['total'].item()} at epoch {epoch + 1} iteration "
                                    f"{it}; lower optim.lr or check the data")
                opt.zero_grad(set_to_none=True)
                scaler.scale(losses["total"]).backward()
                if cfg.optim.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update(model)
                sums += torch.tensor([losses["cls"].item(), losses["box"].item(), losses["total"].item()],
                                     dtype=torch.float64)
                stats.add(st)
                steps += 1
                it += 1
                global_iter += 1
                if progress and steps % max(cfg.log_every, 1) == 0:
                    bar.set_postfix(loss=f"{sums[2].item() / steps:.4f}", lr=f"{cfg.optim.lr * factor:.1e}")
                stop_now = stop.signum is not None or (stop_after_iters is not None
                                                       and global_iter >= stop_after_iters)
                if info.enabled:  # every rank must stop at the same step
                    flag = all_reduce_sum(torch.tensor([float(stop_now)]), info)
                    stop_now = bool(flag.item() > 0)
                if stop_now:
                    break
            bar.close()
            interrupted = it < epoch_iters
            if interrupted:
                partial = {"sums": sums, "steps": steps, "time_s": time.time() - t0, "gts": stats.gts,
                           "positives": stats.positives, "zero_pos": stats.zero_pos}
                last_ckpt = save(out / "last.pt", epoch, it, global_iter, partial)
                if info.is_main:
                    print(f"stopped at epoch {epoch + 1} iteration {it}/{epoch_iters}; "
                          f"checkpoint {last_ckpt} (resume with --resume)")
                break
            # epoch summary, reduced over ranks
            packed = torch.cat([sums, torch.tensor([float(steps)], dtype=torch.float64),
                                stats.gts.double(), stats.positives.double(), stats.zero_pos.double()])
            packed = all_reduce_sum(packed, info)
            steps_all = max(packed[3].item(), 1.0)
            total = AssignStats(packed[4:8].float(), packed[8:12].float(), packed[12:16].float())
            row = {"epoch": epoch + 1, "iterations": global_iter, "lr": cfg.optim.lr * factor,
                   "loss": packed[2].item() / steps_all, "loss_cls": packed[0].item() / steps_all,
                   "loss_box": packed[1].item() / steps_all, **total.summary(),
                   "alpha": current_alpha(assigner, global_iter / total_iters), "time_s": time.time() - t0,
                   "world_size": info.world_size}
            history.append(row)
            if cfg.eval_every and val_ds is not None and (epoch + 1) % cfg.eval_every == 0 \
                    and epoch + 1 < epochs and evaluate:
                if info.is_main:
                    m = evaluate_model(ema.model if ema is not None else model, val_ds, cfg, dev, progress)
                    row.update({f"val/{k}": v for k, v in m.items() if isinstance(v, float)})
                barrier(info)
            last_ckpt = save(out / "last.pt", epoch + 1, 0, global_iter)
            if info.is_main:
                print(_format_epoch(row), flush=True)
                _write_csv(out / "log.csv", history)
                if tb is not None:
                    for k, v in row.items():
                        if isinstance(v, float) and math.isfinite(v):
                            tb.add_scalar(k, v, epoch + 1)
                    tb.flush()
            if stop_now:  # asked to stop exactly at an epoch boundary
                interrupted = epoch + 1 < epochs
                if interrupted and info.is_main:
                    print(f"stopped after epoch {epoch + 1}; checkpoint {last_ckpt} (resume with --resume)")
                break

    metrics = None
    if not interrupted and info.is_main:
        final_model = ema.model if ema is not None else model  # the EMA weights are the ones deployed
        final = save_checkpoint(out / "model.pt", cfg, final_model, train_ds.class_names, epoch=epochs,
                                iteration=global_iter, history=history)
        last_ckpt = last_ckpt or final
        if evaluate:
            metrics = _final_metrics(final_model, train_ds, val_ds, cfg, dev, progress)
            write_json(out / "metrics.json", metrics)
    barrier(info)
    if tb is not None:
        tb.close()
    return TrainResult(out, last_ckpt, len(history), global_iter, history, metrics, interrupted)
