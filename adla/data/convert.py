"""Converters to COCO json: DOTA labelTxt, YOLO txt, YOLO-OBB, the Airbus aircraft CSV.

Oriented polygons become their enclosing horizontal box; every box is clipped to its image. Without a
downscale the json references the original images by their path relative to ``images_dir`` (train with
``--images`` set to that folder). With ``downscale != 1`` resized PNG copies are written to
``out_images_dir`` (default: ``<out_json stem>_images`` beside the json), boxes scaled alike, and the
json references those. Malformed label lines are counted and the first few reported as ``file:line``;
they never stop a conversion.
"""

from __future__ import annotations

import ast
import csv
import fnmatch
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from adla.checks import Inputs, check_replaceable, json_is, same_file
from adla.errors import AdlaError
from adla.io import atomic_path, write_json, write_text
from adla.tables import format_table

FORMATS = ("dota", "yolo", "yolo-obb", "airbus-csv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_PROBLEMS = 10  # malformed lines listed in a summary
CSV_FIELD_LIMIT = 16 * 2**20  # bytes: a polygon of about a million points
IMAGES_MARK = ".adla-convert"  # in a folder of resized images written by adla data convert


@dataclass
class _Report:
    """What a conversion collected: counts of dropped boxes and the first malformed lines."""

    dropped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    num_problems: int = 0

    def problem(self, where: str, what: str) -> None:
        self.num_problems += 1
        self.dropped["malformed_line"] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {what}")


# A parsed box before clipping: (class index or name, x1, y1, x2, y2 in pixels, extra annotation fields)
_Box = tuple[int | str, float, float, float, float, dict]


def read_names(path: str | Path) -> list[str]:
    """Class names from a ``.names``/``.txt`` file (one a line) or an ultralytics dataset yaml (``names:``
    as a mapping index -> name or a list)."""
    path = Path(path)
    if not path.is_file():
        raise AdlaError("class names file not found", path)
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise AdlaError(f"not valid YAML ({exc})", path) from exc
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            try:
                idx = sorted(int(k) for k in names)
            except (TypeError, ValueError) as exc:
                raise AdlaError("'names' keys must be class indices 0..N-1", path) from exc
            if idx != list(range(len(idx))):
                raise AdlaError("'names' keys must be class indices 0..N-1", path)
            return [str(names[k] if k in names else names[str(k)]) for k in idx]
        if isinstance(names, list):
            return [str(n) for n in names]
        raise AdlaError("no 'names' mapping or list in the dataset yaml", path)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise AdlaError("no class names in the file", path)
    return names


def _list_images(images_dir: Path, include: str | None, recursive: bool = False) -> list[Path]:
    if not images_dir.is_dir():
        raise AdlaError("image folder not found", images_dir)
    found = images_dir.rglob("*") if recursive else images_dir.iterdir()
    images = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and (include is None or fnmatch.fnmatch(p.name, include)))
    if not images:
        what = f" matching {include!r}" if include else ""
        raise AdlaError(f"no images ({', '.join(IMAGE_SUFFIXES)}){what}", images_dir)
    return images


def one_per_source(images: list[Path], sep: str) -> tuple[list[Path], int]:
    """The first image (in name order) of each source name, the part of the file name before ``sep``
    (Roboflow exports name augmented copies ``SOURCE_jpg.rf.HASH.jpg``: ``sep=".rf."``), and how many
    copies were left out. Names without ``sep`` are their own source."""
    seen: set[str] = set()
    kept = []
    for p in sorted(images, key=lambda q: q.name):
        source = p.name.split(sep, 1)[0] if sep in p.name else p.name
        if source not in seen:
            seen.add(source)
            kept.append(p)
    return sorted(kept), len(images) - len(kept)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as exc:
        raise AdlaError(f"cannot read image ({exc.__class__.__name__}: {exc})", path) from exc


def _floats(tokens: Iterable[str]) -> list[float] | None:
    try:
        vals = [float(t) for t in tokens]
    except ValueError:
        return None
    return vals if all(math.isfinite(v) for v in vals) else None


def _enclosing(xs: list[float], ys: list[float]) -> tuple[float, float, float, float]:
    return min(xs), min(ys), max(xs), max(ys)


def parse_dota(label_file: Path, width: int, height: int, report: _Report) -> tuple[list[_Box], dict]:
    """DOTA labelTxt: optional ``imagesource:``/``gsd:`` header lines, then
    ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]`` in pixels. Returns boxes and image extras (gsd)."""
    boxes: list[_Box] = []
    extra: dict = {}
    for n, line in enumerate(label_file.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key = line.split(":", 1)[0].lower()
        if key in ("imagesource", "gsd") and ":" in line:
            value = line.split(":", 1)[1].strip()
            if key == "gsd":
                g = _floats([value])
                extra["gsd"] = g[0] if g else None
            else:
                extra["imagesource"] = value
            continue
        tok = line.split()
        coords = _floats(tok[:8]) if len(tok) in (9, 10) else None
        if coords is None:
            report.problem(f"{label_file}:{n}", "expected 8 coordinates, a class and an optional difficult flag")
            continue
        difficult = int(tok[9]) if len(tok) == 10 and tok[9].lstrip("-").isdigit() else 0
        x1, y1, x2, y2 = _enclosing(coords[0::2], coords[1::2])
        boxes.append((tok[8], x1, y1, x2, y2, {"difficult": difficult}))
    return boxes, extra


def parse_yolo(label_file: Path, width: int, height: int, report: _Report) -> tuple[list[_Box], dict]:
    """YOLO txt: ``class cx cy w h`` normalised to [0, 1]."""
    boxes: list[_Box] = []
    for n, line in enumerate(label_file.read_text(errors="replace").splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        vals = _floats(tok[1:]) if len(tok) == 5 and tok[0].isdigit() else None
        if vals is None:
            report.problem(f"{label_file}:{n}", "expected 'class cx cy w h' (integer class, 4 numbers)")
            continue
        cx, cy, w, h = vals[0] * width, vals[1] * height, vals[2] * width, vals[3] * height
        boxes.append((int(tok[0]), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, {}))
    return boxes, {}


def parse_yolo_obb(label_file: Path, width: int, height: int, report: _Report) -> tuple[list[_Box], dict]:
    """YOLO-OBB txt: ``class x1 y1 x2 y2 x3 y3 x4 y4`` normalised to [0, 1]."""
    boxes: list[_Box] = []
    for n, line in enumerate(label_file.read_text(errors="replace").splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        vals = _floats(tok[1:]) if len(tok) == 9 and tok[0].isdigit() else None
        if vals is None:
            report.problem(f"{label_file}:{n}", "expected 'class x1 y1 x2 y2 x3 y3 x4 y4' (normalised)")
            continue
        x1, y1, x2, y2 = _enclosing([v * width for v in vals[0::2]], [v * height for v in vals[1::2]])
        boxes.append((int(tok[0]), x1, y1, x2, y2, {}))
    return boxes, {}


_PARSERS: dict[str, Callable[[Path, int, int, _Report], tuple[list[_Box], dict]]] = {
    "dota": parse_dota, "yolo": parse_yolo, "yolo-obb": parse_yolo_obb}


def _read_airbus_csv(csv_file: Path, report: _Report) -> dict[str, list[_Box]]:
    """Boxes per image file name from the Airbus CSV (id, image_id, geometry as a list of (x, y), class).

    A geometry field may be up to ``CSV_FIELD_LIMIT`` long (a polygon of many thousand points is still a
    polygon; the csv module's default limit, 128 KB, applies to this reader only while it reads); a
    larger field, or a row the csv module cannot read, is one AdlaError naming the file and line.
    """
    if not csv_file.is_file():
        raise AdlaError("annotation CSV not found", csv_file)
    per_image: dict[str, list[_Box]] = {}
    old_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with open(csv_file, newline="") as f:
            reader = csv.DictReader(f)
            try:
                _read_airbus_rows(reader, csv_file, report, per_image)
            except csv.Error as exc:
                raise AdlaError(f"line {reader.line_num + 1}: not a readable CSV row ({exc}; the limit is "
                                f"{CSV_FIELD_LIMIT // 2**20} MB a field)", csv_file) from exc
    finally:
        csv.field_size_limit(old_limit)
    return per_image


def _read_airbus_rows(reader: csv.DictReader, csv_file: Path, report: _Report,
                      per_image: dict[str, list[_Box]]) -> None:
    missing = {"image_id", "geometry", "class"} - set(reader.fieldnames or [])
    if missing:
        raise AdlaError(f"CSV lacks column(s) {sorted(missing)}", csv_file)
    for row in reader:
        where = f"{csv_file}:{reader.line_num}"
        try:
            pts = ast.literal_eval(row["geometry"])
            xs = [float(p[0]) for p in pts]
            ys = [float(p[1]) for p in pts]
        except (ValueError, SyntaxError, TypeError, IndexError, KeyError, MemoryError, RecursionError):
            report.problem(where, "geometry is not a list of (x, y) points")
            continue
        if len(xs) < 3 or not all(math.isfinite(v) for v in xs + ys):
            report.problem(where, "geometry has fewer than 3 finite points")
            continue
        x1, y1, x2, y2 = _enclosing(xs, ys)
        per_image.setdefault(row["image_id"], []).append((row["class"], x1, y1, x2, y2, {}))


def _resize(src: Path, dst: Path, factor: float) -> tuple[int, int, float, float]:
    """Write ``src`` downscaled by ``factor`` as PNG at ``dst``; return (new w, new h, sx, sy)."""
    try:
        with Image.open(src) as opened:
            w, h = opened.size
            nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
            img = opened if opened.mode in ("RGB", "L", "I;16", "I") else opened.convert("RGB")
            small = img.resize((nw, nh), Image.Resampling.LANCZOS if img.mode in ("RGB", "L")
                               else Image.Resampling.BILINEAR)
    except Exception as exc:
        raise AdlaError(f"cannot read image ({exc.__class__.__name__}: {exc})", src) from exc
    with atomic_path(dst) as tmp:
        small.save(tmp, format="PNG")
    return nw, nh, nw / w, nh / h


_Parsed = list[tuple[Path, int, int, list[_Box], dict]]  # (image, width, height, boxes, extra image fields)


def _parse_labels(fmt: str, images: list[Path], labels_dir: Path, airbus: dict, report: _Report,
                  progress: bool) -> tuple[_Parsed, int]:
    """Each image's size and boxes in source pixels, and how many images had no label file."""
    parsed: _Parsed = []
    no_label = 0
    iterator: Iterable[Path] = images
    if progress:
        from tqdm import tqdm
        iterator = tqdm(images, desc=f"convert {fmt}", unit="img")
    for path in iterator:
        width, height = _image_size(path)
        boxes: list[_Box]
        extra: dict
        if fmt == "airbus-csv":
            boxes, extra = airbus[path.name], {}
        else:
            label_file = labels_dir / f"{path.stem}.txt"
            if not label_file.is_file():
                no_label += 1
                boxes, extra = [], {}
            else:
                boxes, extra = _PARSERS[fmt](label_file, width, height, report)
        parsed.append((path, width, height, boxes, extra))
    return parsed, no_label


def _found_class_names(fmt: str, parsed: _Parsed) -> list[str]:
    """Class names when none were given: the sorted names found (DOTA, Airbus), else class0..classN (YOLO)."""
    if fmt in ("dota", "airbus-csv"):
        return sorted({str(b[0]) for *_, boxes, _ in parsed for b in boxes})
    top = max((int(b[0]) for *_, boxes, _ in parsed for b in boxes), default=0)
    return [f"class{i}" for i in range(top + 1)]


def _coco_records(parsed: _Parsed, class_names: list[str], images_dir: Path, resized_dir: Path | None,
                  downscale: float, report: _Report) -> tuple[list[dict], list[dict], list[float], Counter]:
    """COCO images and annotations (images resized into ``resized_dir`` when downscaling), box sizes
    sqrt(w*h) and per-class counts; boxes of unknown classes, zero size or outside the image are counted
    in ``report.dropped``."""
    name_index = {n: i for i, n in enumerate(class_names)}
    coco_images: list[dict] = []
    annotations: list[dict] = []
    sizes: list[float] = []
    per_class: Counter = Counter()
    for image_id, (path, width, height, boxes, extra) in enumerate(parsed, 1):
        sx = sy = 1.0
        file_name = path.relative_to(images_dir).as_posix()
        if resized_dir is not None:
            file_name = Path(file_name).with_suffix(".png").as_posix()
            width, height, sx, sy = _resize(path, resized_dir / file_name, downscale)
        coco_images.append({"id": image_id, "file_name": file_name, "width": width, "height": height,
                            **{k: v for k, v in extra.items() if v is not None}})
        for cls, x1, y1, x2, y2, attrs in boxes:
            if isinstance(cls, int):
                k = cls if 0 <= cls < len(class_names) else None
            else:
                k = name_index.get(cls)
            if k is None:
                report.dropped["unknown_class"] += 1
                continue
            if x2 <= x1 or y2 <= y1:
                report.dropped["zero_size"] += 1
                continue
            x1, x2 = min(max(x1 * sx, 0.0), width), min(max(x2 * sx, 0.0), width)
            y1, y2 = min(max(y1 * sy, 0.0), height), min(max(y2 * sy, 0.0), height)
            if x2 <= x1 or y2 <= y1:
                report.dropped["outside_image"] += 1
                continue
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": k + 1,
                                "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)],
                                "area": round(w * h, 3), "iscrowd": 0, **attrs})
            per_class[class_names[k]] += 1
            sizes.append(math.sqrt(w * h))
    return coco_images, annotations, sizes, per_class


def _is_converted(data: object) -> bool:
    """A COCO json written by ``convert_dataset``."""
    info = data.get("info") if isinstance(data, dict) else None
    return isinstance(info, dict) and str(info.get("description", "")).endswith("by adla")


def _check_outputs(out_json: Path, resized: list[Path], resized_dir: Path | None, images_dir: Path,
                   images: list[Path], labels: Path, names_file: Path | None, overwrite: bool) -> None:
    """Before anything is written: no output is an input (by path or by inode), and no output replaces a
    file that adla data convert did not write, unless ``overwrite``."""
    inputs: dict[str, Path | None] = {"--labels": labels, "--names": names_file, "--images": images_dir}
    if labels.is_dir():  # the label files read: one per image (_parse_labels)
        inputs.update({f"label file {p.stem}.txt": labels / f"{p.stem}.txt" for p in images})
    inputs.update({f"image {p.name}": p for p in images})
    index = Inputs(inputs)
    index.check(out_json)
    check_replaceable(out_json, json_is(_is_converted), overwrite=overwrite,
                      kind="a COCO json written by adla data convert")
    if resized_dir is None:
        return
    if same_file(resized_dir, images_dir):
        raise AdlaError(f"--out-images is the input --images folder ({images_dir}): its images would be "
                        "replaced by resized copies; choose another --out-images", resized_dir)
    for dst in resized:
        index.check(dst, "--out-images")
    ours = (resized_dir / IMAGES_MARK).is_file()
    existing = [dst for dst in resized if dst.exists() or dst.is_symlink()]
    if existing and not ours and not overwrite:
        raise AdlaError(f"--out-images already holds {len(existing)} of the files it would write "
                        f"({existing[0].name}, ...) and was not written by adla data convert; use --overwrite "
                        "to replace them or choose another --out-images", resized_dir)


def convert_dataset(fmt: str, images_dir: str | Path, labels_dir: str | Path, out_json: str | Path, *,
                    class_names: list[str] | None = None, names_file: str | Path | None = None,
                    include: str | None = None, downscale: float = 1.0,
                    out_images_dir: str | Path | None = None, progress: bool = False,
                    overwrite: bool = False, dedupe: str | None = None) -> dict:
    """Convert a labelled image folder to COCO json (boxes xywh pixels, categories 1..C).

    fmt: "dota" | "yolo" | "yolo-obb" | "airbus-csv" (``labels_dir`` is then the CSV file; images are
    searched recursively under ``images_dir`` and CSV rows of absent images are skipped).
    Class names: ``class_names`` or ``names_file``; otherwise the sorted names found (DOTA, Airbus) or
    ``class0..`` up to the largest index (YOLO). ``include``: a glob on image file names ("MOS*").
    ``dedupe``: keep one image per source name, the part before this separator (``one_per_source``).
    No output may be an input; an existing output not written by this function is replaced only with
    ``overwrite``. Returns a summary dict: images, boxes, per_class, median_size_px (sqrt(w*h), after downscaling),
    dropped {reason: count}, problems (first few "file:line: what"), num_problems, image_dir, out_json.
    """
    if fmt not in FORMATS:
        raise AdlaError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not (0 < downscale <= 1):
        raise AdlaError(f"downscale must be in (0, 1], got {downscale}")
    if names_file is not None:
        names_file = Path(names_file)
        class_names = read_names(names_file)
    images_dir, labels_dir, out_json = Path(images_dir), Path(labels_dir), Path(out_json)
    report = _Report()

    airbus = _read_airbus_csv(labels_dir, report) if fmt == "airbus-csv" else {}
    images = _list_images(images_dir, include, recursive=fmt == "airbus-csv")
    copies = 0
    if dedupe:
        images, copies = one_per_source(images, dedupe)
    if fmt == "airbus-csv":
        images = [p for p in images if p.name in airbus]
        if not images:
            raise AdlaError(f"none of the images listed in {labels_dir} is present", images_dir)
    elif not labels_dir.is_dir():
        raise AdlaError("label folder not found", labels_dir)

    resized_dir = None
    if downscale != 1.0:
        resized_dir = Path(out_images_dir) if out_images_dir else out_json.parent / f"{out_json.stem}_images"
    resized = [] if resized_dir is None else \
        [resized_dir / p.relative_to(images_dir).with_suffix(".png") for p in images]
    _check_outputs(out_json, resized, resized_dir, images_dir, images, labels_dir, names_file, overwrite)
    if resized_dir is not None:
        write_text(resized_dir / IMAGES_MARK, "resized images written by adla data convert\n")

    parsed, no_label = _parse_labels(fmt, images, labels_dir, airbus, report, progress)
    if class_names is None:
        class_names = _found_class_names(fmt, parsed)
    coco_images, annotations, sizes, per_class = _coco_records(parsed, class_names, images_dir, resized_dir,
                                                               downscale, report)

    image_dir = resized_dir if resized_dir is not None else images_dir
    coco = {"info": {"description": f"converted from {fmt} by adla", "source_images": str(images_dir),
                     "image_dir": str(image_dir), "downscale": downscale},
            "images": coco_images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(class_names)]}
    write_json(out_json, coco, indent=None)
    dropped = dict(report.dropped)
    if no_label:
        dropped["images_without_label_file"] = no_label
    if copies:
        dropped[f"image_copies_of_one_source ({dedupe!r})"] = copies
    return {"format": fmt, "out_json": str(out_json), "image_dir": str(image_dir), "images": len(coco_images),
            "boxes": len(annotations), "class_names": list(class_names),
            "per_class": {n: per_class.get(n, 0) for n in class_names},
            "median_size_px": float(np.median(sizes)) if sizes else float("nan"),
            "dropped": dropped, "problems": report.problems, "num_problems": report.num_problems}


def format_summary(summary: dict) -> str:
    """The summary of ``convert_dataset`` as an aligned text table."""
    rows = [("images", str(summary["images"])), ("boxes", str(summary["boxes"]))]
    rows += [(f"  {name}", str(n)) for name, n in summary["per_class"].items()]
    rows.append(("median size (px)", f"{summary['median_size_px']:.1f}"))
    rows += [(f"dropped: {k}", str(v)) for k, v in sorted(summary["dropped"].items())]
    rows += [("json", summary["out_json"]), ("images in", summary["image_dir"])]
    lines = [format_table(rows, rule=False)]  # no header: a column of names and one of values
    if summary["problems"]:
        lines.append(f"malformed lines ({summary['num_problems']}, first {len(summary['problems'])}):")
        lines += [f"  {p}" for p in summary["problems"]]
    return "\n".join(lines)
