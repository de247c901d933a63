"""labelme input: one JSON per image (`shapes`, `imagePath`, optional `imageData`).

Shapes are read as labelme's own converters read them (`labelme2voc`, `labelme2coco`,
`labelme.utils.shapes_to_label`):
- `polygon` (>= 3 points; also `points`, which labelme draws as a polygon) and
  `rectangle` (2 corners, any order) are polygons, rasterised by pycocotools as COCO
  tools rasterise labelme2coco's output;
- `circle` (centre + a point on it), `line`, `linestrip` (10 px wide), `point` (radius 5)
  and `mask` (labelme >= 5.3: a base64 PNG over the box of its 2 points) are drawn
  exactly as `labelme.utils.shape_to_mask` draws them (PIL);
- shapes sharing a `label` and a non-null `group_id` are one instance; every shape is
  painted at its own place in the file (later shapes over earlier ones), as
  `shapes_to_label` does, so a group's parts are united and a hole exists only where a
  later shape covers it;
- the label `__ignore__` (labelme2voc's ignore class) marks pixels VOID (id 0);
  `_background_` (labelme2voc's class 0) is no class: its area shows the stuff again,
  cutting a hole in the shapes before it (labelme's wheel example draws holes so);
- other shape types are errors naming the shape.

The image is `imagePath` relative to the JSON; when that file is missing and `imageData`
(base64) is embedded, the embedded image is used.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
from pathlib import Path

import numpy as np

from panoptic_detr.data.formats.common import Annotation, SourceImage
from panoptic_detr.errors import PanopticDetrError
from panoptic_detr.utils.io import read_json

__all__ = ["read_labelme_dir", "read_labelme", "shape_mask", "check_shape", "IGNORE_LABEL", "BACKGROUND_LABEL"]

IGNORE_LABEL = "__ignore__"  # labelme2voc: VOID (255 in its PNGs)
BACKGROUND_LABEL = "_background_"  # labelme2voc: class 0
LINE_WIDTH, POINT_SIZE = 10, 5  # labelme.utils.shape_to_mask's defaults
_DRAWN = {"circle": 2, "line": 2, "linestrip": None, "point": 1, "mask": 2}  # type -> points needed (None: >= 2)


def read_labelme_dir(folder: str | os.PathLike) -> tuple[list[SourceImage], list[str]]:
    """Every labelme JSON under `folder` (recursively, sorted)."""
    folder = Path(folder)
    if folder.is_file():
        files, root = [folder], folder.parent
    elif folder.is_dir():
        files, root = sorted(folder.rglob("*.json")), folder
    else:
        return [], [f"{folder}: not found (--labelme takes a folder of labelme JSON files)"]
    if not files:
        return [], [f"{folder}: no labelme JSON files inside"]
    images, problems = [], []
    for f in files:
        item, probs = read_labelme(f, root)
        problems += probs
        if item is not None:
            images.append(item)
    return images, problems


def read_labelme(json_path: Path, root: Path) -> tuple[SourceImage | None, list[str]]:
    src = str(json_path)
    try:
        data = read_json(json_path)
    except PanopticDetrError as e:
        return None, [str(e)]
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return None, [f"{src}: not a labelme JSON (no 'shapes' list)"]
    image_path_s = data.get("imagePath") or ""
    img_path = (json_path.parent / image_path_s) if image_path_s else None
    if img_path is not None and not img_path.is_file():
        img_path = None
    image_bytes = None
    if img_path is None and data.get("imageData"):
        try:
            image_bytes = base64.b64decode(data["imageData"], validate=False)
        except (binascii.Error, ValueError, TypeError):
            image_bytes = None
    if image_path_s:
        base = Path(image_path_s.replace("\\", "/")).name
    else:
        base = json_path.stem + _ext_of(image_bytes)
    rel = json_path.relative_to(root).with_name(base).as_posix() if _under(json_path, root) else base
    try:
        w, h = int(data.get("imageWidth")), int(data.get("imageHeight"))
    except (TypeError, ValueError, OverflowError):
        w = h = None
    item = SourceImage(
        name=base, source=src, ref="image", image_path=img_path, width=w, height=h, image_bytes=image_bytes, relpath=rel
    )
    if img_path is None and image_bytes is None:
        what = f"image file '{image_path_s}' not found" if image_path_s else "no imagePath"
        item.problems.append(f"{src}: {what} and no usable embedded imageData")
    if w is None or h is None or w <= 0 or h <= 0:
        item.problems.append(f"{src}: missing or invalid imageWidth/imageHeight")
    for k, shape in enumerate(data["shapes"]):
        sid = f"shape #{k}"
        if not isinstance(shape, dict):
            item.problems.append(f"{src}: {sid} is not an object")
            continue
        label = str(shape.get("label", ""))
        kind_data = _shape_data(shape, f"{src}: {sid} ('{label}')", item)
        if kind_data is None:
            continue
        kind, payload = kind_data
        gid = shape.get("group_id")
        role = {IGNORE_LABEL: "void", BACKGROUND_LABEL: "background"}.get(label, "object")
        instance = (label, _hashable(gid)) if gid is not None and role == "object" else None
        ann_id = sid if gid is None else f"{sid} (group {gid})"
        item.annotations.append(Annotation(ann_id=ann_id, label=label, kind=kind, data=payload, role=role,
                                           instance=instance))
    return item, []


def _hashable(v):
    return v if isinstance(v, (int, float, str, bool)) else repr(v)


def _shape_data(shape: dict, where: str, item: SourceImage) -> tuple[str, object] | None:
    """(annotation kind, data) of a labelme shape; None (with a problem on `item`) when
    it is malformed."""
    stype = shape.get("shape_type") or "polygon"
    pts = shape.get("points") or []
    try:
        pts = [(float(p[0]), float(p[1])) for p in pts]
    except (TypeError, ValueError, IndexError, OverflowError):
        item.problems.append(f"{where}: points must be [x, y] pairs")
        return None
    if not all(math.isfinite(v) for p in pts for v in p):
        item.problems.append(f"{where}: a point has a non-finite coordinate")
        return None
    if stype in ("polygon", "points"):
        return "polygons", [[v for p in pts for v in p]]
    if stype == "rectangle":
        if len(pts) != 2:
            item.problems.append(f"{where}: rectangle needs 2 points, has {len(pts)}")
            return None
        (x0, y0), (x1, y1) = pts
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        return "polygons", [[x0, y0, x1, y0, x1, y1, x0, y1]]
    if stype not in _DRAWN:
        item.problems.append(f"{where}: unsupported shape_type '{stype}' (known: polygon, rectangle, circle, line, "
                             "linestrip, point, points, mask)")
        return None
    mask = None
    if stype == "mask":
        mask = _decode_mask(shape.get("mask"))
        if mask is None:
            item.problems.append(f"{where}: mask shape without a decodable base64 PNG 'mask'")
            return None
    return "shape", {"type": stype, "points": pts, "mask": mask}


def _decode_mask(b64) -> np.ndarray | None:
    if not isinstance(b64, str) or not b64:
        return None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            arr = np.asarray(im)
    except (binascii.Error, ValueError, OSError, SyntaxError):
        return None
    return (arr.any(axis=-1) if arr.ndim == 3 else arr).astype(bool)


def check_shape(data: dict, h: int, w: int) -> list[str]:
    """Errors (message tails) of a drawn labelme shape on an h x w image: the number of
    points its type needs, coordinates far outside the image (PIL would draw for ages)."""
    stype, pts = data["type"], data["points"]
    need = _DRAWN[stype]
    if need is None and len(pts) < 2:
        return [f"{stype} shape needs at least 2 points, has {len(pts)}"]
    if need is not None and len(pts) != need:
        return [f"{stype} shape needs {need} point(s), has {len(pts)}"]
    ext = [abs(v) for p in pts for v in p]
    if stype == "circle":
        ext.append(math.hypot(pts[1][0] - pts[0][0], pts[1][1] - pts[0][1]))
    if max(ext) > 4 * max(h, w) + 100:
        return [f"{stype} shape reaches far outside the {w}x{h} image"]
    return []


def shape_mask(data: dict, h: int, w: int) -> np.ndarray:
    """bool [h, w] mask of a circle / line / linestrip / point / mask shape, drawn as
    `labelme.utils.shape_to_mask` draws it (PIL, outline included, lines 10 px wide,
    points of radius 5)."""
    from PIL import Image, ImageDraw

    stype, xy = data["type"], [tuple(p) for p in data["points"]]
    if stype == "mask":
        out = np.zeros((h, w), bool)
        (x1, y1), _ = (tuple(int(v) for v in p) for p in xy)
        m = data["mask"]
        ys, xs = slice(max(y1, 0), min(y1 + m.shape[0], h)), slice(max(x1, 0), min(x1 + m.shape[1], w))
        out[ys, xs] = m[ys.start - y1:ys.stop - y1, xs.start - x1:xs.stop - x1]
        return out
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    if stype == "circle":
        (cx, cy), (px, py) = xy
        d = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif stype in ("line", "linestrip"):
        draw.line(xy=xy, fill=1, width=LINE_WIDTH)
    else:  # point
        (cx, cy), = xy
        r = POINT_SIZE
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    return np.asarray(img, dtype=bool)


def _ext_of(data: bytes | None) -> str:
    if not data:
        return ".png"
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "PNG").lower()
    except Exception:
        return ".png"
    return {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp", "gif": ".gif"}.get(fmt, ".png")


def _under(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False
