"""TileOptions: one frozen set of options, checked once, the model's own score threshold unless given."""

from __future__ import annotations

import dataclasses

import pytest

from adla.errors import AdlaError
from adla.postprocess import PostprocessConfig
from adla.runtime.options import TileOptions


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tile": 16}, "--tile must be at least 32"),
    ({"overlap": 1.0}, r"--overlap is a fraction of the tile in \[0, 1\)"),
    # 0.999 would cut a 1024 px scene at tile 800 into 50,626 tiles: refused, with the cost said
    ({"overlap": 0.999, "tile": 800}, r"--overlap 0.999 steps 1 px between tiles of 800: about 1,000,000x the tiles"),
    ({"overlap": 0.9}, r"use at most 0.875"),
    ({"batch": 0}, "--batch and --workers must be at least 1"),
    ({"workers": 0}, "--batch and --workers must be at least 1"),
    ({"score_thr": 1.5}, r"--score must be in \[0, 1\]"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(AdlaError, match=message):
        TileOptions(**kwargs)


def test_the_largest_overlap_is_accepted():
    assert TileOptions(overlap=0.875).overlap == 0.875


def test_frozen_and_normalised():
    opts = TileOptions(classes=["car", 1], bands=[3, "2", 1])
    assert opts.classes == ("car", "1") and opts.bands == (3, 2, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.tile = 512  # type: ignore[misc]
    assert TileOptions().score_thr is None  # the model's own threshold


def test_score_threshold_is_the_models_unless_given():
    model = PostprocessConfig(score_thr=0.25, pre_nms_topk=100, nms_iou=0.6, max_dets=50)
    assert TileOptions().post_config(model) == model
    mine = TileOptions(score_thr=0.7).post_config(model)
    assert mine == PostprocessConfig(score_thr=0.7, pre_nms_topk=100, nms_iou=0.6, max_dets=50)
