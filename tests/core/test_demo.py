"""The main job end to end, on a tiny schedule: train both assigners, evaluate, export, tiled run, report."""

from pathlib import Path

from adla.cli import main


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
