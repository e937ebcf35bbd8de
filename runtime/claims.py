"""Who may write a scene's outputs, and when they are complete.

Two ``adla infer`` runs (or a run and a Ray driver) into one ``--out`` must not write the same scene at
once, and ``--resume`` must trust only outputs that were finished. Per scene, in ``--out``:

- ``.STEM.lock``: an advisory lock (``flock``, exclusive, non-blocking) held while the scene runs. The
  run that cannot take it skips the scene and says which process holds it. The lock is taken on the
  open file and checked against the path afterwards (same inode), so the file can be removed on release
  without a third run slipping in between. On NFS, Linux maps ``flock`` to the server's byte-range locks.
- ``STEM.done.json``: the manifest, written atomically after every output: each file's name and size,
  the detection count. A scene is complete only when its manifest exists and every file it lists has
  the listed size; a 0-byte or half-copied ``STEM.coco.json`` is not a finished scene.

Files of a scene are opened without following links (``O_NOFOLLOW``) and created exclusively
(``O_EXCL``): a link planted in a shared ``--out`` is replaced, never written through.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

from adla.errors import AdlaError
from adla.io import write_json

MANIFEST_FORMAT = "adla-scene-outputs"
PARTIAL_SUFFIXES = (".partial.geojsonl", ".partial.dets.f32")


def manifest_path(out_dir: str | Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}.done.json"


def lock_path(out_dir: str | Path, stem: str) -> Path:
    return Path(out_dir) / f".{stem}.lock"


def create_exclusive(path: Path, mode: str = "w"):
    """``path`` opened for writing as a new file: whatever was there (a leftover, or a planted link) is
    removed first, never followed or truncated. Call it only while holding the scene's claim."""
    if os.path.lexists(path):
        os.unlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise AdlaError(f"cannot create a fresh file here ({exc.strerror}): another process put one there",
                        path) from exc
    return os.fdopen(fd, mode)


class SceneClaim:
    """The exclusive right to write one scene's outputs in ``out_dir`` (see the module docstring)."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @classmethod
    def take(cls, out_dir: str | Path, stem: str) -> SceneClaim | str:
        """The claim, or why it cannot be had now (another process holds it: its pid and host)."""
        path = lock_path(out_dir, stem)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # the holder may remove the file between our open and our lock: open again
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise AdlaError("the scene's lock file is a symbolic link; remove it", path) from exc
                raise AdlaError(f"cannot create the scene's lock file ({exc.strerror})", path) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    return f"another adla run is writing it{f' ({holder})' if holder else ''}"
                raise AdlaError(f"cannot lock the scene's outputs ({exc.strerror})", path) from exc
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(path))
            except FileNotFoundError:
                same = False
            if same and stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
                return cls(path, fd)
            os.close(fd)  # the file we locked was removed or replaced meanwhile
        raise AdlaError("cannot lock the scene's outputs: the lock file keeps changing", path)

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order: the next taker re-checks the path)."""
        if self._fd < 0:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = -1


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def write_manifest(out_dir: str | Path, stem: str, outputs: dict[str, Path], count: int) -> Path:
    """``STEM.done.json``: the scene's files with their sizes; written last, atomically."""
    files = {kind: {"name": Path(p).name, "bytes": Path(p).stat().st_size} for kind, p in outputs.items()}
    return write_json(manifest_path(out_dir, stem), {"format": MANIFEST_FORMAT, "version": 1, "files": files,
                                                     "detections": int(count), "finished": time.time()})


def manifest_state(out_dir: str | Path, stem: str) -> tuple[int, int] | None:
    """(inode, mtime ns) of the scene's manifest, None when absent: tells whether another run finished the
    scene after this one looked."""
    try:
        st = os.lstat(manifest_path(out_dir, stem))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def is_complete(out_dir: str | Path, stem: str) -> bool:
    """True when the scene's manifest is there, is adla's, and every file it lists has its size."""
    path = manifest_path(out_dir, stem)
    if not path.is_file() or path.is_symlink():
        return False
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"].values()
        if manifest.get("format") != MANIFEST_FORMAT or not files:
            return False
        for f in files:
            target = Path(out_dir) / f["name"]
            if target.is_symlink() or not target.is_file() or target.stat().st_size != int(f["bytes"]):
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def clean_partials(out_dir: str | Path, stem: str) -> list[Path]:
    """Remove the scene's partial files (left when a run died after its last rename); call with the claim."""
    removed = []
    for suffix in PARTIAL_SUFFIXES:
        p = Path(out_dir) / f"{stem}{suffix}"
        if os.path.lexists(p):
            os.unlink(p)
            removed.append(p)
    return removed
