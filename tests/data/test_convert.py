"""Converters: literal boxes on hand-written labels, and counts on the real data in ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data
from PIL import Image

from adla.data.coco import CocoDetection
from adla.data.convert import convert_dataset, format_summary, read_names
from adla.errors import AdlaError


def _image(path: Path, w: int = 100, h: int = 50) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def _bboxes(out_json: Path) -> list[list[float]]:
    return [a["bbox"] for a in json.loads(out_json.read_text())["annotations"]]


def test_yolo_literal_boxes_and_malformed_lines(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.2 0.2\nbad line\n0 0.5 0.5 0.1\n")
    s = convert_dataset("yolo", tmp_path, tmp_path, tmp_path / "out.json", class_names=["car", "bus"])
    assert _bboxes(tmp_path / "out.json") == [[40, 15, 20, 20], [0, 0, 20, 10]]  # second clipped at 0
    assert s["boxes"] == 2 and s["per_class"] == {"car": 1, "bus": 1}
    assert s["num_problems"] == 2 and s["dropped"]["malformed_line"] == 2
    assert s["problems"][0].startswith(f"{tmp_path / 'a.txt'}:3:")
    assert "a.txt:4" in format_summary(s)


def test_yolo_downscale_halves_boxes_and_writes_images(tmp_path):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    s = convert_dataset("yolo", tmp_path / "in", tmp_path / "in", tmp_path / "out.json", downscale=0.5,
                        out_images_dir=tmp_path / "small")
    assert _bboxes(tmp_path / "out.json") == [[20, 7.5, 10, 10]]
    with Image.open(tmp_path / "small" / "a.png") as im:
        assert im.size == (50, 25)
    ds = CocoDetection(tmp_path / "out.json", s["image_dir"])
    assert ds[0][0].shape == (3, 25, 50) and ds.class_names == ["class0"]


def test_dedupe_keeps_one_image_per_source(tmp_path):
    """A Roboflow export holds augmented copies of a source image (``SRC_jpg.rf.HASH.jpg``): one is kept,
    so that no source image sits twice in a split (nor, split by split, in two splits)."""
    for name in ("GE_1_jpg.rf.c3.jpg", "GE_1_jpg.rf.a1.jpg", "GE_1_jpg.rf.b2.jpg", "GE_2_jpg.rf.f0.jpg", "plain.jpg"):
        _image(tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text("0 0.5 0.5 0.2 0.2\n")
    s = convert_dataset("yolo", tmp_path, tmp_path, tmp_path / "o.json", dedupe=".rf.")
    files = sorted(im["file_name"] for im in json.loads((tmp_path / "o.json").read_text())["images"])
    assert files == ["GE_1_jpg.rf.a1.jpg", "GE_2_jpg.rf.f0.jpg", "plain.jpg"]  # the first copy by name
    assert s["images"] == 3 and s["boxes"] == 3 and s["dropped"] == {"image_copies_of_one_source ('.rf.')": 2}
    assert convert_dataset("yolo", tmp_path, tmp_path, tmp_path / "o.json")["images"] == 5  # without: all


def test_yolo_obb_becomes_enclosing_box(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    # a diamond around (50, 25): corners (40,25) (50,15) (60,25) (50,35)
    (tmp_path / "labels" / "a.txt").write_text("1 0.4 0.5 0.5 0.3 0.6 0.5 0.5 0.7\n")
    (tmp_path / "d.yaml").write_text("names:\n  0: plane\n  1: ship\n")
    s = convert_dataset("yolo-obb", tmp_path / "images", tmp_path / "labels", tmp_path / "o.json",
                        names_file=tmp_path / "d.yaml")
    assert _bboxes(tmp_path / "o.json") == [[40, 15, 20, 20]]
    assert s["class_names"] == ["plane", "ship"] and s["per_class"]["ship"] == 1


def test_dota_header_difficult_and_class_names(tmp_path):
    _image(tmp_path / "images" / "P1.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "P1.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.25\n"
        "10 10 20 12 18 22 8 20 ship 1\n"
        "90 40 110 40 110 60 90 60 plane 0\n"  # clipped to the 100x50 image
        "1 2 3 ship\n")
    s = convert_dataset("dota", tmp_path / "images", tmp_path / "labels", tmp_path / "o.json")
    data = json.loads((tmp_path / "o.json").read_text())
    assert _bboxes(tmp_path / "o.json") == [[8, 10, 12, 12], [90, 40, 10, 10]]
    assert [a["difficult"] for a in data["annotations"]] == [1, 0]
    assert data["images"][0]["gsd"] == 0.25
    assert s["class_names"] == ["plane", "ship"] and s["num_problems"] == 1


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(AdlaError, match="image folder not found"):
        convert_dataset("yolo", tmp_path / "none", tmp_path, tmp_path / "o.json")
    with pytest.raises(AdlaError, match="unknown format"):
        convert_dataset("voc", tmp_path, tmp_path, tmp_path / "o.json")
    _image(tmp_path / "a.png")
    with pytest.raises(AdlaError, match=r"no images .* matching 'X\*'"):
        convert_dataset("yolo", tmp_path, tmp_path, tmp_path / "o.json", include="X*")
    with pytest.raises(AdlaError, match="class names file not found"):
        read_names(tmp_path / "missing.names")
    s = convert_dataset("yolo", tmp_path, tmp_path, tmp_path / "o.json")  # no label file: no boxes
    assert s["images"] == 1 and s["boxes"] == 0 and s["dropped"] == {"images_without_label_file": 1}


def test_kit_ais_counts_and_split(tmp_path):
    root = shared_data("kit_ais")
    s = convert_dataset("yolo", root, root, tmp_path / "all.json", names_file=root / "aerial.names")
    assert s["images"] == 45 and s["boxes"] == 2084
    assert (s["per_class"]["car"], s["per_class"]["bus"], s["per_class"]["minibus"]) == (2037, 25, 22)
    assert 22 < s["median_size_px"] < 26
    train = convert_dataset("yolo", root, root, tmp_path / "train.json", names_file=root / "aerial.names",
                            include="MOS*")
    val = convert_dataset("yolo", root, root, tmp_path / "val.json", names_file=root / "aerial.names",
                          include="MunichStreet02-*")
    assert (train["images"], val["images"]) == (25, 20)
    assert train["boxes"] + val["boxes"] == 2084
    ds = CocoDetection(tmp_path / "val.json", root)
    assert ds.num_boxes == val["boxes"] and ds[0][0].shape == (3, 377, 1284)


def test_dota_devkit_counts(tmp_path):
    root = shared_data("dota_devkit")
    s = convert_dataset("dota", root / "images", root / "labelTxt", tmp_path / "o.json")
    assert s["images"] == 2 and s["boxes"] == 600
    assert s["per_class"] == {"harbor": 5, "large-vehicle": 50, "ship": 531, "small-vehicle": 14}


def test_dota8_counts(tmp_path):
    root = shared_data("dota8")
    total = 0
    for split in ("train", "val"):
        s = convert_dataset("yolo-obb", root / "images" / split, root / "labels" / split, tmp_path / f"{split}.json",
                            names_file=root / "dota8.yaml")
        assert s["images"] == 4 and len(s["class_names"]) == 15 and s["num_problems"] == 0
        total += s["boxes"]
    assert total == 133


def test_airbus_csv_only_present_images(tmp_path):
    root = shared_data("airbus_aircraft")
    s = convert_dataset("airbus-csv", root, root / "annotations.csv", tmp_path / "o.json")
    assert s["images"] == 12 and s["boxes"] == 417
    assert set(s["class_names"]) == {"Airplane", "Truncated_airplane"}
    files = [im["file_name"] for im in json.loads((tmp_path / "o.json").read_text())["images"]]
    assert sum(f.startswith("train/") for f in files) == 4 and sum(f.startswith("valid/") for f in files) == 8
    assert CocoDetection(tmp_path / "o.json", root).num_boxes == 417


def _airbus(tmp_path: Path, geometry: str) -> Path:
    _image(tmp_path / "img" / "a.jpg")
    csv_file = tmp_path / "annotations.csv"
    csv_file.write_text(f'id,image_id,geometry,class\n1,a.jpg,"{geometry}",Airplane\n')
    return csv_file


def test_airbus_polygon_over_128_kb_converts(tmp_path):
    """Issue 19: the csv module's 128 KB field limit gave a _csv.Error traceback; a polygon of 10,000
    points (about 200 KB) is still a polygon: its enclosing box."""
    import csv

    pts = [(10 + 20 * (i % 2), 5 + 10 * (i % 3) / 2) for i in range(10_000)]
    geometry = "[" + ", ".join(f"({x:.6f}, {y:.6f})" for x, y in pts) + "]"
    assert len(geometry) > 128 * 1024
    s = convert_dataset("airbus-csv", tmp_path / "img", _airbus(tmp_path, geometry), tmp_path / "o.json")
    assert s["boxes"] == 1 and _bboxes(tmp_path / "o.json") == [[10, 5, 20, 10]]
    assert csv.field_size_limit() == 128 * 1024  # the limit was raised for this reader only


def test_airbus_field_over_the_limit_is_one_line(tmp_path, monkeypatch):
    from adla.data import convert

    monkeypatch.setattr(convert, "CSV_FIELD_LIMIT", 2**20)
    csv_file = _airbus(tmp_path, "[" + "(1, 2), " * 200_000 + "]")
    with pytest.raises(AdlaError, match="line 2: not a readable CSV row") as err:
        convert_dataset("airbus-csv", tmp_path / "img", csv_file, tmp_path / "o.json")
    assert str(csv_file) in str(err.value) and "\n" not in str(err.value)
