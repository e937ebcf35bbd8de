"""Test helpers importable from any test (`from helpers import make_checkpoint, shared_data`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adla.checkpoint import save_checkpoint
from adla.config import load_config, small_model_overrides
from adla.model import build_detector

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The small CPU model (adla.config.small_model_overrides) at half its FPN and head width: the tests build
# and train many detectors on a couple of shared CPU cores, and 32 channels keep each one quick.
TINY_OVERRIDES = small_model_overrides(fpn_channels=32, head_channels=32)


def shared_data(name: str) -> Path:
    """Path of a real data set in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is not present on this machine")
    return path


def make_checkpoint(path: Path, overrides: list[str] | None = None, seed: int = 0,
                    class_names: list[str] | None = None) -> Path:
    """Save a checkpoint of the tiny detector (random weights) at ``path``."""
    cfg = load_config(overrides=TINY_OVERRIDES + list(overrides or []))
    torch.manual_seed(seed)
    model = build_detector(cfg.model).eval()
    names = class_names or [f"class{i}" for i in range(cfg.model.num_classes)]
    return save_checkpoint(path, cfg, model, names, epoch=0, iteration=0)


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder path in which nothing can be written: under a read-only folder, or (as root, whom file
    modes do not stop) under /sys, where even root cannot create files."""
    import os

    if os.geteuid() == 0:
        path = Path("/sys/adla-test-not-writable")
        assert not path.exists()
        return path / "sub"
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    return ro / "sub"


def data_cli(argv: list[str]) -> int:
    """``adla data ...`` / ``adla evaluate ...`` through their own parser, the command's return value (no
    catching of AdlaError: a test sees the exception)."""
    import argparse

    from adla.app import evaluate
    from adla.data.commands import register

    parser = argparse.ArgumentParser(prog="adla")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    evaluate.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)
