"""Atomic file writes: a crash or a full disk never leaves a half-written output behind."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adla.errors import AdlaError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise AdlaError(f"cannot write here: {_reason(exc, path)}", path) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)  # a write() says so without a file name
            if not full and (exc.filename is None or Path(exc.filename) != tmp_path):
                raise  # about another file: not ours to describe
            kept = "; the previous file is kept" if path.exists() else ""
            raise AdlaError(f"cannot write ({exc.strerror or exc}){kept}", path) from exc
        try:
            if tmp_path.exists():  # mkstemp makes 0600 files: give the result the usual umask mode
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp_path, 0o666 & ~umask)
            os.replace(tmp_path, path)
        except OSError as exc:
            raise AdlaError(f"cannot write ({exc.strerror or exc})", path) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _reason(exc: OSError, path: Path) -> str:
    """Why ``path`` cannot be created, in words: the first ancestor that is a file, or the OS's reason."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    return exc.strerror or str(exc)


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parsed JSON of ``path``; an AdlaError naming the file when it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise AdlaError(f"{what} not found", path)
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdlaError(f"not valid JSON ({exc})", path) from exc


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically and return the path."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
