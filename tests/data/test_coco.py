"""CocoDetection and collate: shapes, flips, padding, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adla.data.coco import CocoDetection, collate
from adla.errors import AdlaError


def write_coco(root: Path, anns: list[dict], sizes=((40, 60),), mode: str = "RGB") -> Path:
    """Images img0.png.. of (h, w) ``sizes`` and a COCO json with categories 7 "car", 3 "boat"."""
    images = []
    for i, (h, w) in enumerate(sizes):
        if mode == "I;16":
            arr = (np.arange(h * w, dtype=np.uint16).reshape(h, w) * 10).astype(np.uint16)
            Image.fromarray(arr).save(root / f"img{i}.png")
        elif mode == "L":
            Image.fromarray(np.full((h, w), 77, np.uint8)).save(root / f"img{i}.png")
        else:
            arr = np.zeros((h, w, 3), np.uint8)
            arr[:, : w // 2] = 200  # left half bright: flips are visible
            Image.fromarray(arr).save(root / f"img{i}.png")
        images.append({"id": 10 + i, "file_name": f"img{i}.png", "height": h, "width": w})
    for k, a in enumerate(anns):
        a.setdefault("id", k + 1)
        a.setdefault("image_id", 10)
        a.setdefault("category_id", 7)
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "boat"}]}
    path = root / "ann.json"
    path.write_text(json.dumps(coco))
    return path


def test_item_shapes_dtypes_and_category_mapping(tmp_path):
    ann = write_coco(tmp_path, [{"bbox": [10, 5, 4, 6]}, {"bbox": [0, 0, 2, 2], "category_id": 3}])
    ds = CocoDetection(ann, tmp_path)
    assert ds.class_names == ["boat", "car"] and ds.cat_ids == [3, 7]
    assert ds.image_ids == [10] and ds.dropped == {} and len(ds) == 1
    image, target = ds[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.float32
    assert float(image.max()) == 200.0
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[10, 5, 14, 11], [0, 0, 2, 2]]
    assert target["labels"].tolist() == [1, 0]
    assert target["image_id"] == 10 and target["size"] == (40, 60) and target["file_name"] == "img0.png"


def test_flips_move_boxes(tmp_path):
    ann = write_coco(tmp_path, [{"bbox": [10, 5, 4, 6]}])
    ds = CocoDetection(ann, tmp_path, train=True, hflip=1.0, vflip=0.0)
    image, target = ds[0]
    assert target["boxes"].tolist() == [[46, 5, 50, 11]]  # x -> 60 - x
    assert float(image[0, 0, -1]) == 200.0 and float(image[0, 0, 0]) == 0.0
    ds = CocoDetection(ann, tmp_path, train=True, hflip=0.0, vflip=1.0)
    assert ds[0][1]["boxes"].tolist() == [[10, 29, 14, 35]]  # y -> 40 - y
    ds = CocoDetection(ann, tmp_path, train=False, hflip=1.0, vflip=1.0)
    assert ds[0][1]["boxes"].tolist() == [[10, 5, 14, 11]]


def test_views_depend_on_seed_epoch_and_index_only(tmp_path):
    ann = write_coco(tmp_path, [{"bbox": [10, 5, 4, 6]}])
    ds = CocoDetection(ann, tmp_path, train=True, seed=3)
    seen = []
    for epoch in range(20):
        ds.set_epoch(epoch)
        torch.manual_seed(epoch)  # the global RNG plays no part
        first = ds[0][1]["boxes"][0, 0].item()
        assert ds[0][1]["boxes"][0, 0].item() == first
        seen.append(first)
    assert set(seen) == {10.0, 46.0}
    again = CocoDetection(ann, tmp_path, train=True, seed=3)
    again.set_epoch(7)
    assert again[0][1]["boxes"][0, 0].item() == seen[7]


def test_collate_pads_to_multiple_of_32(tmp_path):
    ann = write_coco(tmp_path, [{"bbox": [1, 1, 4, 4]}], sizes=((40, 60), (70, 33)))
    ds = CocoDetection(ann, tmp_path)
    images, targets = collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 96, 64)
    assert float(images[0, :, 40:].abs().sum()) == 0.0 and float(images[0, :, :, 60:].abs().sum()) == 0.0
    assert [t["size"] for t in targets] == [(40, 60), (70, 33)]
    assert targets[1]["boxes"].shape == (0, 4)
    images, _ = collate([ds[0]], size_divisor=8)
    assert images.shape == (1, 3, 40, 64)


def test_bad_boxes_are_clipped_or_dropped_and_counted(tmp_path):
    anns = [{"bbox": [50, 30, 20, 20]},  # clipped to [50,30,60,40]
            {"bbox": [5, 5, 0, 3]},  # zero size
            {"bbox": [5, 5, -2, 3]},  # negative size
            {"bbox": [70, 5, 3, 3]},  # wholly outside
            {"bbox": [5, 5, 3, 3], "iscrowd": 1}]
    ann = write_coco(tmp_path, anns)
    with pytest.warns(UserWarning, match="dropped annotations"):
        ds = CocoDetection(ann, tmp_path)
    assert ds.dropped == {"zero_size": 2, "outside_image": 1, "iscrowd": 1}
    assert ds[0][1]["boxes"].tolist() == [[50, 30, 60, 40]]


@pytest.mark.parametrize("bad,message", [({"category_id": 99}, "category_id 99 is not a category"),
                                         ({"image_id": 12345}, "image_id 12345 is not an image"),
                                         ({"bbox": [5, 5, "x", 3]}, "bbox must be 4 finite numbers")])
def test_records_the_scorer_refuses_are_refused_by_the_loader(tmp_path, bad, message):
    """One rule (adla.data.records): what evaluation would reject stops the loader, not only a warning."""
    ann = write_coco(tmp_path, [{"bbox": [5, 5, 3, 3]}, {"bbox": [5, 5, 3, 3], **bad}])
    with pytest.raises(AdlaError, match=message) as err:
        CocoDetection(ann, tmp_path)
    assert str(ann) in str(err.value) and "annotations[1]" in str(err.value)


def test_missing_json_bad_json_and_missing_keys(tmp_path):
    with pytest.raises(AdlaError, match="annotation file not found") as err:
        CocoDetection(tmp_path / "nope.json", tmp_path)
    assert "nope.json" in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AdlaError, match="not valid JSON") as err:
        CocoDetection(bad, tmp_path)
    assert "bad.json" in str(err.value)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(AdlaError, match="no 'categories' list"):
        CocoDetection(bad, tmp_path)


def test_missing_image_is_named_at_construction(tmp_path):
    ann = write_coco(tmp_path, [], sizes=((40, 60), (40, 60)))
    (tmp_path / "img1.png").unlink()
    with pytest.raises(AdlaError, match="missing") as err:
        CocoDetection(ann, tmp_path)
    assert str(tmp_path / "img1.png") in str(err.value)


def test_corrupt_image_is_named_at_load(tmp_path):
    ann = write_coco(tmp_path, [])
    (tmp_path / "img0.png").write_bytes(b"\x89PNG garbage bytes, not an image")
    ds = CocoDetection(ann, tmp_path)
    with pytest.raises(AdlaError, match="cannot read image") as err:
        ds[0]
    assert "img0.png" in str(err.value)


def test_size_mismatch_with_json_is_an_error(tmp_path):
    ann = write_coco(tmp_path, [])
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 61
    ann.write_text(json.dumps(data))
    with pytest.raises(AdlaError, match="60x40 but"):
        CocoDetection(ann, tmp_path)[0]


@pytest.mark.parametrize("mode,expected_max", [("L", 77.0), ("I;16", (40 * 60 - 1) * 10 / 257)])
def test_greyscale_and_16bit_images_become_rgb(tmp_path, mode, expected_max):
    ann = write_coco(tmp_path, [], mode=mode)
    image, _ = CocoDetection(ann, tmp_path)[0]
    assert image.shape == (3, 40, 60)
    assert torch.equal(image[0], image[2])
    assert float(image.max()) == pytest.approx(expected_max, rel=1e-5)
