"""Checks at the edge, before work starts: the device exists, inputs are readable, outputs writable.

Each raises an AdlaError naming the path (or the argument) and the problem, so that a run fails in its
first second rather than after an hour of work.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
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


def _file_key(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names (through symlinks), or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once resolved, or the same device and inode
    (a hard link, a symlink, another spelling of the path)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    key = _file_key(a)
    return key is not None and key == _file_key(b)


class Inputs:
    """A command's input files ({description: path}, None skipped), indexed by resolved path and by
    (device, inode), so that each output is checked against all of them at once."""

    def __init__(self, inputs: Mapping[str, str | Path | None]):
        self._index: dict[object, tuple[str, str | Path]] = {}
        for name, path in inputs.items():
            if path is None:
                continue
            self._index.setdefault(Path(path).resolve(), (name, path))
            key = _file_key(path)
            if key is not None:
                self._index.setdefault(key, (name, path))

    def check(self, out: str | Path, what: str = "--out") -> Path:
        """``out`` as a Path; AdlaError naming both when it is one of the inputs: writing the output would
        destroy that input."""
        out = Path(out)
        key = _file_key(out)
        hit = self._index.get(out.resolve()) or (self._index.get(key) if key is not None else None)
        if hit is not None:
            name, inp = hit
            raise AdlaError(f"{what} is the input {name} ({inp}): writing it would destroy that input; "
                            f"choose another {what}", out)
        return out


def check_not_input(out: str | Path, inputs: dict[str, str | Path | None], what: str = "--out") -> Path:
    """``out`` as a Path; AdlaError naming both when it is one of ``inputs`` ({description: path}, None
    skipped), by resolved path or by device and inode (a hard link, a symlink)."""
    return Inputs(inputs).check(out, what)


def check_replaceable(out: str | Path, ours: Callable[[Path], object], *, overwrite: bool | None,
                      what: str = "--out", kind: str = "an output of this command") -> Path:
    """``out`` as a Path; AdlaError when it exists, was not written by this command (``ours(out)`` is False:
    no adla mark of its kind) and ``overwrite`` is not set. ``overwrite=None``: the command has no
    --overwrite, the user deletes the file or picks another path."""
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not overwrite and not _safely(ours, out):
        how = "delete it" if overwrite is None else "use --overwrite to replace it"
        raise AdlaError(f"exists and is not {kind}; {how} or choose another {what}", out)
    return out


def _safely(test: Callable[[Path], object], path: Path) -> bool:
    """``test(path)``, False when it raises (an unreadable or foreign file is not ours)."""
    try:
        return bool(test(path))
    except Exception:  # noqa: BLE001 - any failure to recognise the file means it is not ours
        return False


def json_is(test: Callable[[object], bool]) -> Callable[[Path], bool]:
    """A predicate for ``check_replaceable``: the file parses as JSON and ``test`` holds for it."""
    import json

    def check(path: Path) -> bool:
        with open(path) as f:
            return bool(test(json.load(f)))
    return check


def check_output(out: str | Path, inputs: dict[str, str | Path | None], *, ours: Callable[[Path], object],
                 overwrite: bool | None, what: str = "--out", kind: str = "an output of this command") -> Path:
    """``out`` as a Path, checked before any work: writable (``check_output_file``), none of ``inputs``
    (``check_not_input``), and not an existing file this command did not write (``check_replaceable``)."""
    out = check_output_file(out, what)
    check_not_input(out, inputs, what)
    return check_replaceable(out, ours, overwrite=overwrite, what=what, kind=kind)
