"""Checkpoints: written atomically, validated on load, self-describing.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "adla-checkpoint", "version": 1,
     "config": <resolved RunConfig as a dict>, "class_names": [...],
     "model": state_dict, "epoch": int (epochs completed), "iteration": int,
     "optimizer", "scheduler", "scaler", "rng": training state for --resume (absent in weights-only files),
     "metrics": {...}}

Only tensors and plain data (dicts, lists, tuples, str, numbers, None) go in, and a checkpoint is loaded
with ``torch.load(..., weights_only=True)``: a checkpoint is a file users share and download, and
loading it never runs code from it. Checkpoints written before the RNG state was stored as plain data
hold numpy arrays (numpy's RNG key); those load under an allowlist of exactly numpy's array
reconstruction, scoped to that one load, and only when nothing else in the file needs a global.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adla.config import RunConfig, config_from_dict, to_dict
from adla.errors import AdlaError, one_line
from adla.io import atomic_path
from adla.model import Detector, build_detector

FORMAT = "adla-checkpoint"
VERSION = 1

# what a numpy array in a pickle names: in the RNG state of checkpoints written before it was stored as
# plain lists (numpy >= 2 writes numpy._core, numpy 1.x numpy.core)
_NP_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_LEGACY_GLOBALS: list[Any] = [(_NP_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
                   (_NP_RECONSTRUCT, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
                   type(np.dtype(np.uint32))]
_LEGACY_NAMES = {"numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct", "numpy.ndarray",
                 "numpy.dtype"}


def save_checkpoint(path: str | Path, cfg: RunConfig, model: torch.nn.Module, class_names: list[str],
                    **extra: Any) -> Path:
    """Write a checkpoint atomically: the old file stays intact until the new one is complete.

    A failed write (a full disk) is one AdlaError; the previous file at ``path`` is kept."""
    model = getattr(model, "module", model)  # unwrap DDP
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": to_dict(cfg),
        "class_names": list(class_names),
        "model": model.state_dict(),
        **extra,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError, without errno
            raise AdlaError(f"cannot write the checkpoint ({_why(exc)}; {_free_space(path)}); "
                            f"the previous {path.name}, if any, is kept", path) from exc
    return path


def _free_space(path: Path) -> str:
    """How much room is left on ``path``'s disk, in words: the usual reason a write fails."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.0f} MB free on its disk"


def load_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint dict; any problem is an AdlaError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AdlaError("checkpoint not found", path)
    ckpt = _load_data(path)
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


def _load_data(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never code from the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = exc
    except Exception as exc:
        raise AdlaError(f"not a readable checkpoint ({_why(exc)})", path) from exc
    try:
        names = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:  # an old-style (non-zip) or broken file: no globals to list
        raise AdlaError(f"not a readable checkpoint ({_why(first)})", path) from exc
    if not names:
        raise AdlaError(f"not a readable checkpoint ({_why(first)})", path) from first
    if not names <= _LEGACY_NAMES:
        foreign = ", ".join(sorted(names - _LEGACY_NAMES))
        raise AdlaError(f"refused: loading it would call {foreign}; a checkpoint holds only tensors and "
                        "plain data, and adla never runs code from a file", path) from first
    try:
        with torch.serialization.safe_globals(_LEGACY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdlaError(f"not a readable checkpoint ({_why(exc)})", path) from exc


def _why(exc: BaseException) -> str:
    """``exc`` in a few words: torch's weights-only message is a paragraph around one useful line."""
    text = one_line(exc)
    _, sep, rest = text.partition("WeightsUnpickler error: ")
    if sep:
        text = rest.split(" Check the documentation")[0]
    return f"{exc.__class__.__name__}: {text[:300]}"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Detector, dict]:
    """The detector of a checkpoint in eval mode, and the checkpoint dict (config under 'run_config')."""
    ckpt = load_checkpoint(path)
    cfg: RunConfig = ckpt["run_config"]
    model = build_detector(cfg.model, pretrained=False)  # the checkpoint holds every weight: no ImageNet file
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise AdlaError(f"weights do not match the checkpoint's model config: {' '.join(first)}", path) from exc
    return model.to(device).eval(), ckpt
