"""The run folder of ``adla train``: never overwrite a run by accident, never keep a dead write's litter.

A folder that holds ``last.pt`` or ``model.pt`` holds a run. Starting a new run there needs ``--resume``
(continue it) or ``--overwrite`` (delete its checkpoints and start again); otherwise the command refuses
with one line. Temporary files left by a checkpoint write that was killed (``.last.pt.*.tmp``, 65 MB
each for the small model) are removed when a run starts or resumes.
"""

from __future__ import annotations

from pathlib import Path

from adla.checks import check_writable_dir
from adla.errors import AdlaError

RUN_FILES = ("last.pt", "model.pt", "metrics.json", "log.csv")  # what a new run replaces
TEMP_OF = ("last.pt", "model.pt", "metrics.json", "log.csv", "config.yaml")  # atomic writers' temp files


def prepare_run_dir(out: str | Path, *, resume: bool, overwrite: bool, is_main: bool = True) -> list[Path]:
    """Check the run folder ``out`` before any work; return the stale temporary files removed.

    AdlaError when ``out`` cannot be written, or holds a run and neither ``resume`` nor ``overwrite``
    is set. With ``overwrite`` the previous run's checkpoints, metrics and log are deleted (rank 0 only).
    """
    out = check_writable_dir(out, "run folder (--out / out_dir)")
    existing = [name for name in ("last.pt", "model.pt") if (out / name).is_file()]
    if existing and not resume and not overwrite:
        state = "a finished run" if "model.pt" in existing else "an unfinished run"
        raise AdlaError(f"holds {state} ({', '.join(existing)}); use --resume to continue it, or --overwrite "
                        "or a new --out to start again", out)
    if not is_main:
        return []
    if overwrite and not resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    return remove_stale_temps(out)


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete the temporary files a killed checkpoint/log write left in ``out``; return them."""
    stale = [p for name in TEMP_OF for p in out.glob(f".{name}.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
