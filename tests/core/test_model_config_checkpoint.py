import pytest
import torch
from helpers import TINY_OVERRIDES, make_checkpoint

from adla.anchors import generate_anchors
from adla.assigner_params import AdlaParams, MaxIoUParams, RFLAParams
from adla.checkpoint import load_checkpoint, load_model
from adla.config import load_config, to_dict
from adla.errors import AdlaError
from adla.model import build_detector
from adla.postprocess import PostprocessConfig, postprocess


def test_detector_outputs_match_anchor_count(tiny_cfg):
    model = build_detector(tiny_cfg.model).eval()
    x = torch.rand(2, 3, 96, 128) * 255
    cls, box = model(x)
    n = generate_anchors(tiny_cfg.model.anchors, 96, 128).shape[0]
    assert cls.shape == (2, n, 3) and box.shape == (2, n, 4)
    # same raw tensors in train mode (no losses, no decoding inside the model)
    model.train()
    cls2, _ = model(x)
    assert cls2.shape == cls.shape


def test_initial_scores_follow_prior(tiny_cfg):
    model = build_detector(tiny_cfg.model).eval()
    cls, _ = model(torch.rand(1, 3, 64, 64) * 255)
    assert abs(torch.sigmoid(cls).mean().item() - 0.01) < 0.005


def test_config_unknown_key_and_overrides(tmp_path):
    cfg = load_config(overrides=["optim.epochs=3", "model.anchors.sizes=[8, 16, 32]"])
    assert cfg.optim.epochs == 3 and cfg.model.anchors.sizes == (8.0, 16.0, 32.0)
    with pytest.raises(AdlaError, match="unknown key 'epochz'"):
        load_config(overrides=["optim.epochz=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.01\n  momentun: 0.9\n")
    with pytest.raises(AdlaError, match="momentun"):
        load_config(bad)
    with pytest.raises(AdlaError, match="expected an integer"):
        load_config(overrides=["optim.epochs=abc"])


def test_config_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  epochs: 7\n  lr: 0.1\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim:\n  lr: 0.2\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.optim.epochs == 7 and cfg.optim.lr == 0.2


def test_checkpoint_round_trip(tmp_path, tiny_cfg):
    path = make_checkpoint(tmp_path / "a.pt")
    model, ckpt = load_model(path)
    assert to_dict(ckpt["run_config"]) == to_dict(tiny_cfg)
    ref = build_detector(tiny_cfg.model)
    assert set(model.state_dict()) == set(ref.state_dict())


def test_checkpoint_keeps_typed_assigner_params(tmp_path):
    path = make_checkpoint(tmp_path / "adla.pt", ["assigner.name=adla", "assigner.params.dynamic=false",
                                                  "assigner.params.alpha0=0.5"])
    cfg = load_checkpoint(path)["run_config"]
    assert cfg.assigner.params == AdlaParams(dynamic=False, alpha0=0.5)
    stored = torch.load(path, weights_only=True)["config"]["assigner"]
    assert stored["params"] == to_dict(AdlaParams(dynamic=False, alpha0=0.5))  # every field, a plain dict
    assert to_dict(cfg) == torch.load(path, weights_only=True)["config"]


@pytest.mark.parametrize("assigner, expected", [
    ({"name": "maxiou", "params": {}}, MaxIoUParams()),  # the untyped dicts older adla saved
    ({"name": "adla", "params": {"dynamic": False}}, AdlaParams(dynamic=False)),
    ({"name": "rfla", "params": {"trf": [91, 267, 427], "topk": [3, 1], "neg_thr": 0.8}}, RFLAParams()),
    ({"name": "adla"}, AdlaParams()),
])
def test_old_checkpoint_params_dict_becomes_typed(tmp_path, assigner, expected):
    ck = torch.load(make_checkpoint(tmp_path / "new.pt"), weights_only=True)
    ck["config"]["assigner"] = assigner
    torch.save(ck, tmp_path / "old.pt")
    cfg = load_checkpoint(tmp_path / "old.pt")["run_config"]
    assert cfg.assigner.name == assigner["name"] and cfg.assigner.params == expected
    ck["config"]["assigner"] = {"name": assigner["name"], "params": {"alpha_begin": 0.1}}
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(AdlaError, match=r"bad.pt: checkpoint config is invalid: .*unknown parameter\(s\) "
                                        r"\['alpha_begin'\]"):
        load_checkpoint(tmp_path / "bad.pt")


def test_checkpoint_errors_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(AdlaError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(AdlaError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(AdlaError, match="not an adla checkpoint"):
        load_checkpoint(other)
    # weights of one architecture under another's config
    wide = make_checkpoint(tmp_path / "wide.pt", ["model.head_channels=64"])
    ck = torch.load(wide, weights_only=True)
    ck["config"] = to_dict(load_config(overrides=TINY_OVERRIDES))
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(AdlaError, match="do not match"):
        load_model(tmp_path / "mismatch.pt")


def test_postprocess_decodes_and_suppresses():
    anchors = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [50.0, 50, 60, 60]])
    logits = torch.tensor([[[5.0, -9], [4.0, -9], [-9, 3.0]]])
    deltas = torch.zeros(1, 3, 4)
    out = postprocess(anchors, logits, deltas, [(64, 64)], PostprocessConfig(score_thr=0.5))[0]
    # anchors 0 and 1 overlap (IoU 0.82) with the same class: NMS keeps the higher score
    assert out["labels"].tolist() == [0, 1]
    assert torch.allclose(out["boxes"], torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60]]))
