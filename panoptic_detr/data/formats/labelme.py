"""labelme input: one JSON per image (`shapes`, `imagePath`, optional `imageData`).

Shapes: `polygon` (>= 3 points), `rectangle` (2 corner points, any order), `circle`
(centre and a point on the circle, drawn as a 48-gon). Shapes sharing a `label` and a
non-null `group_id` form one instance (their parts are united). Point and line shapes
(`point`, `line`, `linestrip`, `points`) have no area: skipped with a warning; other
shape types are errors. The image is `imagePath` relative to the JSON; when that file is
missing and `imageData` (base64) is embedded, the embedded image is used.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
from pathlib import Path

from panoptic_detr.data.formats.common import Annotation, SourceImage
from panoptic_detr.errors import PanopticDetrError
from panoptic_detr.utils.io import read_json

__all__ = ["read_labelme_dir", "read_labelme"]

_NO_AREA = {"point", "points", "line", "linestrip"}


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
    except (TypeError, ValueError):
        w = h = None
    item = SourceImage(
        name=base, source=src, ref="image", image_path=img_path, width=w, height=h, image_bytes=image_bytes, relpath=rel
    )
    if img_path is None and image_bytes is None:
        what = f"image file '{image_path_s}' not found" if image_path_s else "no imagePath"
        item.problems.append(f"{src}: {what} and no usable embedded imageData")
    if w is None or h is None or w <= 0 or h <= 0:
        item.problems.append(f"{src}: missing or invalid imageWidth/imageHeight")
    groups: dict = {}
    for k, shape in enumerate(data["shapes"]):
        sid = f"shape #{k}"
        if not isinstance(shape, dict):
            item.problems.append(f"{src}: {sid} is not an object")
            continue
        label = str(shape.get("label", ""))
        poly = _shape_polygon(shape, f"{src}: {sid} ('{label}')", item)
        if poly is None:
            continue
        gid = shape.get("group_id")
        key = (label, gid) if gid is not None else (label, None, k)
        if key in groups:
            groups[key].data.append(poly)
        else:
            ann = Annotation(ann_id=sid if gid is None else f"{sid} (group {gid})", label=label, kind="polygons", data=[poly])
            groups[key] = ann
            item.annotations.append(ann)
    return item, []


def _shape_polygon(shape: dict, where: str, item: SourceImage) -> list | None:
    """A labelme shape as one flat polygon; None (with a problem or a warning on `item`)
    when it has none."""
    stype = shape.get("shape_type") or "polygon"
    pts = shape.get("points") or []
    try:
        pts = [(float(p[0]), float(p[1])) for p in pts]
    except (TypeError, ValueError, IndexError):
        item.problems.append(f"{where}: points must be [x, y] pairs")
        return None
    if stype in _NO_AREA:
        item.warnings.append(f"{where}: {stype} shape has no area; skipped")
        return None
    if stype == "polygon":
        return [v for p in pts for v in p]
    if stype not in ("rectangle", "circle"):
        item.problems.append(f"{where}: unsupported shape_type '{stype}'")
        return None
    if len(pts) != 2:
        item.problems.append(f"{where}: {stype} needs 2 points, has {len(pts)}")
        return None
    if stype == "rectangle":
        (x0, y0), (x1, y1) = pts
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    (cx, cy), (px, py) = pts
    r = math.hypot(px - cx, py - cy)
    return [v for t in range(48) for v in (cx + r * math.cos(2 * math.pi * t / 48), cy + r * math.sin(2 * math.pi * t / 48))]


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
