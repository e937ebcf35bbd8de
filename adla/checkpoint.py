"""Checkpoints: written atomically, validated on load, self-describing.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "adla-checkpoint", "version": 1,
     "config": <resolved RunConfig as a dict>, "class_names": [...],
     "model": state_dict, "epoch": int (epochs completed), "iteration": int,
     "optimizer", "scheduler", "scaler", "rng": training state for --resume (absent in weights-only files),
     "metrics": {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adla.config import RunConfig, config_from_dict, to_dict
from adla.errors import AdlaError
from adla.io import atomic_path
from adla.model import Detector, build_detector

FORMAT = "adla-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, cfg: RunConfig, model: torch.nn.Module, class_names: list[str],
                    **extra: Any) -> Path:
    """Write a checkpoint atomically: the old file stays intact until the new one is complete."""
    model = getattr(model, "module", model)  # unwrap DDP
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": to_dict(cfg),
        "class_names": list(class_names),
        "model": model.state_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint dict; any problem is an AdlaError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AdlaError("checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise AdlaError(f"not a readable checkpoint ({exc.__class__.__name__}: {exc})", path) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise AdlaError("not an adla checkpoint (no 'format: adla-checkpoint' entry)", path)
    if ckpt.get("version", 0) > VERSION:
        raise AdlaError(f"checkpoint version {ckpt['version']} is newer than this adla ({VERSION})", path)
    for key in ("config", "model", "class_names"):
        if key not in ckpt:
            raise AdlaError(f"checkpoint has no {key!r} entry", path)
    try:
        ckpt["run_config"] = config_from_dict(ckpt["config"])
    except AdlaError as exc:
        raise AdlaError(f"checkpoint config is invalid: {exc}", path) from exc
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Detector, dict]:
    """The detector of a checkpoint in eval mode, and the checkpoint dict (config under 'run_config')."""
    ckpt = load_checkpoint(path)
    cfg: RunConfig = ckpt["run_config"]
    model = build_detector(cfg.model)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise AdlaError(f"weights do not match the checkpoint's model config: {' '.join(first)}", path) from exc
    return model.to(device).eval(), ckpt
