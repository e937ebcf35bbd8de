"""Every shipped config loads and names a known assigner with valid parameters."""

from pathlib import Path

import pytest

from adla.config import load_config
from adla.train.assigners import AdaptiveDynamicAssigner, build_assigner

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_builds_its_assigner(path):
    cfg = load_config(path)
    assigner = build_assigner(cfg.assigner.name, cfg.assigner.params)
    assert cfg.model.anchors.sizes == (16.0, 32.0, 64.0)  # the paper's sub-size anchors everywhere
    if path.stem.startswith("aitod"):
        assert (cfg.model.fpn_channels, cfg.model.head_channels, cfg.model.head_convs) == (256, 256, 4)
        assert cfg.optim.epochs == 12 and cfg.optim.milestones == (8, 11)
    if "ablation_at_only" in path.stem:
        assert isinstance(assigner, AdaptiveDynamicAssigner) and not assigner.dynamic
    if "ablation_diou_only" in path.stem:
        assert isinstance(assigner, AdaptiveDynamicAssigner) and not assigner.adaptive
    if "ablation_md" in path.stem:
        assert assigner.quality == "md"


def test_all_paper_settings_are_shipped():
    names = {p.stem for p in CONFIGS}
    for bb in (18, 50, 101):
        assert {f"aitod_retinanet_r{bb}_maxiou", f"aitod_retinanet_r{bb}_adla"} <= names
    assert {"aitod_retinanet_r50_atss", "aitod_retinanet_r50_nwd", "aitod_retinanet_r50_rfla"} <= names
    assert len(CONFIGS) == 14
