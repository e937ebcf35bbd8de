"""``adla analyze-assign`` and ``adla bench assign`` on tiny inputs."""

from __future__ import annotations

import argparse
import json

import pytest

from adla.errors import AdlaError
from adla.train import assign_commands
from adla.train.analyze import analyze_assignment, format_analysis_table, parse_assigner_spec, write_analysis


def write_coco(path, annotations, images=None):
    images = images or [{"id": 1, "file_name": "a.png", "width": 100, "height": 90},
                        {"id": 2, "file_name": "b.png", "width": 64, "height": 64}]
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "car"}]}
    path.write_text(json.dumps(data))
    return path


def ann(i, bbox, image_id=1, **extra):
    return {"id": i, "image_id": image_id, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3],
            "iscrowd": 0, **extra}


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path / "ann.json", [
        ann(1, [13, 13, 6, 6]),  # very tiny: inside the 16x16 anchor centred at (16, 16), IoU 0.14
        ann(2, [40, 10, 12, 12]),  # tiny
        ann(3, [10, 50, 24, 24]),  # small
        ann(4, [50, 40, 40, 40]),  # medium
        ann(5, [60, 5, 10, 10], iscrowd=1),  # skipped
        ann(6, [5, 70, 0, 8]),  # zero size: skipped
        # image 2 has no annotation
    ])


SPECS = {
    "maxiou": ("maxiou", {}),
    "maxiou-nolq": ("maxiou", {"match_low_quality": False}),
    "adla": ("adla", {}),
    "atss": ("atss", {}),
    "nwd": ("nwd", {}),
    "rfla": ("rfla", {}),
}


def test_analyze_assignment_counts(coco):
    res = analyze_assignment(coco, SPECS, show_progress=False)
    assert res["num_images"] == 2 and res["num_gts"] == 4
    assert res["gts_per_bucket"] == {"very_tiny": 1, "tiny": 1, "small": 1, "medium": 1}
    vt = {label: res["assigners"][label]["buckets"]["very_tiny"] for label in SPECS}
    # The 6x6 GT: no positive under plain max-IoU thresholds, one through low-quality matching or ADLA.
    assert vt["maxiou-nolq"]["positives"] == 0 and vt["maxiou-nolq"]["zero_pos_share"] == 1.0
    assert vt["maxiou"]["positives"] >= 1 and vt["maxiou"]["zero_pos_share"] == 0.0
    assert vt["adla"]["positives"] >= 1 and vt["adla"]["zero_pos_share"] == 0.0
    every = res["assigners"]["maxiou"]["buckets"]["all"]
    assert every["gts"] == 4 and every["zero_pos_share"] == 0.0
    assert every["mean_pos"] == pytest.approx(every["positives"] / 4)
    # A 40x40 GT matches many sub-size anchors at IoU >= 0.5.
    assert res["assigners"]["maxiou-nolq"]["buckets"]["medium"]["positives"] >= 3
    assert res["assigners"]["atss"]["buckets"]["all"]["positives"] >= 4
    # NWD (with low-quality matching) and RFLA (top-k ranking) give every GT a positive, tiny ones too.
    for label in ("nwd", "rfla"):
        assert res["assigners"][label]["buckets"]["all"]["zero_pos_share"] == 0.0
    # RFLA's stage 1 takes the top 3 receptive fields of each GT, each shared by 3 anchor scales.
    assert res["assigners"]["rfla"]["buckets"]["very_tiny"]["positives"] >= 9
    table = format_analysis_table(res)
    assert "mean positives per GT" in table and "maxiou-nolq" in table and "very_tiny (1)" in table


def test_max_images_and_outputs(coco, tmp_path):
    res = analyze_assignment(coco, {"adla": ("adla", {})}, max_images=1, show_progress=False)
    assert res["num_images"] == 1
    json_path, png_path = write_analysis(res, tmp_path / "out")
    assert json.loads(json_path.read_text()) == res
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["assign_analysis.json", "assign_analysis.png"]


def test_parse_assigner_spec():
    assert parse_assigner_spec("maxiou") == ("maxiou", "maxiou", {})
    assert parse_assigner_spec("adla:adaptive=false,alpha0=0.5") == (
        "adla:adaptive=false,alpha0=0.5", "adla", {"adaptive": False, "alpha0": 0.5})
    assert parse_assigner_spec("nwd:constant=8") == ("nwd:constant=8", "nwd", {"constant": 8})
    with pytest.raises(AdlaError, match="unknown assigner 'hungarian'"):
        parse_assigner_spec("hungarian")
    with pytest.raises(AdlaError, match="unknown parameter.*'prune'"):
        parse_assigner_spec("rfla:prune=false")
    with pytest.raises(AdlaError, match="alpha"):
        parse_assigner_spec("adla:alpha=0.5")
    with pytest.raises(AdlaError, match="key=value"):
        parse_assigner_spec("adla:alpha0")


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="adla")
    sub = parser.add_subparsers(dest="command")
    assign_commands.register(sub)
    bench = sub.add_parser("bench").add_subparsers(dest="bench_command")
    assign_commands.register_bench(bench)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_analyze_assign(coco, tmp_path, capsys):
    out = tmp_path / "report"
    rc = run_cli(["analyze-assign", str(coco), "--assigners", "maxiou:match_low_quality=false", "adla",
                  "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "GTs with no positive (%)" in printed and "maxiou:match_low_quality=false" in printed
    data = json.loads((out / "assign_analysis.json").read_text())
    assert data["assigners"]["maxiou:match_low_quality=false"]["buckets"]["very_tiny"]["zero_pos_share"] == 1.0


def test_cli_bad_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(AdlaError, match="nope.json"):
        run_cli(["analyze-assign", str(missing)])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AdlaError, match="bad.json"):
        run_cli(["analyze-assign", str(bad)])
    broken = write_coco(tmp_path / "broken.json", [{"id": 1, "image_id": 1, "bbox": "x"}])
    with pytest.raises(AdlaError, match="broken.json.*annotation #0"):
        run_cli(["analyze-assign", str(broken)])


def test_bench_assign_small(tmp_path, capsys):
    rc = run_cli(["bench", "assign", "--gts", "3", "20", "--repeats", "1", "--size", "128", "--device", "cpu",
                  "--json", str(tmp_path / "bench.json")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "maxiou ms" in printed and "ratio" in printed and "VmHWM" in printed
    res = json.loads((tmp_path / "bench.json").read_text())
    assert [r["gts"] for r in res["rows"]] == [3, 20]
    for r in res["rows"]:
        assert r["maxiou_ms"] > 0 and r["adla_ms"] > 0 and r["anchors"] == 3024
        assert r["nwd_ms"] > 0 and r["rfla_ms"] > 0
        assert r["adla_pos"] > 0 and r["nwd_pos"] > 0 and r["rfla_pos"] >= 9 * r["gts"] // 2
