"""COCO-json detection dataset (as AI-TOD ships it) and batch collation.

Boxes leave the dataset as xyxy pixels, labels as contiguous 0-based indices (``cat_ids`` maps them
back to COCO category ids). Bad input is either an ``AdlaError`` naming the file and the problem, or a
counted drop reported once at construction (``dataset.dropped``).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from adla.anchors import DEFAULT_MAX_STRIDE
from adla.data.augment import AugmentOptions, augment
from adla.data.records import check_coco_records
from adla.errors import AdlaError
from adla.io import read_json

REQUIRED_KEYS = ("images", "annotations", "categories")


def load_coco_json(path: str | Path) -> dict:
    """The parsed annotation file; AdlaError when missing, not JSON, or lacking a COCO detection key."""
    path = Path(path)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise AdlaError("not a COCO detection file: the top level is not a mapping", path)
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), list):
            raise AdlaError(f"not a COCO detection file: no {key!r} list", path)
        bad = next((i for i, rec in enumerate(data[key]) if not isinstance(rec, dict)), None)
        if bad is not None:
            raise AdlaError(f"{key}[{bad}] is not a mapping: {data[key][bad]!r:.60}", path)
    return data


def read_image(path: str | Path) -> np.ndarray:
    """An image as uint8-range float32 [H,W,3] RGB. Greyscale is repeated; 16-bit is scaled by 1/257."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                arr = np.asarray(img, dtype=np.float32)
                if img.mode != "F" and float(arr.max(initial=0)) > 255:
                    arr = arr / 257.0  # 16-bit range onto 0-255
                arr = np.repeat(np.clip(arr, 0, 255)[:, :, None], 3, axis=2)
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    except FileNotFoundError as exc:
        raise AdlaError("image file not found", path) from exc
    except Exception as exc:
        raise AdlaError(f"cannot read image ({exc.__class__.__name__}: {exc})", path) from exc
    return arr


class CocoDetection(torch.utils.data.Dataset):
    """COCO-json detection dataset.

    ``dataset[i]`` -> (image float32 [3,H,W] RGB 0-255, target) with target = {"boxes": float32 [G,4]
    xyxy px, "labels": int64 [G] contiguous 0-based, "image_id": int, "size": (H, W), "file_name": str}.

    A file that the scorer would refuse (``check_coco_records``: a bbox that is not 4 finite numbers, an
    unknown image or category, ...) is an AdlaError here, before any training. Annotations are clipped
    to the image. Dropped and counted in ``dropped`` (one warning at construction): "zero_size" (w or
    h <= 0), "outside_image" (nothing left after clipping), "iscrowd" (kept out of training). With ``train=True`` every sample is augmented as ``augment`` says (by default random
    horizontal and vertical flips with probabilities ``hflip``/``vflip``; see ``adla.data.augment``),
    with random draws seeded by (``seed``, epoch, index): the same sample looks the same in whichever
    DataLoader worker loads it, so a resumed run sees exactly the images of an uninterrupted one.
    Call ``set_epoch`` before each epoch.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, *, train: bool = False,
                 hflip: float = 0.5, vflip: float = 0.5, seed: int = 0, augment: AugmentOptions | None = None):
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.train = train
        self.augment = augment or AugmentOptions(hflip=hflip, vflip=vflip)
        self.seed = seed
        self.epoch = 0
        if not self.image_dir.is_dir():
            raise AdlaError("image folder not found", self.image_dir)
        data = load_coco_json(self.ann_file)
        check_coco_records(data, self.ann_file)  # the scorer's rule: refused now, not after training
        cat_index = self._read_categories(data)
        self._read_images(data)
        self._read_boxes(data, cat_index)

    def _read_categories(self, data: dict) -> dict[int, int]:
        """``cat_ids`` and ``class_names`` sorted by id; returns category id -> 0-based label."""
        try:
            cats = sorted(data["categories"], key=lambda c: c.get("id", 0))
            self.cat_ids: list[int] = [int(c["id"]) for c in cats]
            self.class_names: list[str] = [str(c["name"]) for c in cats]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise AdlaError(f"a category lacks an integer 'id' or a 'name' ({exc})", self.ann_file) from exc
        if len(set(self.cat_ids)) != len(self.cat_ids):
            raise AdlaError("duplicate category ids", self.ann_file)
        return {cid: i for i, cid in enumerate(self.cat_ids)}

    def _read_images(self, data: dict) -> None:
        """``images`` and ``image_ids``; every listed image file must exist."""
        self.images: list[dict[str, Any]] = []
        for img in data["images"]:
            try:
                rec = {"id": int(img["id"]), "file_name": str(img["file_name"]),
                       "height": int(img["height"]), "width": int(img["width"])}
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise AdlaError(f"image entry {img!r:.120} lacks id/file_name/height/width", self.ann_file) from exc
            self.images.append(rec)
        self.image_ids: list[int] = [r["id"] for r in self.images]
        if len(set(self.image_ids)) != len(self.image_ids):
            raise AdlaError("duplicate image ids", self.ann_file)
        missing = [str(self.image_dir / r["file_name"]) for r in self.images
                   if not (self.image_dir / r["file_name"]).is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise AdlaError(f"{len(missing)} image file(s) listed in {self.ann_file} are missing: "
                            f"{', '.join(missing[:5])}{more}", self.image_dir)

    def _read_boxes(self, data: dict, cat_index: dict[int, int]) -> None:
        """Per image xyxy boxes clipped to the image and labels; unusable annotations are counted in
        ``dropped`` (and warned about)."""
        dropped: Counter[str] = Counter()
        by_id = {r["id"]: r for r in self.images}
        boxes: dict[int, list[list[float]]] = {i: [] for i in self.image_ids}
        labels: dict[int, list[int]] = {i: [] for i in self.image_ids}
        for ann in data["annotations"]:
            reason = self._check(ann, by_id, cat_index)
            if reason:
                dropped[reason] += 1
                continue
            img = by_id[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = min(max(x, 0.0), img["width"]), min(max(y, 0.0), img["height"])
            x2, y2 = min(max(x + w, 0.0), img["width"]), min(max(y + h, 0.0), img["height"])
            if x2 <= x1 or y2 <= y1:
                dropped["outside_image"] += 1
                continue
            boxes[img["id"]].append([x1, y1, x2, y2])
            labels[img["id"]].append(cat_index[ann["category_id"]])
        self._boxes = [np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4) for i in self.image_ids]
        self._labels = [np.asarray(labels[i], dtype=np.int64) for i in self.image_ids]
        self.dropped: dict[str, int] = dict(dropped)
        if self.dropped:
            parts = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items()))
            warnings.warn(f"{self.ann_file}: dropped annotations: {parts}", stacklevel=3)

    @staticmethod
    def _check(ann: dict, images: dict[int, dict], cat_index: dict[int, int]) -> str | None:
        """The drop reason of an annotation, or None when usable (``check_coco_records`` has refused the
        file already when a record is malformed: a bad bbox, an unknown image or category)."""
        if ann.get("iscrowd", 0):
            return "iscrowd"
        if ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0:
            return "zero_size"
        return None

    @property
    def num_boxes(self) -> int:
        return int(sum(len(b) for b in self._boxes))

    def __len__(self) -> int:
        return len(self.images)

    def subset_file(self, max_images: int, path: str | Path) -> Path:
        """A COCO json of at most ``max_images`` of this set's images (evenly spaced), for a quick score.

        The annotation file itself when it has no more images than that; otherwise written to ``path``.
        """
        if len(self.images) <= max_images:
            return self.ann_file
        from adla.io import write_json

        data = load_coco_json(self.ann_file)
        step = len(self.images) / max_images
        keep = {self.images[int(i * step)]["id"] for i in range(max_images)}
        sub = {**data, "images": [im for im in data["images"] if im.get("id") in keep],
               "annotations": [a for a in data["annotations"] if a.get("image_id") in keep]}
        write_json(path, sub)
        return Path(path)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose random views ``__getitem__`` draws (training only)."""
        self.epoch = epoch

    def boxes_of(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of image ``index`` without loading it: boxes [G,4] xyxy px, labels [G]."""
        return self._boxes[index].copy(), self._labels[index].copy()

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        # ``(epoch, index)`` from a sampler that tags its epoch (persistent loader workers), else an index
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rec = self.images[index]
        path = self.image_dir / rec["file_name"]
        arr = read_image(path)
        h, w = arr.shape[:2]
        if (h, w) != (rec["height"], rec["width"]):
            raise AdlaError(f"image is {w}x{h} but {self.ann_file} says {rec['width']}x{rec['height']}", path)
        image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # [3,H,W]
        boxes = torch.from_numpy(self._boxes[index].copy())  # [G,4] xyxy
        labels = torch.from_numpy(self._labels[index].copy())
        if self.train:
            rng = np.random.default_rng([self.seed % 2**32, epoch, index])
            image, boxes, labels = augment(image, boxes, labels, self.augment, rng)
            h, w = image.shape[-2:]
        target = {"boxes": boxes.reshape(-1, 4), "labels": labels, "image_id": rec["id"], "size": (h, w),
                  "file_name": rec["file_name"]}
        return image, target


def collate(batch: list[tuple[torch.Tensor, dict]], size_divisor: int = DEFAULT_MAX_STRIDE
            ) -> tuple[torch.Tensor, list[dict]]:
    """Stack images zero-padded at the bottom/right to a common multiple of ``size_divisor`` (the model's
    largest stride: ``AnchorSpec.max_stride``; by default the default anchors').

    Returns (images [B,3,Hmax,Wmax] float32, targets list); boxes stay in original pixel coordinates.
    """
    images = [b[0] for b in batch]
    hmax = max(im.shape[1] for im in images)
    wmax = max(im.shape[2] for im in images)
    hmax = int(math.ceil(hmax / size_divisor) * size_divisor)
    wmax = int(math.ceil(wmax / size_divisor) * size_divisor)
    out = torch.stack([F.pad(im, (0, wmax - im.shape[2], 0, hmax - im.shape[1])) for im in images])
    return out, [b[1] for b in batch]
