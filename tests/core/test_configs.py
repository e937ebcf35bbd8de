"""Every shipped config loads and names a known assigner with valid parameters."""

from pathlib import Path

import pytest
import yaml

from adla.assigner_params import AdlaParams, ATSSParams, MaxIoUParams, NWDParams, RFLAParams
from adla.config import (
    AssignerConfig,
    config_from_dict,
    dump_yaml,
    load_config,
    small_model_overrides,
    to_dict,
)
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
        assert assigner.matching == "md"


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


def test_shipped_assigner_params_are_typed():
    rfla = load_config(CONFIG_DIR / "aitod_retinanet_r50_rfla.yaml").assigner
    assert rfla.params == RFLAParams(trf=(91.0, 267.0, 427.0), topk=(3, 1))  # YAML ints and lists, typed
    at_only = load_config(CONFIG_DIR / "aitod_retinanet_r50_ablation_at_only.yaml").assigner
    assert at_only.params == AdlaParams(dynamic=False)
    assert load_config().assigner == AssignerConfig("maxiou", MaxIoUParams())


@pytest.mark.parametrize("overrides, expected", [
    (["assigner.name=adla", "assigner.params.alpha0=0.5", "assigner.params.matching=md"],
     AssignerConfig("adla", AdlaParams(alpha0=0.5, matching="md"))),
    (["assigner.params.alpha0=0.5", "assigner.name=adla"],  # the name may come after its params
     AssignerConfig("adla", AdlaParams(alpha0=0.5))),
    (["assigner.name=atss", "assigner.params.topk=5"], AssignerConfig("atss", ATSSParams(topk=5))),
    (["assigner.name=rfla", "assigner.params.topk=[2, 2]", "assigner.params.trf=[8, 16, 32]"],
     AssignerConfig("rfla", RFLAParams(topk=(2, 2), trf=(8.0, 16.0, 32.0)))),
    (["assigner.params.neg_iou_thr=[0.1, 0.4]"], AssignerConfig("maxiou", MaxIoUParams(neg_iou_thr=(0.1, 0.4)))),
    (["assigner.name=nwd", "assigner.params={constant: 6, match_low_quality: false}"],
     AssignerConfig("nwd", NWDParams(constant=6.0, match_low_quality=False))),
])
def test_assigner_param_overrides(overrides, expected):
    assert load_config(overrides=overrides).assigner == expected


@pytest.mark.parametrize("overrides, message", [
    (["assigner.name=adla", "assigner.params.alpha=0.5"],
     r"config.assigner.params: unknown parameter\(s\) \['alpha'\] for assigner 'adla'; known: \['alpha0', "),
    (["assigner.name=atss", "assigner.params.pos_iou_thr=0.5"],
     r"unknown parameter\(s\) \['pos_iou_thr'\] for assigner 'atss'; known: \['topk', 'center_eps', 'chunk_size'\]"),
    (["assigner.name=adla", "assigner.params.gamma=steep"],
     r"config.assigner.params.gamma: expected a number, got 'steep' \(assigner 'adla'\)"),
    (["assigner.name=atss", "assigner.params.topk=9.5"],
     r"config.assigner.params.topk: expected an integer, got 9.5 \(assigner 'atss'\)"),
    (["assigner.params.prune=maybe"], r"config.assigner.params.prune: expected true or false, got 'maybe'"),
    (["assigner.name=rfla", "assigner.params.topk=3"], r"config.assigner.params.topk: expected a list, got 3"),
    (["assigner.name=hungarian"], r"config.assigner.name: unknown assigner 'hungarian'; known: \['adla', "),
    (["assigner.params.topk.k=3"], r"override assigner.params.topk.k: topk is not a section"),
    (["assigner.params=[1, 2]"], r"config.assigner.params: expected a mapping"),
])
def test_bad_assigner_params_fail_at_load(overrides, message):
    with pytest.raises(AdlaError, match=message) as err:
        load_config(overrides=overrides)
    assert "\n" not in str(err.value)


def test_bad_assigner_params_in_yaml_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("assigner:\n  name: nwd\n  params: {constant: 12.8, prune: false}\n")
    with pytest.raises(AdlaError, match=r"bad.yaml.assigner.params: unknown parameter\(s\) \['prune'\] for "
                                        r"assigner 'nwd'; known: \['pos_iou_thr', "):
        load_config(bad)
    child = tmp_path / "child.yaml"  # a base's params for another assigner than the child's
    (tmp_path / "base.yaml").write_text("assigner:\n  name: adla\n  params: {dynamic: false}\n")
    child.write_text("_base_: base.yaml\nassigner:\n  name: maxiou\n")
    with pytest.raises(AdlaError, match=r"unknown parameter\(s\) \['dynamic'\] for assigner 'maxiou'"):
        load_config(child)
    child.write_text("_base_: base.yaml\nassigner:\n  params: {matching: md}\n")
    assert load_config(child).assigner.params == AdlaParams(dynamic=False, matching="md")
    empty = tmp_path / "empty.yaml"
    empty.write_text("assigner:\n  name: atss\n  params:\n")
    assert load_config(empty).assigner.params == ATSSParams()


def test_assigner_config_converts_and_checks_its_params():
    assert AssignerConfig("atss").params == ATSSParams()
    assert AssignerConfig("rfla", {"topk": [1, 1]}).params == RFLAParams(topk=(1, 1))
    with pytest.raises(AdlaError, match="MaxIoUParams given for assigner 'nwd', which takes NWDParams"):
        AssignerConfig("nwd", MaxIoUParams())
    with pytest.raises(AdlaError, match="unknown assigner 'hungarian'"):
        AssignerConfig("hungarian")


def test_saved_config_round_trips():
    cfg = load_config(CONFIG_DIR / "aitod_retinanet_r50_rfla.yaml", ["assigner.params.neg_thr=0.7"])
    assert config_from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg
    assert to_dict(cfg.assigner) == {"name": "rfla", "params": {
        "trf": [91.0, 267.0, 427.0], "erf_fraction": 0.5, "topk": [3, 1], "stage2_ratio": 0.9, "neg_thr": 0.7,
        "chunk_size": 64}}


def test_data_paths_of_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "train.json").write_text("{}")
    (tmp_path / "train.json").write_text("{}")  # the same name in the working directory: not the one meant
    (tmp_path / "only_here.json").write_text("{}")
    cfg_file = tmp_path / "exp" / "c.yaml"
    cfg_file.write_text("data:\n  train_ann: train.json\n  val_ann: only_here.json\n  val_images: img\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(cfg_file)
    assert cfg.data.train_ann == str(tmp_path / "exp" / "train.json")
    assert cfg.data.val_ann == "only_here.json"  # a run folder written before the rule: the working directory's
    assert cfg.data.val_images == str(tmp_path / "exp" / "img")  # found nowhere: named where the file says
    # an override is the shell's: relative to the working directory
    assert load_config(cfg_file, ["data.train_ann=train.json"]).data.train_ann == "train.json"
