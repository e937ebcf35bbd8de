"""Every shipped config loads and names a known assigner with valid parameters."""

from pathlib import Path

import pytest

from adla.config import load_config, small_model_overrides
from adla.errors import AdlaError
from adla.train.assigners import AdaptiveDynamicAssigner, build_assigner

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("_"))


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


def test_cpu_small_configs_are_the_one_small_model():
    small = load_config(overrides=small_model_overrides()).model
    assert (small.backbone, small.norm, small.num_classes, small.fpn_channels, small.head_channels,
            small.head_convs) == ("resnet18", "bn", 3, 64, 64, 2)
    for name in ("cpu_small_maxiou", "cpu_small_adla"):
        assert load_config(CONFIG_DIR / f"{name}.yaml").model == small


def test_small_model_overrides_replace_by_field_name():
    narrow = load_config(overrides=small_model_overrides(fpn_channels=32, head_channels=32)).model
    assert (narrow.backbone, narrow.fpn_channels, narrow.head_channels, narrow.head_convs) == ("resnet18", 32, 32, 2)
    with pytest.raises(AdlaError, match="unknown model field"):
        small_model_overrides(head_width=32)
