"""The main job end to end, on a tiny schedule: train both assigners, evaluate, export, tiled run, report."""

from pathlib import Path

from adla.app.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--train-images", "8", "--epochs", "1", "--scene-size", "640",
                 "--set", "model.fpn_channels=32", "model.head_channels=32", "data.num_workers=0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "max-IoU" in printed and "ADLA" in printed
    assert "identical graphs" in printed  # the no-overhead verdict of bench model
    for name in ("maxiou/model.pt", "adla/model.pt", "adla.onnx", "infer/scene.coco.json",
                 "infer/scene.geojson", "infer/scene.preview.jpg", "bench_model/model_bench.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    for section in ("## Evaluation", "## Inference cost", "## Tiled inference", "## Steps"):
        assert section in report, section


def test_demo_refuses_incomplete_data_arguments(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--data", str(Path(tmp_path) / "x.json")])
    assert code == 2
    assert "--data needs --images" in capsys.readouterr().err


def test_demo_with_data_and_seeds_reports_the_spread(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no pretrained weights: ResNet-18 from scratch
    monkeypatch.setattr("adla.weights.reachable", _no_network)
    train, data, val, out = _demo_data(tmp_path)
    # no --epochs: the real-data recipe (GroupNorm, D4 views, crops, iteration budget), cut to 2 iterations
    code = main(["demo", "--out", str(out), "--data", str(train), "--images", str(data), "--val", str(val),
                 "--val-images", str(data), "--seeds", "2", "--skip-export",
                 "--set", "optim.iters=2", "optim.warmup_iters=1", "model.fpn_channels=32",
                 "model.head_channels=32", "data.num_workers=0", "data.crop=64"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "real-data recipe" in printed and "Over 2 seeds" in printed and "ADLA - max-IoU (paired)" in printed
    for name in ("maxiou/model.pt", "adla_seed1/model.pt", "seeds.png", "seeds.json", "report.md"):
        assert (out / name).is_file(), name
    cfg = (out / "adla_seed1" / "config.yaml").read_text()
    assert "norm: gn" in cfg and "seed: 1" in cfg and "rot90: true" in cfg
    assert "backbone: resnet18 from scratch" in printed and "adla weights get mobilenet_v2" in printed
    assert "Backbone: resnet18 from scratch" in (out / "report.md").read_text()


def _demo_data(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A tiny synthetic training and validation set for ``adla demo --data``: (train json, image folder,
    val json, the demo's --out)."""
    from adla.data.synth import make_synth_dataset

    data = tmp_path / "data"
    train = make_synth_dataset(data, num_images=4, size=(96, 96), seed=2, split_name="train")
    val = make_synth_dataset(data, num_images=2, size=(96, 96), seed=2, split_name="val")
    return train, data, val, tmp_path / "demo"


def _no_network(url, timeout=3.0):
    raise AssertionError(f"the demo must not look for a download ({url})")


def test_demo_with_data_uses_pretrained_mobilenet_when_its_weights_are_found(tmp_path, capsys, monkeypatch):
    import pytest

    weights = Path(__file__).resolve().parents[3] / "shared" / "weights" / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is not present on this machine")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / weights.name).symlink_to(weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("adla.weights.reachable", _no_network)
    train, data, val, out = _demo_data(tmp_path)
    code = main(["demo", "--out", str(out), "--data", str(train), "--images", str(data), "--val", str(val),
                 "--val-images", str(data), "--skip-export", "--set", "optim.iters=2", "optim.warmup_iters=1",
                 "model.fpn_channels=32", "model.head_channels=32", "data.num_workers=0", "data.crop=64"])
    assert code == 0
    printed = capsys.readouterr().out
    line = f"mobilenet_v2 with ImageNet weights {hub / weights.name} (sha256 checked; frozen_bn norm in the " \
           "backbone, gn in FPN and heads)"
    assert f"backbone: {line}" in printed and f"Backbone: {line}." in (out / "report.md").read_text()
    cfg = (out / "adla" / "config.yaml").read_text()
    for key in ("backbone: mobilenet_v2", "backbone_weights: imagenet", "norm: frozen_bn", "head_norm: gn",
                "rot90: true"):
        assert key in cfg, key


def test_real_recipe_sizes_crops_to_the_data_and_spends_a_pixel_budget(tmp_path):
    from adla.app.demo import REAL_PIXELS, real_recipe
    from adla.data.synth import make_synth_dataset

    small = make_synth_dataset(tmp_path / "a", num_images=1, size=(100, 150), seed=2, split_name="train")
    large = make_synth_dataset(tmp_path / "b", num_images=1, size=(700, 900), seed=2, split_name="train")
    a, b = real_recipe(small, tmp_path / "a"), real_recipe(large, tmp_path / "b")
    assert "data.crop=128" in a and f"optim.iters={round(REAL_PIXELS / (4 * 128 * 128))}" in a  # 100 -> 128
    assert "data.crop=512" in b and f"optim.iters={round(REAL_PIXELS / (4 * 512 * 512))}" in b  # capped
    assert "model.norm=gn" in a and "data.rot90=true" in a
    iters = round(REAL_PIXELS / (4 * 128 * 128))
    assert f"optim.milestones=[{int(5 / 6 * iters)}]" in a  # one image a epoch: the decay at 5/6 of the budget
    p = real_recipe(small, tmp_path / "a", pretrained=True)
    assert p.index("model.norm=gn") < p.index("model.norm=frozen_bn")  # the later override wins
    assert "model.backbone=mobilenet_v2" in p and "model.backbone_weights=imagenet" in p
