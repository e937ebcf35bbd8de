"""Synthetic aerial-like scenes full of tiny objects (numpy only), for tests and the demo.

Objects are 2-32 px (sqrt(w*h); most 4-16 px, like AI-TOD), with aspect ratios (short/long) in
[0.2, 1] and the long side horizontal or vertical at random. About half of them stand in dense rows
(parking lots, moorings), the rest are scattered. Classes differ in colour and shape so that a small
detector learns them in minutes on a CPU: "car" red rectangles, "truck" blue rectangles with a white
cab, "boat" white ellipses; further classes cycle through more colours. Boxes are xyxy pixels on whole
pixels; objects never overlap. Everything is deterministic for a seed.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from adla.io import atomic_path, write_json

CLASS_NAMES = ["car", "truck", "boat", "plane", "bus", "tank", "ship", "van"]
# (RGB, shape) per class; shape "rect", "cab" (rect with a white end), "ellipse"
CLASS_STYLE = [
    ((205, 35, 35), "rect"),
    ((35, 70, 210), "cab"),
    ((240, 240, 235), "ellipse"),
    ((240, 210, 30), "rect"),
    ((30, 200, 210), "ellipse"),
    ((200, 40, 200), "cab"),
    ((20, 20, 20), "ellipse"),
    ((250, 140, 20), "rect"),
]
DENSITY = 3e-4  # default objects per pixel: 20 in 256x256, 4,800 in 4000x4000


def class_names(num_classes: int) -> list[str]:
    return [CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"class{i}" for i in range(num_classes)]


class _SmoothField:
    """Smooth noise in about [-1, 1]: a coarse random grid, bilinearly upsampled one strip at a time."""

    def __init__(self, height: int, width: int, cell: int, rng: np.random.Generator):
        self.cell = cell
        self.grid = rng.uniform(-1, 1, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
        xs = np.arange(width, dtype=np.float32) / cell
        self.x0 = xs.astype(np.int64)
        self.wx = (xs - self.x0)[None, :]

    def rows(self, y_start: int, y_stop: int) -> np.ndarray:
        """Field values [y_stop - y_start, W] float32."""
        ys = np.arange(y_start, y_stop, dtype=np.float32) / self.cell
        y0 = ys.astype(np.int64)
        wy = (ys - y0)[:, None]
        g0 = self.grid[y0][:, self.x0] * (1 - self.wx) + self.grid[y0][:, self.x0 + 1] * self.wx
        g1 = self.grid[y0 + 1][:, self.x0] * (1 - self.wx) + self.grid[y0 + 1][:, self.x0 + 1] * self.wx
        return g0 * (1 - wy) + g1 * wy


def _background(height: int, width: int, rng: np.random.Generator, strip: int = 256) -> np.ndarray:
    """Textured ground [H,W,3] uint8: fields of varying tone, noise, and a few roads.

    Built in strips of rows so that big scenes need no full-size float temporaries.
    """
    img = np.empty((height, width, 3), dtype=np.uint8)
    base = np.array([95, 105, 80], dtype=np.float32) + rng.uniform(-15, 15, size=3).astype(np.float32)
    tint = rng.uniform(10, 30, size=3).astype(np.float32)
    coarse = _SmoothField(height, width, cell=max(16, min(height, width) // 4), rng=rng)
    fine = _SmoothField(height, width, cell=12, rng=rng)
    for y in range(0, height, strip):
        y2 = min(height, y + strip)
        f = (coarse.rows(y, y2) + 0.5 * fine.rows(y, y2))[:, :, None]
        noise = rng.normal(0, 6, size=(y2 - y, width, 3)).astype(np.float32)
        img[y:y2] = np.clip(base + tint * f + noise, 0, 255).astype(np.uint8)
    num_roads = int(rng.integers(1, 3 + (height * width) // 500_000))
    for _ in range(num_roads):
        road = 6 + int(rng.integers(0, 10))
        grey = int(rng.integers(95, 130))
        if rng.random() < 0.5:
            y = int(rng.integers(0, max(1, height - road)))
            img[y:y + road] = np.clip(img[y:y + road].astype(np.int16) // 4 + grey * 3 // 4, 0, 255)
        else:
            x = int(rng.integers(0, max(1, width - road)))
            img[:, x:x + road] = np.clip(img[:, x:x + road].astype(np.int16) // 4 + grey * 3 // 4, 0, 255)
    return img


def _object_size(rng: np.random.Generator) -> tuple[int, int]:
    """(long, short) side in whole pixels: size sqrt(l*s) in [2, 32], mostly 4-16; short/long >= 0.2."""
    u = rng.random()
    s = rng.uniform(4, 16) if u < 0.8 else (rng.uniform(2, 4) if u < 0.9 else rng.uniform(16, 32))
    r = rng.uniform(0.2, 1.0)
    long = max(1, round(s / np.sqrt(r)))
    short = max(1, round(s * np.sqrt(r)))
    short = min(long, max(short, int(np.ceil(0.2 * long))))
    while long * short < 4:  # at least 2 px (sqrt(w*h))
        short += 1
        long = max(long, short)
    while long * short > 32 * 32:
        long -= 1
        short = min(short, long)
    return long, short


def _draw(img: np.ndarray, box: tuple[int, int, int, int], label: int, rng: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    colour, shape = CLASS_STYLE[label % len(CLASS_STYLE)]
    c = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-25, 26, size=3), 0, 255).astype(np.uint8)
    h, w = y2 - y1, x2 - x1
    patch = img[y1:y2, x1:x2]
    if shape == "ellipse" and min(h, w) >= 3:
        yy = (np.arange(h) + 0.5 - h / 2) / (h / 2)
        xx = (np.arange(w) + 0.5 - w / 2) / (w / 2)
        mask = yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.05
        patch[mask] = c
    else:
        patch[:] = c
    if shape == "cab" and max(h, w) >= 4:  # a white end on the long side, at either end
        k = max(1, max(h, w) // 4)
        end = rng.random() < 0.5
        if w >= h:
            (patch[:, w - k:] if end else patch[:, :k])[:] = 235
        else:
            (patch[h - k:] if end else patch[:k])[:] = 235


def synth_image(height: int, width: int, rng: np.random.Generator, num_objects: int | None = None,
                num_classes: int = 3, cluster_fraction: float = 0.5
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: image uint8 [H,W,3] RGB, boxes float32 [G,4] xyxy px, labels int64 [G] 0-based.

    ``num_objects`` defaults to ``DENSITY * H * W``; fewer come out when the scene is too full.
    """
    if num_objects is None:
        num_objects = max(1, round(DENSITY * height * width))
    img = _background(height, width, rng)
    occupied = np.zeros((height, width), dtype=bool)
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[int] = []

    def place(x: int, y: int, w: int, h: int, label: int) -> bool:
        if x < 0 or y < 0 or x + w > width or y + h > height:
            return False
        if occupied[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1].any():
            return False
        occupied[y:y + h, x:x + w] = True
        _draw(img, (x, y, x + w, y + h), label, rng)
        boxes.append((x, y, x + w, y + h))
        labels.append(label)
        return True

    target_clustered = int(num_objects * cluster_fraction)
    attempts = 0
    while len(boxes) < target_clustered and attempts < 4 * num_objects + 10:
        attempts += 1  # a row of same-class, same-size objects with a 1-3 px gap
        label = int(rng.integers(0, num_classes))
        long, short = _object_size(rng)
        vertical_row = rng.random() < 0.5
        w, h = (short, long) if rng.random() < 0.7 else (long, short)
        n = int(rng.integers(3, 13))
        gap = int(rng.integers(1, 4))
        x0, y0 = int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h)))
        for k in range(min(n, target_clustered - len(boxes))):
            dx, dy = (0, k * (h + gap)) if vertical_row else (k * (w + gap), 0)
            if not place(x0 + dx, y0 + dy, w, h, label):
                break
    attempts = 0
    while len(boxes) < num_objects and attempts < 10 * num_objects:
        attempts += 1
        label = int(rng.integers(0, num_classes))
        long, short = _object_size(rng)
        w, h = (long, short) if rng.random() < 0.5 else (short, long)
        place(int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h))), w, h, label)
    return (img, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64))


def synth_scene(height: int, width: int, seed: int = 0, num_objects: int | None = None,
                num_classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A large scene (e.g. 4000x4000) for tiled inference; same outputs as ``synth_image``.

    Memory is about 4x the image's byte size at its peak (the image, an occupancy mask and one float
    field), so 4000x4000 needs under 300 MB.
    """
    return synth_image(height, width, np.random.default_rng(seed), num_objects, num_classes)


def _split_seed(seed: int, split_name: str) -> int:
    return zlib.crc32(f"{seed}:{split_name}".encode())


def make_synth_dataset(out_dir: str | Path, num_images: int = 16, size: tuple[int, int] = (256, 256),
                       num_classes: int = 3, seed: int = 0, split_name: str = "train",
                       num_objects: int | None = None) -> Path:
    """Write ``num_images`` scenes of ``size`` (h, w) as ``out_dir/<split>/NNNNNN.png`` and the COCO json
    ``out_dir/<split>.json`` (file names relative to ``out_dir``); return the json path.

    Each image's generator is seeded by (seed, split, index), so splits differ and a seed reproduces
    them exactly.
    """
    out_dir = Path(out_dir)
    (out_dir / split_name).mkdir(parents=True, exist_ok=True)
    h, w = size
    base = _split_seed(seed, split_name)
    images: list[dict] = []
    annotations: list[dict] = []
    for i in range(num_images):
        rng = np.random.default_rng([base, i])
        img, boxes, labels = synth_image(h, w, rng, num_objects=num_objects, num_classes=num_classes)
        file_name = f"{split_name}/{i:06d}.png"
        with atomic_path(out_dir / file_name) as tmp:
            Image.fromarray(img).save(tmp, format="PNG", compress_level=1)
        images.append({"id": i + 1, "file_name": file_name, "height": h, "width": w})
        for b, lab in zip(boxes.tolist(), labels.tolist()):
            bw, bh = b[2] - b[0], b[3] - b[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": lab + 1,
                                "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})
    categories = [{"id": k + 1, "name": n, "supercategory": "object"} for k, n in enumerate(class_names(num_classes))]
    coco = {"info": {"description": f"adla synthetic tiny objects, seed {seed}, split {split_name}"},
            "images": images, "annotations": annotations, "categories": categories}
    return write_json(out_dir / f"{split_name}.json", coco, indent=None)
