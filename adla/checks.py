"""Checks at the edge, before work starts: the device exists, inputs are readable, outputs writable.

Each raises an AdlaError naming the path (or the argument) and the problem, so that a run fails in its
first second rather than after an hour of work.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from adla.errors import AdlaError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device | None = "auto", what: str = "--device") -> torch.device:
    """The torch device ``device`` names: ``auto`` (or None, "") is CUDA when torch sees a GPU, else the CPU;
    ``cpu``, ``cuda``, ``cuda:N`` (and any other torch device string) as given.

    One-line AdlaError (starting with ``what``) when the name is not a device, or names a GPU that torch
    does not see (none at all, or fewer than N + 1).
    """
    import torch

    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = str(device)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AdlaError(f"{what} {name}: no CUDA GPU is available to PyTorch on this machine; "
                        "use --device cpu (or auto)")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        expected = "cuda or cuda:N" if name.startswith("cuda") else "auto, cpu, cuda or cuda:N"
        raise AdlaError(f"{what} {name}: unknown device, expected {expected}") from exc
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise AdlaError(f"{what} {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def check_device(device: str | None, what: str = "--device") -> None:
    """AdlaError when ``device`` is not a device, or names CUDA (``cuda``, ``cuda:1``) and torch sees no
    such GPU (``resolve_device``, before any work; auto and cpu pass without importing torch)."""
    if device in (None, "", "auto", "cpu"):
        return
    resolve_device(device, what)


def check_readable_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path; AdlaError when it is not an existing, readable file."""
    path = Path(path)
    if not path.exists():
        raise AdlaError(f"{what} not found", path)
    if not path.is_file():
        raise AdlaError(f"{what} is not a file", path)
    if not os.access(path, os.R_OK):
        raise AdlaError(f"{what} is not readable (permission denied)", path)
    return path


def _why_not_writable(folder: Path) -> str | None:
    """Why no file can be written in ``folder``, or None when one can (the folder is created if absent).

    A real probe (create the folder, then a temporary file in it), not ``os.access``: root passes every
    access check yet cannot write to a read-only or virtual file system.
    """
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                return f"{p} is a file, not a folder"
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc} ({exc.filename or folder})"
    return None


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` as a Path; AdlaError unless it is a writable folder or could be created as one.

    The folder is created when absent (the command would create it anyway, only later).
    """
    path = Path(path)
    why = _why_not_writable(path)
    if why:
        raise AdlaError(f"{what} cannot be written: {why}", path)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """``path`` as a Path; AdlaError unless a file can be written there (its folder writable or creatable)."""
    path = Path(path)
    if path.is_dir():
        raise AdlaError(f"{what} is a folder, not a file", path)
    why = _why_not_writable(path.parent)
    if why:
        raise AdlaError(f"{what} cannot be written: {why}", path)
    return path
