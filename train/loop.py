"""The training loop: one process, DDP under torchrun (gloo on CPU, NCCL on CUDA), AMP on CUDA.

Checkpoints are written atomically after every epoch (``last.pt``, with the resolved config and the
full training state), ``--resume`` continues exactly where a run stopped, and SIGTERM/SIGINT end the
run cleanly after the current step with a checkpoint that resumes mid-epoch.

``_train`` runs: the checkpoint to resume (``_resume_state``), the set-up (``_Trainer``), its resumed
state (``_Trainer.restore``), then per epoch ``_run_epoch`` (the steps, the stop flag) and ``_end_epoch``
(``EpochStats`` reduced over the ranks into the log row, validation, ``last.pt``), and ``model.pt``.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from adla.anchors import generate_anchors
from adla.checkpoint import load_checkpoint, save_checkpoint
from adla.config import RunConfig, to_dict
from adla.data.augment import AugmentOptions
from adla.data.coco import CocoDetection, collate
from adla.data.verify import check_has_boxes, check_image_headers
from adla.errors import AdlaError
from adla.io import write_json, write_text
from adla.metrics import SIZE_BUCKETS
from adla.model import build_detector
from adla.train.assigners import build_assigner
from adla.train.distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from adla.train.ema import WeightEMA
from adla.train.loss import AssignStats, DetectionLoss
from adla.train.run_dir import resolved_config_text
from adla.train.sampler import EpochSampler
from adla.train.schedule import lr_factor


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path | None
    epochs_done: int
    iterations: int
    history: list[dict] = field(default_factory=list)
    metrics: dict | None = None
    interrupted: bool = False


@dataclass
class EpochStats:
    """One epoch's running sums: the losses summed over its steps, the steps, the assignment quality.

    On one rank while the epoch runs; :meth:`all_reduce` sums them over the ranks for the log row.
    """

    sums: torch.Tensor  # float64 [3]: cls, box, total (each summed over the steps)
    steps: int
    assign: AssignStats

    @classmethod
    def zeros(cls) -> EpochStats:
        return cls(torch.zeros(3, dtype=torch.float64), 0, AssignStats.zeros())

    def add(self, losses: dict[str, torch.Tensor], assign: AssignStats) -> None:
        """Count one step's losses and assignment statistics."""
        self.sums += torch.tensor([losses["cls"].item(), losses["box"].item(), losses["total"].item()],
                                  dtype=torch.float64)
        self.assign.add(assign)
        self.steps += 1

    @property
    def mean_loss(self) -> float:
        return self.sums[2].item() / self.steps

    def all_reduce(self, info: DistInfo) -> EpochStats:
        """The sums over all ranks (one collective; on a single process, the same numbers)."""
        a = self.assign
        packed = torch.cat([self.sums, torch.tensor([float(self.steps)], dtype=torch.float64),
                            a.gts.double(), a.positives.double(), a.zero_pos.double()])
        packed = all_reduce_sum(packed, info)
        return EpochStats(packed[0:3], int(packed[3].item()),
                          AssignStats(packed[4:8].float(), packed[8:12].float(), packed[12:16].float()))

    def summary(self) -> dict[str, float]:
        """The log row's loss and assignment columns: mean losses per step, positives per GT."""
        n = max(self.steps, 1)
        return {"loss": self.sums[2].item() / n, "loss_cls": self.sums[0].item() / n,
                "loss_box": self.sums[1].item() / n, **self.assign.summary()}

    def to_partial(self, time_s: float) -> dict:
        """The checkpoint's ``partial_epoch`` entry: an interrupted epoch's sums so far."""
        return {"sums": self.sums, "steps": self.steps, "time_s": time_s, "gts": self.assign.gts,
                "positives": self.assign.positives, "zero_pos": self.assign.zero_pos}

    @classmethod
    def from_partial(cls, p: dict) -> EpochStats:
        return cls(p["sums"].clone(), p["steps"],
                   AssignStats(p["gts"].clone(), p["positives"].clone(), p["zero_pos"].clone()))


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it after every step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}  # the handlers signal.signal returned

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
    """The global RNG states as a tensor and plain data (a checkpoint loads with weights_only=True)."""
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(key, np.ndarray)
    return {"torch": torch.get_rng_state(), "numpy": (name, key.tolist(), pos, has_gauss, gauss),
            "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    """Restore ``_rng_state()`` (numpy's key a list, or an array in checkpoints written before)."""
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


def _resume_state(cfg: RunConfig, resume) -> dict | None:
    """The checkpoint to resume from (None for a fresh run); its model config must be this run's."""
    if not resume:
        return None
    path = Path(cfg.out_dir) / "last.pt" if resume is True else Path(resume)
    state = load_checkpoint(path)
    if to_dict(state["run_config"].model) != to_dict(cfg.model):
        raise AdlaError("cannot resume: the checkpoint's model config differs from this run's", path)
    return state


class _Trainer:
    """One run's data, model and optimiser (built in ``__init__``) and its position in the schedule.

    Build it right after seeding the global RNG: the model's initial weights are drawn from it.
    """

    def __init__(self, cfg: RunConfig, info: DistInfo, state: dict | None):
        self.cfg, self.info, self.dev = cfg, info, info.device
        self.out = Path(cfg.out_dir)
        self._build_data()
        self._build_model(state)
        self._anchors: dict[tuple[int, int], tuple[torch.Tensor, list[int]]] = {}
        self.global_iter = 0
        self.history: list[dict] = []
        self.lr: float | None = None  # of the last step

    def _build_data(self) -> None:
        cfg, info = self.cfg, self.info
        self.train_ds, self.val_ds = build_datasets(cfg)
        if cfg.model.num_classes != len(self.train_ds.class_names):
            raise AdlaError(f"model.num_classes is {cfg.model.num_classes} but the data has "
                            f"{len(self.train_ds.class_names)} categories {self.train_ds.class_names}",
                            cfg.data.train_ann)
        self.sampler = EpochSampler(len(self.train_ds), seed=cfg.seed, shuffle=True, rank=info.rank,
                                    world_size=info.world_size, tag_epoch=True)
        # Workers live for the whole run (starting them every epoch cost ~0.7 s an epoch: 20 % of the KIT
        # recipe's training time, where an epoch is 7 iterations): the sampler's (epoch, index) keys tell
        # them which epoch's views to draw. The views come from (seed, epoch, index) alone; the loader's
        # own generator (re-seeded every epoch) only keeps the workers' base seed off the global RNG.
        self.loader_gen = torch.Generator()
        self.loader = DataLoader(self.train_ds, batch_size=cfg.data.batch_size, sampler=self.sampler,
                                 generator=self.loader_gen, num_workers=cfg.data.num_workers, drop_last=False,
                                 collate_fn=functools.partial(collate, size_divisor=cfg.data.size_divisor),
                                 persistent_workers=cfg.data.num_workers > 0,
                                 worker_init_fn=_worker_init)
        self.iters_per_epoch = math.ceil(self.sampler.per_rank / cfg.data.batch_size)
        self.epochs, self.total_iters = plan_iterations(cfg, self.iters_per_epoch)

    def _build_model(self, state: dict | None) -> None:
        cfg, dev = self.cfg, self.dev
        self.model = build_detector(cfg.model, pretrained=state is None).to(dev)  # resumed: weights from the file
        if state is not None:  # before the EMA copies the model: it starts from these weights
            self.model.load_state_dict(state["model"])
        self.ema = WeightEMA(self.model, cfg.optim.ema, cfg.optim.ema_warmup) if cfg.optim.ema > 0 else None
        if self.ema is not None and state is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(self.params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                   weight_decay=cfg.optim.weight_decay)
        self.use_amp = cfg.optim.amp and dev.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.assigner = build_assigner(cfg.assigner.name, cfg.assigner.params)
        self.criterion = DetectionLoss(self.assigner, focal_alpha=cfg.loss.focal_alpha,
                                       focal_gamma=cfg.loss.focal_gamma, box_weight=cfg.loss.box_weight)
        self.ddp_model = DistributedDataParallel(self.model, device_ids=[dev.index] if dev.type == "cuda"
                                                 else None) if self.info.enabled else self.model

    def restore(self, state: dict | None) -> tuple[int, int]:
        """Continue from ``state`` (optimiser, scaler, history, this rank's RNG): (epoch, iteration in it).

        The model and EMA weights were loaded while building them.
        """
        start_epoch, start_iter = 0, 0
        if state is not None:
            self.opt.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            start_epoch = state["epoch"]
            start_iter = state.get("iter_in_epoch", 0)
            self.history = list(state.get("history", []))
            if state.get("rng") and self.info.rank < len(state["rng"]):
                _set_rng_state(state["rng"][self.info.rank])
        self.global_iter = start_epoch * self.iters_per_epoch + start_iter
        return start_epoch, start_iter

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights evaluated and deployed: the EMA's when there is one."""
        return self.ema.model if self.ema is not None else self.model

    def epoch_iters(self, epoch: int) -> int:
        """Iterations of ``epoch``: fewer than an epoch's when the iteration budget ends inside it."""
        return min(self.iters_per_epoch, self.total_iters - epoch * self.iters_per_epoch)

    def start_epoch(self, epoch: int, first: int) -> None:
        """Point the sampler, the augmentation and the loader's seed at ``epoch``, from iteration ``first``."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch, start=first * cfg.data.batch_size)
        self.train_ds.set_epoch(epoch)
        self.loader_gen.manual_seed((cfg.seed * 1_000_003 + epoch) * 64 + self.info.rank)
        self.ddp_model.train()

    def _anchors_for(self, h: int, w: int) -> tuple[torch.Tensor, list[int]]:
        if (h, w) not in self._anchors:
            spec = self.cfg.model.anchors
            self._anchors[(h, w)] = (generate_anchors(spec, h, w, device=self.dev), spec.level_counts(h, w))
        return self._anchors[(h, w)]

    def _set_lr(self) -> None:
        o = self.cfg.optim
        factor = lr_factor(self.global_iter, self.iters_per_epoch, warmup_iters=o.warmup_iters,
                           warmup_ratio=o.warmup_ratio, milestones=o.milestones, gamma=o.lr_gamma,
                           schedule=o.schedule, total_iters=self.total_iters, min_ratio=o.min_lr_ratio)
        self.lr = o.lr * factor
        for g in self.opt.param_groups:
            g["lr"] = self.lr

    def step(self, images: torch.Tensor, targets: list[dict], epoch: int, it: int) -> tuple[dict, AssignStats]:
        """One optimiser step on a batch at the current global iteration: (losses, assignment stats)."""
        self._set_lr()
        images = images.to(self.dev, non_blocking=True)
        anchors, counts = self._anchors_for(images.shape[-2], images.shape[-1])
        with torch.autocast(self.dev.type, enabled=self.use_amp):
            cls_logits, box_deltas = self.ddp_model(images)
        losses, st, _ = self.criterion(cls_logits, box_deltas, targets, anchors,
                                       self.global_iter / self.total_iters, counts)
        if not torch.isfinite(losses["total"]):
            raise AdlaError(f"loss became {losses['total'].item()} at epoch {epoch + 1} iteration "
                            f"{it}; lower optim.lr or check the data")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.global_iter += 1
        return losses, st

    def save(self, epoch: int, iter_in_epoch: int, partial: dict | None = None) -> Path:
        """``last.pt`` with the full training state (every rank takes part: the RNG states are gathered)."""
        path = self.out / "last.pt"
        rng = [_rng_state()]
        if self.info.enabled:  # gather every rank's RNG so each resumes its own stream
            gathered: list = [None] * self.info.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if not self.info.is_main:
            return path
        return save_checkpoint(path, self.cfg, self.model, self.train_ds.class_names, epoch=epoch,
                               iter_in_epoch=iter_in_epoch, iteration=self.global_iter,
                               optimizer=self.opt.state_dict(), scaler=self.scaler.state_dict(), rng=rng,
                               history=self.history, world_size=self.info.world_size, partial_epoch=partial,
                               ema=self.ema.state_dict() if self.ema is not None else None)

    def save_final(self) -> Path:
        """``model.pt``: the deployed weights (the EMA's when there is one), config and history."""
        return save_checkpoint(self.out / "model.pt", self.cfg, self.eval_model, self.train_ds.class_names,
                               epoch=self.epochs, iteration=self.global_iter, history=self.history)


def _open_outputs(cfg: RunConfig, info: DistInfo):
    """Rank 0: the run folder with ``config.yaml``, and a TensorBoard writer when TensorBoard is installed."""
    if not info.is_main:
        return None
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = resolved_config_text(cfg)
    if not ((out / "config.yaml").is_file() and (out / "config.yaml").read_text() == text):
        write_text(out / "config.yaml", text)  # the same text stays as it is (it may be the given config)
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(out / "tb"))
    except Exception:  # noqa: BLE001 - TensorBoard is optional
        return None


def _stop_requested(stop: _StopFlag, stop_after_iters: int | None, global_iter: int, info: DistInfo) -> bool:
    """A signal came or the test budget is spent, on any rank: every rank must stop at the same step."""
    stop_now = stop.signum is not None or (stop_after_iters is not None and global_iter >= stop_after_iters)
    if info.enabled:
        flag = all_reduce_sum(torch.tensor([float(stop_now)]), info)
        stop_now = bool(flag.item() > 0)
    return stop_now


def _run_epoch(tr: _Trainer, epoch: int, first: int, stats: EpochStats,
               should_stop: Callable[[int], bool], progress: bool) -> tuple[int, bool]:
    """Train ``epoch`` from iteration ``first`` into ``stats``: (iteration reached, whether to stop)."""
    epoch_iters = tr.epoch_iters(epoch)
    bar = tqdm(tr.loader, total=epoch_iters - first, disable=not progress, leave=False,
               desc=f"epoch {epoch + 1}/{tr.epochs}", dynamic_ncols=True)
    it, stop_now = first, False
    for images, targets in bar:
        if it >= epoch_iters:  # the iteration budget ends inside this epoch
            break
        losses, st = tr.step(images, targets, epoch, it)
        stats.add(losses, st)
        it += 1
        if progress and stats.steps % max(tr.cfg.log_every, 1) == 0:
            bar.set_postfix(loss=f"{stats.mean_loss:.4f}", lr=f"{tr.lr:.1e}")
        stop_now = should_stop(tr.global_iter)
        if stop_now:
            break
    bar.close()
    return it, stop_now


def _end_epoch(tr: _Trainer, epoch: int, stats: EpochStats, t0: float, tb, evaluate: bool,
               progress: bool) -> Path:
    """A finished epoch: its log row (reduced over the ranks), validation when due, ``last.pt``, the logs."""
    cfg, info = tr.cfg, tr.info
    row = {"epoch": epoch + 1, "iterations": tr.global_iter, "lr": tr.lr, **stats.all_reduce(info).summary(),
           "alpha": current_alpha(tr.assigner, tr.global_iter / tr.total_iters), "time_s": time.time() - t0,
           "world_size": info.world_size}
    tr.history.append(row)
    if cfg.eval_every and tr.val_ds is not None and (epoch + 1) % cfg.eval_every == 0 \
            and epoch + 1 < tr.epochs and evaluate:
        if info.is_main:
            m = evaluate_model(tr.eval_model, tr.val_ds, cfg, tr.dev, progress)
            row.update({f"val/{k}": v for k, v in m.items() if isinstance(v, float)})
        barrier(info)
    ckpt = tr.save(epoch + 1, 0)
    if info.is_main:
        print(_format_epoch(row), flush=True)
        _write_csv(tr.out / "log.csv", tr.history)
        if tb is not None:
            for k, v in row.items():
                if isinstance(v, float) and math.isfinite(v):
                    tb.add_scalar(k, v, epoch + 1)
            tb.flush()
    return ckpt


def _train(cfg: RunConfig, info: DistInfo, resume, progress: bool, stop_after_iters, evaluate) -> TrainResult:
    state = _resume_state(cfg, resume)
    _seed_all(cfg.seed + info.rank)
    tr = _Trainer(cfg, info, state)
    start_epoch, start_iter = tr.restore(state)
    tb = _open_outputs(cfg, info)
    # the part of the resumed epoch run before the interruption counts in its log row (rank 0's share
    # of it under DDP: the other ranks' partial sums are not saved)
    partial = state.get("partial_epoch") if state is not None and info.is_main else None
    interrupted, last_ckpt = False, None
    with _StopFlag() as stop:
        def should_stop(global_iter: int) -> bool:
            return _stop_requested(stop, stop_after_iters, global_iter, info)

        for epoch in range(start_epoch, tr.epochs):
            first = start_iter if epoch == start_epoch else 0
            tr.start_epoch(epoch, first)
            stats, t0 = EpochStats.zeros(), time.time()
            if epoch == start_epoch and partial:
                stats, t0 = EpochStats.from_partial(partial), time.time() - partial["time_s"]
            it, stop_now = _run_epoch(tr, epoch, first, stats, should_stop, progress)
            if it < tr.epoch_iters(epoch):  # stopped inside the epoch
                interrupted = True
                last_ckpt = tr.save(epoch, it, stats.to_partial(time.time() - t0))
                if info.is_main:
                    print(f"stopped at epoch {epoch + 1} iteration {it}/{tr.epoch_iters(epoch)}; "
                          f"checkpoint {last_ckpt} (resume with --resume)")
                break
            last_ckpt = _end_epoch(tr, epoch, stats, t0, tb, evaluate, progress)
            if stop_now:  # asked to stop exactly at an epoch boundary
                interrupted = epoch + 1 < tr.epochs
                if interrupted and info.is_main:
                    print(f"stopped after epoch {epoch + 1}; checkpoint {last_ckpt} (resume with --resume)")
                break
    del tr.loader  # its persistent workers exit here, not after the evaluation
    metrics = None
    if not interrupted and info.is_main:
        final = tr.save_final()
        last_ckpt = last_ckpt or final
        if evaluate:
            metrics = _final_metrics(tr.eval_model, tr.train_ds, tr.val_ds, cfg, tr.dev, progress)
            write_json(tr.out / "metrics.json", metrics)
    barrier(info)
    if tb is not None:
        tb.close()
    return TrainResult(tr.out, last_ckpt, len(tr.history), tr.global_iter, tr.history, metrics, interrupted)
