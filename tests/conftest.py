"""Shared fixtures: a tiny CPU detector config and a checkpoint of it (random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_OVERRIDES, make_checkpoint

from adla.config import load_config


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config(overrides=TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A checkpoint of the tiny detector with random weights (R18, 32-channel heads, 3 classes)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic COCO validation set (3 images of 64 x 96, 3 classes) in its own folder."""
    from adla.data.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("synth")
    make_synth_dataset(root, num_images=3, size=(64, 96), num_classes=3, seed=0, split_name="val")
    return root
