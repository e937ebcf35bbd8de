"""The run folder of ``adla train``: never overwrite a run by accident, never keep a dead write's litter.

A folder that holds ``last.pt`` or ``model.pt`` holds a run. Starting a new run there needs ``--resume``
(continue it) or ``--overwrite`` (delete its checkpoints and start again); otherwise the command refuses
with one line. Temporary files left by a checkpoint write that was killed (``.last.pt.*.tmp``, 65 MB
each for the small model) are removed when a run starts or resumes.

The folder may hold other files, but none that a run writes (``config.yaml``, ``metrics.json``,
``log.csv``) unless it holds a run, or the file is a resolved config that ``adla train`` wrote (it starts
with ``CONFIG_MARK``): a run never replaces a file it did not write without ``--overwrite``. The config
given to ``adla train`` is never replaced by its resolved copy.
"""

from __future__ import annotations

from pathlib import Path

from adla.checks import check_writable_dir, same_file
from adla.config import RunConfig, dump_yaml
from adla.errors import AdlaError

RUN_FILES = ("last.pt", "model.pt", "metrics.json", "log.csv")  # what a new run replaces
TEMP_OF = ("last.pt", "model.pt", "metrics.json", "log.csv", "config.yaml")  # atomic writers' temp files
CONFIG_MARK = "# the resolved config of an adla train run (written by adla train)\n"


def resolved_config_text(cfg: RunConfig) -> str:
    """What a run writes to ``<out_dir>/config.yaml``: the mark, then the resolved config as YAML."""
    return CONFIG_MARK + dump_yaml(cfg)


def check_config_output(cfg: RunConfig, config: str | Path | None) -> None:
    """AdlaError when the run's ``config.yaml`` is the config file given to the command (``config``) and
    writing the resolved config would change it (a resolved config written by a run, given back for
    ``--resume``, is the same text and stays)."""
    target = Path(cfg.out_dir) / "config.yaml"
    if config is None or not same_file(target, config):
        return
    if target.is_file() and target.read_text() == resolved_config_text(cfg):
        return
    raise AdlaError(f"the run folder's config.yaml is the given config {config}: the run would replace it "
                    "with its resolved copy; choose another --out / out_dir", target)


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
    foreign = [name for name in ("config.yaml", "metrics.json", "log.csv") if _foreign(out / name)]
    if foreign and not existing and not overwrite:
        raise AdlaError(f"holds {', '.join(foreign)} that adla train did not write (no run here); use "
                        "--overwrite to replace them, or a new --out", out)
    if not is_main:
        return []
    if overwrite and not resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    return remove_stale_temps(out)


def _foreign(path: Path) -> bool:
    """An existing file that a run would replace, not recognisably written by adla train."""
    if not (path.exists() or path.is_symlink()):
        return False
    if path.name != "config.yaml":
        return True
    try:
        with open(path) as f:
            return f.readline() != CONFIG_MARK
    except (OSError, UnicodeDecodeError):
        return True


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete the temporary files a killed checkpoint/log write left in ``out``; return them."""
    stale = [p for name in TEMP_OF for p in out.glob(f".{name}.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
