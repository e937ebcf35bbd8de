"""How many positives each assigner gives GTs of each AI-TOD size, from a COCO json alone.

No image is read: the anchors of each image follow from its width and height (padded to the size
divisor, as the data loader pads), the GTs from its annotations. The assigners run without predictions
at progress 0, so ADLA here shows its adaptive thresholds at the start of training; its dynamic IoU
needs the regressed boxes of a model in training (the training log reports those figures).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from adla.anchors import AnchorSpec, generate_anchors
from adla.data.coco import load_coco_json
from adla.errors import AdlaError
from adla.io import atomic_path, write_json
from adla.metrics import SIZE_BUCKETS
from adla.tables import format_table
from adla.train.assigners import ASSIGNERS, build_assigner
from adla.train.loss import bucket_of

DEFAULT_ASSIGNERS = ("maxiou", "adla", "atss", "nwd", "rfla")
BUCKETS = [name for name, _, _ in SIZE_BUCKETS]


def parse_assigner_spec(text: str) -> tuple[str, str, dict]:
    """``"name"`` or ``"name:key=value,key=value"`` (values in YAML syntax) -> (label, name, params)."""
    name, _, rest = text.partition(":")
    if name not in ASSIGNERS:
        raise AdlaError(f"unknown assigner {name!r} in {text!r}; known: {sorted(ASSIGNERS)}")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise AdlaError(f"bad assigner parameter {item!r} in {text!r}: expected key=value")
        params[key.strip()] = yaml.safe_load(value)
    build_assigner(name, params)  # fail now, naming the parameter, rather than after the first image
    return text, name, params


def _image_gts(data: dict, ann_file: Path) -> dict[int, list[list[float]]]:
    """xyxy boxes per image id: iscrowd and zero-size boxes skipped."""
    per_image: dict[int, list[list[float]]] = {}
    for i, ann in enumerate(data["annotations"]):
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            image_id = ann["image_id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise AdlaError(f"annotation #{i}: no valid image_id / bbox [x,y,w,h] ({exc})", ann_file) from exc
        if ann.get("iscrowd", 0) or not (w > 0 and h > 0) or not all(map(math.isfinite, (x, y, w, h))):
            continue
        per_image.setdefault(image_id, []).append([x, y, x + w, y + h])
    return per_image


def _padded(n: int, divisor: int) -> int:
    return int(math.ceil(n / divisor) * divisor)


def _count_image(assigners: dict, anchors: torch.Tensor, levels: list[int], gt: torch.Tensor, sums: dict,
                 gts_per_bucket: list[int]) -> None:
    """Add one image's GTs per bucket, and per assigner its positives and GTs without one per bucket."""
    labels = torch.zeros(len(gt), dtype=torch.long)
    bucket = bucket_of(gt)
    for b in bucket.tolist():
        gts_per_bucket[b] += 1
    for label, assigner in assigners.items():
        result = assigner.assign(anchors, gt, labels, num_level_anchors=levels)
        counts = result.positives_per_gt(len(gt))
        pos = torch.zeros(len(BUCKETS), dtype=torch.long).index_add_(0, bucket, counts)
        zero = torch.zeros(len(BUCKETS), dtype=torch.long).index_add_(0, bucket, (counts == 0).long())
        for k, v in (("positives", pos), ("zero_pos", zero)):
            sums[label][k] = [a + b for a, b in zip(sums[label][k], v.tolist())]


def analyze_assignment(
    ann_file: str | Path,
    assigner_specs: dict[str, tuple[str, dict]] | None = None,
    anchor_spec: AnchorSpec | None = None,
    max_images: int | None = None,
    size_divisor: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Positives per GT and the share of GTs with no positive, per AI-TOD size bucket, per assigner.

    ``assigner_specs``: {label: (name in ``ASSIGNERS``, params)}; default maxiou, adla, atss, nwd, rfla
    with their defaults; ``anchor_spec``: default ``AnchorSpec()`` (the paper's sub-size anchors);
    ``size_divisor``: images are padded to its multiples, default the spec's largest stride. Sizes are
    sqrt(w*h): very tiny < 8 px, tiny 8-16, small 16-32, medium >= 32. Every
    assigner runs with ``pred_boxes=None`` and ``progress=0`` (see the module docstring).
    Returns a JSON-ready dict (means are None for an empty bucket).
    """
    ann_file = Path(ann_file)
    anchor_spec = anchor_spec or AnchorSpec()
    size_divisor = anchor_spec.max_stride if size_divisor is None else size_divisor
    data = load_coco_json(ann_file)
    specs = assigner_specs or {name: (name, {}) for name in DEFAULT_ASSIGNERS}
    assigners = {label: build_assigner(name, params) for label, (name, params) in specs.items()}
    gts_of = _image_gts(data, ann_file)
    images = data["images"][: max_images if max_images is not None else None]
    sums = {label: {k: [0] * len(BUCKETS) for k in ("positives", "zero_pos")} for label in specs}
    gts_per_bucket = [0] * len(BUCKETS)
    anchor_cache: dict[tuple[int, int], tuple[torch.Tensor, list[int]]] = {}
    for n, img in enumerate(tqdm(images, desc="assigning", unit="img", disable=not show_progress)):
        try:
            height, width, image_id = int(img["height"]), int(img["width"]), img["id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise AdlaError(f"image #{n} has no valid id / width / height ({exc})", ann_file) from exc
        boxes = gts_of.get(image_id)
        if not boxes:
            continue
        size = (_padded(height, size_divisor), _padded(width, size_divisor))
        if size not in anchor_cache:
            anchor_cache[size] = (generate_anchors(anchor_spec, *size), anchor_spec.level_counts(*size))
        _count_image(assigners, *anchor_cache[size], torch.tensor(boxes, dtype=torch.float32), sums,
                     gts_per_bucket)
    out: dict[str, Any] = {
        "ann_file": str(ann_file),
        "num_images": len(images),
        "num_gts": sum(gts_per_bucket),
        "gts_per_bucket": dict(zip(BUCKETS, gts_per_bucket)),
        "anchor_spec": anchor_spec.to_dict(),
        "size_divisor": size_divisor,
        "setting": "pred_boxes=None, progress=0 (ADLA: adaptive thresholds, no dynamic IoU yet)",
        "assigners": {},
    }
    for label, (name, params) in specs.items():
        pos, zero = sums[label]["positives"], sums[label]["zero_pos"]
        rows = {}
        for b, bucket_name in enumerate(BUCKETS):
            rows[bucket_name] = _row(gts_per_bucket[b], pos[b], zero[b])
        rows["all"] = _row(sum(gts_per_bucket), sum(pos), sum(zero))
        out["assigners"][label] = {"name": name, "params": params, "buckets": rows}
    return out


def _row(gts: int, positives: int, zero: int) -> dict:
    return {
        "gts": gts,
        "positives": positives,
        "mean_pos": positives / gts if gts else None,
        "zero_pos_share": zero / gts if gts else None,
    }


def format_analysis_table(result: dict) -> str:
    """Two plain tables: mean positives per GT, and the share of GTs without a positive (%)."""
    cols = [*BUCKETS, "all"]
    counts = [*(result["gts_per_bucket"][b] for b in BUCKETS), result["num_gts"]]
    head = ["", *(f"{c} ({n})" for c, n in zip(cols, counts))]
    lines = [f"{result['num_gts']} GTs in {result['num_images']} images of {result['ann_file']}",
             f"setting: {result['setting']}"]
    for title, key, scale, fmt in (("mean positives per GT", "mean_pos", 1.0, "{:.2f}"),
                                   ("GTs with no positive (%)", "zero_pos_share", 100.0, "{:.1f}")):
        rows = [head]
        for label, res in result["assigners"].items():
            values = [res["buckets"][c][key] for c in cols]
            rows.append([label, *("-" if v is None else fmt.format(v * scale) for v in values)])
        lines += ["", title, format_table(rows, align="lr", rule=False)]
    return "\n".join(lines)


def plot_analysis(result: dict, path: str | Path) -> Path:
    """Grouped bar plot (mean positives per GT; share of GTs with none) per size bucket, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [*BUCKETS, "all"]
    labels = list(result["assigners"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(labels))
    for ax, key, title, scale in ((axes[0], "mean_pos", "mean positives per GT", 1.0),
                                  (axes[1], "zero_pos_share", "GTs with no positive (%)", 100.0)):
        for k, label in enumerate(labels):
            values = [result["assigners"][label]["buckets"][c][key] for c in cols]
            xs = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(cols))]
            ax.bar(xs, [0.0 if v is None else v * scale for v in values], width, label=label)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([f"{c}\n({result['gts_per_bucket'].get(c, result['num_gts'])})" for c in cols])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"label assignment on {Path(result['ann_file']).name} (no predictions, progress 0)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def write_analysis(result: dict, out_dir: str | Path, stem: str = "assign_analysis") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` into ``out_dir`` (atomically); return both paths."""
    out_dir = Path(out_dir)
    return write_json(out_dir / f"{stem}.json", result), plot_analysis(result, out_dir / f"{stem}.png")


def specs_from_strings(texts: Iterable[str]) -> dict[str, tuple[str, dict]]:
    """{label: (name, params)} from ``parse_assigner_spec`` strings; a repeated label is an error."""
    specs: dict[str, tuple[str, dict]] = {}
    for text in texts:
        label, name, params = parse_assigner_spec(text)
        if label in specs:
            raise AdlaError(f"assigner {label!r} given twice")
        specs[label] = (name, params)
    return specs
