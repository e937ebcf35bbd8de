"""Outputs of a scene: COCO JSON, GeoJSON (in the scene's CRS when georeferenced), preview picture.

Boxes come in as xyxy scene pixels. Every file is written atomically (``adla.io``). ``SceneWriter`` streams
detections as the merge makes them final (memory flat in the number of detections).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from adla.io import atomic_path, write_json
from adla.runtime.claims import clean_partials, create_exclusive, write_manifest
from adla.runtime.options import PREVIEW_SCORE

PALETTE = [(255, 56, 56), (56, 255, 56), (56, 128, 255), (255, 210, 0), (255, 0, 255), (0, 255, 255),
           (255, 128, 0), (128, 0, 255)]


def coco_dict(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, class_names: list[str], *,
              file_name: str, width: int, height: int, image_id: int = 1) -> dict:
    """A COCO dict {"images", "categories", "annotations"}; category_id = label + 1, bbox [x, y, w, h] px.

    ``adla evaluate`` takes it as is (it reads the "annotations" list of a results dict).
    """
    b = boxes.detach().cpu().double()
    xywh = torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1).numpy().round(2).tolist()
    areas = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).numpy().round(2).tolist()
    sc = scores.detach().cpu().double().numpy().round(5).tolist()
    lb = labels.detach().cpu().tolist()
    anns = [{"id": i + 1, "image_id": image_id, "category_id": int(c) + 1, "bbox": bb, "area": a, "score": s,
             "iscrowd": 0}
            for i, (bb, a, s, c) in enumerate(zip(xywh, areas, sc, lb))]
    return {
        "images": [{"id": image_id, "file_name": file_name, "width": width, "height": height}],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)],
        "annotations": anns,
    }


def _crs_member(crs) -> tuple[dict | None, bool]:
    """(GeoJSON 2008 "crs" member or None, whether the coordinates are RFC 7946 lon/lat)."""
    if crs is None:
        return None, False
    epsg = crs.to_epsg()
    if epsg == 4326:
        return None, True  # RFC 7946: WGS 84 lon/lat is the default and needs no member
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}, False


def box_rings(boxes: np.ndarray, transform) -> np.ndarray:
    """Closed rings [K,5,2] of xyxy pixel boxes mapped through an affine ``transform`` (pixel -> world).

    Rings run counter-clockwise in the output coordinates (RFC 7946's exterior-ring rule).
    """
    x0, y0, x1, y1 = boxes.T
    det = transform.a * transform.e - transform.b * transform.d
    if det < 0:  # north-up rasters flip y: go tl -> bl -> br -> tr to stay counter-clockwise
        xs = np.stack([x0, x0, x1, x1, x0], 1)
        ys = np.stack([y0, y1, y1, y0, y0], 1)
    else:
        xs = np.stack([x0, x1, x1, x0, x0], 1)
        ys = np.stack([y0, y0, y1, y1, y0], 1)
    wx = transform.a * xs + transform.b * ys + transform.c
    wy = transform.d * xs + transform.e * ys + transform.f
    return np.stack([wx, wy], -1)


def geojson_dict(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, class_names: list[str], *,
                 crs=None, transform=None, georeferenced: bool = False) -> dict:
    """A FeatureCollection of box Polygons with properties class, class_id, score.

    Georeferenced scenes: coordinates in the scene's CRS (a "crs" member naming it, or plain RFC 7946
    for EPSG:4326). Others: pixel coordinates (x right, y down), said so in each feature's properties.
    """
    b = boxes.detach().cpu().double().numpy().reshape(-1, 4)
    if georeferenced and transform is not None:
        rings = box_rings(b, transform)
        crs_member, _ = _crs_member(crs)
        note = None
    else:
        from affine import Affine

        rings = box_rings(b, Affine.identity())
        crs_member, note = None, "pixel coordinates (x right, y down): the scene has no georeference"
    sc = scores.detach().cpu().double().numpy().round(5).tolist()
    lb = labels.detach().cpu().tolist()
    features = []
    for ring, s, c in zip(rings.round(6).tolist(), sc, lb):
        props: dict = {"class": class_names[c] if 0 <= c < len(class_names) else str(c), "class_id": int(c),
                       "score": s}
        if note:
            props["coordinates"] = note
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": props})
    out: dict = {"type": "FeatureCollection"}
    if crs_member:
        out["crs"] = crs_member
    out["features"] = features
    return out


def _draw_boxes(draw, boxes: np.ndarray, labels: list[int], scale: float) -> None:
    for (x0, y0, x1, y1), c in zip((boxes / scale).tolist(), labels):
        draw.rectangle([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)], outline=PALETTE[c % len(PALETTE)], width=1)


def draw_legend(pic, class_names: list[str], counts: list[int], min_score: float) -> None:
    """A box in the top-left corner: one colour swatch per class with its name and drawn-box count."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(pic)
    rows: list[tuple[tuple[int, int, int] | None, str]] = [
        (PALETTE[i % len(PALETTE)], f"{name}: {n}") for i, (name, n) in enumerate(zip(class_names, counts))]
    rows.append((None, f"score >= {min_score:g}"))
    width = 14 + 7 * max(len(text) for _, text in rows)
    draw.rectangle([4, 4, 4 + width, 8 + 14 * len(rows)], fill=(0, 0, 0))
    for k, (colour, text) in enumerate(rows):
        y = 7 + 14 * k
        if colour is not None:
            draw.rectangle([8, y + 2, 16, y + 10], fill=colour)
        draw.text((20, y), text, fill=(255, 255, 255))


def draw_preview(image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor, scale: float,
                 scores: torch.Tensor | None = None, class_names: list[str] | None = None,
                 min_score: float = PREVIEW_SCORE):
    """PIL image of ``image`` (RGB uint8 [3,h,w], the scene down-scaled by ``scale``) with the boxes
    (xyxy scene px) of score >= ``min_score`` drawn in their class colour, and a legend when names are given."""
    from PIL import Image, ImageDraw

    pic = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    keep = torch.ones(len(boxes), dtype=torch.bool) if scores is None else scores.detach().cpu() >= min_score
    lab = labels.detach().cpu()[keep]
    _draw_boxes(ImageDraw.Draw(pic), boxes.detach().cpu()[keep].double().numpy(), lab.tolist(), scale)
    if class_names:
        draw_legend(pic, class_names, torch.bincount(lab, minlength=len(class_names)).tolist(), min_score)
    return pic


def write_preview(path: str | Path, image: np.ndarray, boxes: torch.Tensor, labels: torch.Tensor,
                  scale: float, scores: torch.Tensor | None = None, class_names: list[str] | None = None,
                  min_score: float = PREVIEW_SCORE) -> Path:
    pic = draw_preview(image, boxes, labels, scale, scores, class_names, min_score)
    fmt = "PNG" if Path(path).suffix.lower() == ".png" else "JPEG"
    with atomic_path(path) as tmp:
        pic.save(tmp, format=fmt, quality=90)
    return Path(path)


def write_outputs(out_dir: str | Path, stem: str, *, boxes: torch.Tensor, scores: torch.Tensor,
                  labels: torch.Tensor, class_names: list[str], info, preview: tuple[np.ndarray, float] | None
                  ) -> dict[str, Path]:
    """Write ``{stem}.coco.json``, ``{stem}.geojson`` and ``{stem}.preview.jpg`` into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {
        "coco": write_json(out_dir / f"{stem}.coco.json", coco_dict(
            boxes, scores, labels, class_names, file_name=info.path.name, width=info.width, height=info.height),
            indent=None),
        "geojson": write_json(out_dir / f"{stem}.geojson", geojson_dict(
            boxes, scores, labels, class_names, crs=info.crs, transform=info.transform,
            georeferenced=info.georeferenced), indent=None),
    }
    if preview is not None:
        image, scale = preview
        paths["preview"] = write_preview(out_dir / f"{stem}.preview.jpg", image, boxes, labels, scale, scores,
                                         class_names)
    return paths


def _feature_lines(rings: np.ndarray, scores: list[float], labels: list[int], class_names: list[str],
                   note: str | None) -> list[str]:
    """GeoJSON Feature strings (the same members as ``geojson_dict``'s), formatted without a dict each."""
    names = [json.dumps(n) for n in class_names]
    tail = f',"coordinates":{json.dumps(note)}' if note else ""
    # one format call per feature (floats as repr, as json.dumps writes them): ~3x faster than dicts
    fmt = ('{{"type":"Feature","geometry":{{"type":"Polygon","coordinates":[[[{!r},{!r}],[{!r},{!r}],[{!r},{!r}],'
           '[{!r},{!r}],[{!r},{!r}]]]}},"properties":{{"class":{},"class_id":{},"score":{!r}' + tail + '}}}}')
    flat = rings.round(6).reshape(len(rings), 10).tolist()
    return [fmt.format(*ring, names[c] if 0 <= c < len(names) else json.dumps(str(c)), c, s)
            for ring, s, c in zip(flat, scores, labels)]


class SceneWriter:
    """Outputs of one scene written as detections become final, in memory that does not grow with them.

    While the scene runs: ``{stem}.partial.geojsonl`` (GeoJSONSeq: one Feature per line, flushed after each
    batch, so a killed run leaves every final detection so far in a valid file) and a binary spill of the
    detections. ``close()`` assembles ``{stem}.geojson`` (a FeatureCollection, streamed from the partial
    file), the preview, ``{stem}.coco.json`` (streamed from the spill), each atomically, then the manifest
    ``{stem}.done.json`` (``adla.runtime.claims``: the scene is finished, for ``--resume``), and removes the
    partial files. The partial files are created fresh (a leftover or a planted link is replaced, never
    followed): the caller holds the scene's claim.
    """

    SPILL_COLS = 6  # x0, y0, x1, y1, score, label as float32

    def __init__(self, out_dir: str | Path, stem: str, *, class_names: list[str], info,
                 preview: tuple[np.ndarray, float] | None = None, preview_score: float = PREVIEW_SCORE):
        from affine import Affine

        self.out_dir, self.stem, self.class_names, self.info = Path(out_dir), stem, class_names, info
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.geo_part = self.out_dir / f"{stem}.partial.geojsonl"
        self.spill_path = self.out_dir / f"{stem}.partial.dets.f32"
        # open for the scene's whole run; closed by close() or abort(). Fresh files, links never followed
        self._geo = create_exclusive(self.geo_part, "w")
        self._spill = create_exclusive(self.spill_path, "wb")
        if info.georeferenced and info.transform is not None:
            self._transform, self._note = info.transform, None
        else:
            self._transform = Affine.identity()
            self._note = "pixel coordinates (x right, y down): the scene has no georeference"
        self._preview = None
        if preview is not None:
            from PIL import Image, ImageDraw

            image, self._scale = preview
            self._preview = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
            self._draw = ImageDraw.Draw(self._preview)
        self.preview_score = preview_score
        self._drawn = np.zeros(len(class_names), dtype=np.int64)
        self.count = 0
        self.outputs: dict[str, Path] = {}

    def write(self, dets: dict[str, torch.Tensor]) -> None:
        boxes = dets["boxes"].detach().cpu().float()
        scores, labels = dets["scores"].detach().cpu().float(), dets["labels"].detach().cpu()
        rec = torch.cat([boxes, scores[:, None], labels[:, None].float()], 1).numpy()
        self._spill.write(rec.astype(np.float32).tobytes())
        b = boxes.double().numpy()
        lines = _feature_lines(box_rings(b, self._transform), scores.double().numpy().round(5).tolist(),
                               labels.tolist(), self.class_names, self._note)
        self._geo.write("\n".join(lines) + "\n")
        self._geo.flush()
        if self._preview is not None:
            shown = (scores >= self.preview_score).numpy()
            drawn = labels.numpy()[shown]
            _draw_boxes(self._draw, b[shown], drawn.tolist(), self._scale)
            self._drawn += np.bincount(drawn, minlength=len(self.class_names))[: len(self.class_names)]
        self.count += len(rec)

    def abort(self) -> None:
        """Close the partial files and leave them (a failed scene: what was final so far stays readable)."""
        self._geo.close()
        self._spill.close()

    def close(self) -> dict[str, Path]:
        self._geo.close()
        self._spill.close()
        self.outputs["geojson"] = self._assemble_geojson()
        if self._preview is not None:
            draw_legend(self._preview, self.class_names, self._drawn.tolist(), self.preview_score)
            path = self.out_dir / f"{self.stem}.preview.jpg"
            with atomic_path(path) as tmp:
                self._preview.save(tmp, format="JPEG", quality=90)
            self.outputs["preview"] = path
        self.outputs["coco"] = self._assemble_coco()
        write_manifest(self.out_dir, self.stem, self.outputs, self.count)  # last: the scene is complete
        clean_partials(self.out_dir, self.stem)
        return self.outputs

    def _assemble_geojson(self) -> Path:
        path = self.out_dir / f"{self.stem}.geojson"
        crs_member, _ = _crs_member(self.info.crs) if self.info.georeferenced else (None, False)
        head = '{"type":"FeatureCollection",' + (f'"crs":{json.dumps(crs_member)},' if crs_member else "")
        with atomic_path(path) as tmp, open(tmp, "w") as out, open(self.geo_part) as part:
            out.write(head + '"features":[')
            first = True
            for line in part:
                out.write(("" if first else ",") + line.rstrip("\n"))
                first = False
            out.write("]}")
        return path

    def _assemble_coco(self, chunk: int = 100_000) -> Path:
        path = self.out_dir / f"{self.stem}.coco.json"
        head = {"images": [{"id": 1, "file_name": self.info.path.name, "width": self.info.width,
                            "height": self.info.height}],
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]}
        ann_id = 0
        with atomic_path(path) as tmp, open(tmp, "w") as out, open(self.spill_path, "rb") as spill:
            out.write(json.dumps(head)[:-1] + ', "annotations": [')
            while True:
                data = np.frombuffer(spill.read(chunk * self.SPILL_COLS * 4), dtype=np.float32)
                if data.size == 0:
                    break
                rec = data.reshape(-1, self.SPILL_COLS).astype(np.float64)
                b = rec[:, :4]
                xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1).round(2).tolist()
                areas = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).round(2).tolist()
                sc = rec[:, 4].astype(np.float32).astype(np.float64).round(5).tolist()
                fmt = ('{{"id": {}, "image_id": 1, "category_id": {}, "bbox": [{!r}, {!r}, {!r}, {!r}], '
                       '"area": {!r}, "score": {!r}, "iscrowd": 0}}')
                parts = [fmt.format(ann_id + k + 1, c + 1, *bb, a, s) for k, (bb, a, s, c) in
                         enumerate(zip(xywh, areas, sc, rec[:, 5].astype(int).tolist()))]
                ann_id += len(parts)
                out.write(("" if ann_id == len(parts) else ", ") + ", ".join(parts))
            out.write("]}")
        return path
