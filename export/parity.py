"""onnxruntime-vs-PyTorch parity: raw outputs within a tolerance and the same detections after decode+NMS.

Also the image sources the checks (and INT8 calibration) use: random pixels and real tiles cut from
image files, cropped or zero-padded to the model's input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from adla.anchors import generate_anchors
from adla.errors import AdlaError
from adla.postprocess import PostprocessConfig, postprocess
from adla.tables import format_table

RAW_ATOL = 1e-4  # fp32 raw outputs, absolute
SCORE_ATOL = 1e-4
MATCH_IOU = 0.999
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass
class ParityResult:
    """One input set: raw-output differences (raw variant) and whether detections agree."""

    name: str
    batch: int
    max_abs_cls: float | None  # None for the nms variant (no raw outputs)
    max_abs_box: float | None
    dets_torch: int
    dets_onnx: int
    dets_match: bool
    detail: str = ""

    @property
    def ok(self) -> bool:
        raw_ok = all(v is None or v <= RAW_ATOL for v in (self.max_abs_cls, self.max_abs_box))
        return raw_ok and self.dets_match


def random_images(batch: int, input_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """[B,3,H,W] float32 uniform pixels in 0-255 from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *input_size, generator=gen) * 255


def image_files(folder: str | Path) -> list[Path]:
    """Sorted image files of a folder (jpg, png, tif, bmp); AdlaError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdlaError("image folder not found", folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise AdlaError(f"no images ({', '.join(IMAGE_EXTS)}) in the folder", folder)
    return files


def load_tile(path: str | Path, input_size: tuple[int, int], offset: tuple[int, int] | None = None) -> torch.Tensor:
    """A [3,H,W] float32 RGB 0-255 tile of an image file: a crop at ``offset`` (y, x) or the centre,
    zero-padded at the bottom/right where the image is smaller than the input size."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise AdlaError(f"cannot read image ({exc.__class__.__name__}: {exc})", path) from exc
    h, w = input_size
    ih, iw = arr.shape[:2]
    y, x = offset if offset is not None else (max(0, (ih - h) // 2), max(0, (iw - w) // 2))
    crop = arr[y : y + h, x : x + w]
    out = torch.zeros(3, h, w)
    out[:, : crop.shape[0], : crop.shape[1]] = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float()
    return out


def load_tiles(files: list[Path], input_size: tuple[int, int], limit: int | None = None) -> torch.Tensor:
    """[B,3,H,W] centre tiles of the first ``limit`` files."""
    files = files[:limit] if limit else files
    return torch.stack([load_tile(f, input_size) for f in files])


def detections_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, score_atol: float = SCORE_ATOL,
                     min_iou: float = MATCH_IOU, box_atol: float = 0.01) -> tuple[bool, str]:
    """Whether two detection sets ({"boxes" [K,4] xyxy, "scores" [K], "labels" [K]}) are the same up to
    order: equal counts and a one-to-one pairing with equal labels, scores within ``score_atol`` and
    IoU >= ``min_iou`` (or every corner within ``box_atol`` px, for boxes of zero area). Returns (equal,
    a reason when not)."""
    ka, kb = len(a["scores"]), len(b["scores"])
    if ka != kb:
        return False, f"{ka} vs {kb} detections"
    if ka == 0:
        return True, ""
    iou = box_iou(a["boxes"].float(), b["boxes"].float())  # [Ka,Kb]
    # or the same corners within box_atol px: a box clipped to zero width at the image edge has IoU 0
    # even with itself
    near = torch.cdist(a["boxes"].float(), b["boxes"].float(), p=float("inf")) <= box_atol
    ok = (a["labels"].view(-1, 1) == b["labels"].view(1, -1)) & ((iou >= min_iou) | near)
    ok &= (a["scores"].float().view(-1, 1) - b["scores"].float().view(1, -1)).abs() <= score_atol
    used = torch.zeros(kb, dtype=torch.bool)
    for i in torch.argsort(a["scores"], descending=True).tolist():
        cand = (ok[i] & ~used).nonzero().squeeze(1)
        if cand.numel() == 0:
            return False, f"detection {a['boxes'][i].tolist()} label {int(a['labels'][i])} has no counterpart"
        used[cand[iou[i, cand].argmax()]] = True
    return True, ""


def _all_equal(xs: list[dict], ys: list[dict]) -> tuple[bool, str]:
    for i, (x, y) in enumerate(zip(xs, ys)):
        same, why = detections_equal(x, y)
        if not same:
            return False, f"image {i}: {why}"
    return True, ""


def run_parity(model: torch.nn.Module, ckpt: dict, onnx_path: str | Path, images: torch.Tensor, variant: str,
               name: str) -> ParityResult:
    """Compare onnxruntime (CPU) on ``onnx_path`` with the PyTorch detector on ``images`` [B,3,H,W].

    raw: max |difference| of cls_logits and box_deltas, and detections after ``adla.postprocess``.
    nms: the graph's padded outputs against ``adla.postprocess`` on the PyTorch outputs.
    """
    from .adapters import unpad_detections
    from .session import make_session

    cfg = ckpt["run_config"]
    pp: PostprocessConfig = cfg.eval
    h, w = images.shape[-2:]
    anchors = generate_anchors(cfg.model.anchors, h, w)
    sizes = [(h, w)] * images.shape[0]
    with torch.no_grad():
        cls_t, box_t = model(images)
    dets_t = postprocess(anchors, cls_t, box_t, sizes, pp)
    sess = make_session(onnx_path, device="cpu")
    outs = sess.run(None, {"images": images.numpy()})
    d_cls: float | None = None  # the nms variant has no raw outputs to compare
    d_box: float | None = None
    if variant == "raw":
        cls_o, box_o = (torch.from_numpy(o) for o in outs)
        d_cls = float((cls_o - cls_t).abs().max())
        d_box = float((box_o - box_t).abs().max())
        dets_o = postprocess(anchors, cls_o, box_o, sizes, pp)
    else:
        dets_o = unpad_detections(*outs)
    same, why = _all_equal(dets_t, dets_o)
    return ParityResult(name, images.shape[0], d_cls, d_box, sum(len(d["scores"]) for d in dets_t),
                        sum(len(d["scores"]) for d in dets_o), same, why)


def format_parity(results: list[ParityResult]) -> str:
    """A plain aligned table of parity results."""
    rows = [("inputs", "batch", "max|d cls_logits|", "max|d box_deltas|", "dets torch", "dets onnx", "same dets")]
    for r in results:
        rows.append((r.name, str(r.batch), "-" if r.max_abs_cls is None else f"{r.max_abs_cls:.2e}",
                     "-" if r.max_abs_box is None else f"{r.max_abs_box:.2e}", str(r.dets_torch),
                     str(r.dets_onnx), "yes" if r.dets_match else f"NO ({r.detail})"))
    return format_table(rows)
