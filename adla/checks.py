"""Checks at the edge, before work starts: the device exists, inputs are readable, outputs writable.

Each raises an AdlaError naming the path (or the argument) and the problem, so that a run fails in its
first second rather than after an hour of work.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from adla.errors import AdlaError


def check_device(device: str | None, what: str = "--device") -> None:
    """AdlaError when ``device`` names CUDA (``cuda``, ``cuda:1``) and torch sees no such GPU."""
    if not device or not str(device).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise AdlaError(f"{what} {device}: no CUDA GPU is available to PyTorch on this machine; "
                        "use --device cpu (or auto)")
    _, _, index = str(device).partition(":")
    if index:
        if not index.isdigit():
            raise AdlaError(f"{what} {device}: expected cuda or cuda:N")
        if int(index) >= torch.cuda.device_count():
            raise AdlaError(f"{what} {device}: this machine has {torch.cuda.device_count()} GPU(s)")


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
