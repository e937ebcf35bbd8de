"""Checks of a whole data set before training starts, so that a bad file stops a run in its first
seconds rather than when an epoch reaches it."""

from __future__ import annotations

from PIL import Image

from adla.data.coco import CocoDetection
from adla.errors import AdlaError


def check_image_headers(dataset: CocoDetection) -> None:
    """Open every image's header (no pixel decoding) and compare its size with the annotation file.

    AdlaError naming the image when it is not a readable image or its size differs from the json's.
    About 0.1 ms an image: AI-TOD's 11,000 training images take about a second.
    """
    for rec in dataset.images:
        path = dataset.image_dir / rec["file_name"]
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Exception as exc:  # any PIL failure means the same to the user
            raise AdlaError(f"cannot read image ({exc.__class__.__name__}: {exc})", path) from exc
        if (h, w) != (rec["height"], rec["width"]):
            raise AdlaError(f"image is {w}x{h} but {dataset.ann_file} says {rec['width']}x{rec['height']}", path)


def check_has_boxes(dataset: CocoDetection) -> None:
    """AdlaError when no image of the training set keeps a box: training would learn only background."""
    if dataset.num_boxes == 0:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(dataset.dropped.items()))
        why = f" (all annotations dropped: {dropped})" if dropped else ""
        raise AdlaError(f"the training set has no boxes in its {len(dataset)} images{why}; nothing to learn",
                        dataset.ann_file)
