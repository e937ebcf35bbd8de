"""Synthetic scenes: determinism, object sizes and shapes, a valid COCO json."""

from __future__ import annotations

import numpy as np

from adla.data.coco import CocoDetection
from adla.data.synth import make_synth_dataset, synth_image, synth_scene


def test_deterministic_for_a_seed():
    a = synth_image(128, 160, np.random.default_rng(5), num_classes=3)
    b = synth_image(128, 160, np.random.default_rng(5), num_classes=3)
    c = synth_image(128, 160, np.random.default_rng(6), num_classes=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (128, 160, 3) and a[0].dtype == np.uint8


def test_sizes_aspect_ratios_and_no_overlap():
    boxes, labels = [], []
    for seed in range(6):
        _, b, lab = synth_image(256, 256, np.random.default_rng(seed), num_objects=40, num_classes=3)
        assert b.dtype == np.float32 and lab.dtype == np.int64 and len(b) >= 30
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 256).all() and (b[:, 3] <= 256).all()
        iw = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
        ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
        inter = (iw.clip(0) * ih.clip(0))[~np.eye(len(b), dtype=bool)]
        assert (inter == 0).all()
        boxes.append(b)
        labels.append(lab)
    b, lab = np.concatenate(boxes), np.concatenate(labels)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    size = np.sqrt(w * h)
    assert size.min() >= 2 and size.max() <= 32
    assert ((size >= 4) & (size <= 16)).mean() > 0.6  # mostly AI-TOD-like
    ratio = np.minimum(w, h) / np.maximum(w, h)
    assert ratio.min() >= 0.2 and ratio.max() == 1.0
    assert (w > h).any() and (h > w).any()  # both orientations
    assert set(lab.tolist()) == {0, 1, 2}


def test_classes_differ_in_colour():
    img, b, lab = synth_image(256, 256, np.random.default_rng(0), num_objects=60, num_classes=3)
    mean_rgb = {}
    for k in range(3):
        px = [img[int(y1):int(y2), int(x1):int(x2)].reshape(-1, 3) for x1, y1, x2, y2 in b[lab == k]]
        mean_rgb[k] = np.concatenate(px).mean(0)
    assert mean_rgb[0][0] > 150 > mean_rgb[0][2]  # car: red
    assert mean_rgb[1][2] > 150 > mean_rgb[1][0]  # truck: blue
    assert min(mean_rgb[2]) > 150  # boat: white


def test_large_scene_is_fast_and_dense():
    img, b, _ = synth_scene(1024, 1536, seed=3)
    assert img.shape == (1024, 1536, 3) and len(b) > 400
    _, b2, _ = synth_scene(1024, 1536, seed=3)
    assert np.array_equal(b, b2)


def test_dataset_json_loads(tmp_path):
    ann = make_synth_dataset(tmp_path, num_images=3, size=(96, 128), num_classes=4, seed=1)
    ann2 = make_synth_dataset(tmp_path / "again", num_images=3, size=(96, 128), num_classes=4, seed=1)
    assert ann.read_bytes() == ann2.read_bytes()
    assert (tmp_path / "train" / "000000.png").read_bytes() == (tmp_path / "again" / "train" / "000000.png").read_bytes()
    ds = CocoDetection(ann, tmp_path)
    assert ds.class_names == ["car", "truck", "boat", "plane"] and len(ds) == 3 and ds.dropped == {}
    image, target = ds[2]
    assert image.shape == (3, 96, 128) and len(target["boxes"]) > 0
    val = make_synth_dataset(tmp_path, num_images=2, size=(96, 128), num_classes=4, seed=1, split_name="val")
    assert val.name == "val.json"
    assert not np.array_equal(CocoDetection(val, tmp_path)[0][0], ds[0][0])
