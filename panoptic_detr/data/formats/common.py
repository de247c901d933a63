"""What the readers hand to `prepare`: images with their raw annotations, and mask helpers.

Readers only parse and structurally check; names are resolved through the class map and
geometry is checked by `prepare`. Masks go through pycocotools (its polygon rasteriser
is the one COCO tools use, so areas agree with theirs; it clips polygons to the image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "Annotation",
    "SourceImage",
    "check_geometry",
    "annotation_rle",
    "decode_rle",
    "encode_mask",
    "polygon_area",
    "clip_polygon",
]


@dataclass
class Annotation:
    """One annotated object. `kind` says what `data` holds:
    `polygons` (list of flat [x1, y1, x2, y2, ...] lists), `rle` (a COCO RLE dict,
    `counts` a list = uncompressed or a str/bytes = compressed), `box` ([x, y, w, h],
    filled as a rectangle), `shape` (a labelme shape drawn as labelme draws it:
    `{"type": circle|line|linestrip|point|mask, "points": [(x, y), ...], "mask": bool
    array or None}`, see `formats.labelme.shape_mask`).

    `role`: "object" (an instance of its label's class), "void" (its pixels become VOID,
    labelme's `__ignore__`) or "background" (its pixels go back to the stuff below,
    labelme's `_background_`); void and background regions are painted in file order
    among the things, as labelme paints its shapes. `instance`: annotations of one image
    with the same non-None key are one segment (labelme shapes sharing a label and a
    `group_id`), each painted at its own place in the file order.
    """

    ann_id: object
    label: str
    kind: str
    data: object
    iscrowd: int = 0
    role: str = "object"
    instance: object = None


@dataclass
class SourceImage:
    """One input image. `name` is its (unique) file name in the prepared dataset."""

    name: str
    source: str  # the annotation file it comes from (for messages)
    ref: str  # the item within it, e.g. "image id 3" (for messages)
    image_path: Path | None
    width: int | None
    height: int | None
    annotations: list[Annotation] = field(default_factory=list)
    image_bytes: bytes | None = None  # embedded image (labelme imageData)
    relpath: str = ""  # path relative to the input root (to match --stuff-truth by name)
    kind: str = "custom"  # "custom" (things only) or "panoptic" (has its own stuff)
    png_path: Path | None = None  # panoptic: its PNG
    segments: list[dict] = field(default_factory=list)  # panoptic: segments_info
    seg_labels: dict = field(default_factory=dict)  # panoptic: category_id -> name
    problems: list[str] = field(default_factory=list)  # errors found while reading
    warnings: list[str] = field(default_factory=list)
    # the labels whose every instance in this image is annotated (LVIS's federated
    # annotation); None: every class (a per-class export folder: its class; a COCO file:
    # its categories). Resolved through the class map by `prepare`; stuff is always annotated.
    annotated: list[str] | None = None

    @property
    def where(self) -> str:
        return f"{self.source}: {self.ref}"


def polygon_area(xy) -> float:
    """Shoelace area of a flat [x1, y1, x2, y2, ...] polygon."""
    a = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x, y = a[:, 0], a[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_polygon(xy, w: float, h: float) -> np.ndarray:
    """A polygon clipped to [0, w] x [0, h] (Sutherland-Hodgman), as [N, 2] (N may be 0)."""
    pts = [tuple(p) for p in np.asarray(xy, dtype=np.float64).reshape(-1, 2)]
    for axis, bound, keep_less in ((0, 0.0, False), (0, float(w), True), (1, 0.0, False), (1, float(h), True)):
        if not pts:
            break
        inside = (lambda p: p[axis] <= bound) if keep_less else (lambda p: p[axis] >= bound)
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(_cross(prev, cur, axis, bound))
                out.append(cur)
            elif inside(prev):
                out.append(_cross(prev, cur, axis, bound))
        pts = out
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _clip_area(xy, w: int, h: int) -> float:
    pts = clip_polygon(xy, w, h)
    return polygon_area(pts.ravel()) if len(pts) >= 3 else 0.0


def _cross(p, q, axis, bound):
    t = (bound - p[axis]) / (q[axis] - p[axis])
    return (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))


def _far_outside(arr: np.ndarray, w: int, h: int) -> bool:
    """Whether a flat polygon reaches further than one image size beyond the image: such
    coordinates go to pycocotools clipped (its rasteriser walks every boundary pixel, so a
    polygon 1e9 pixels wide would take gigabytes)."""
    xs, ys = arr[0::2], arr[1::2]
    return bool(xs.min() < -w or ys.min() < -h or xs.max() > 2 * w or ys.max() > 2 * h)


def check_geometry(ann: Annotation, h: int, w: int) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one annotation on an h x w image, as message tails.

    Errors: polygon with fewer than 3 points, odd or non-numeric (NaN, infinite)
    coordinates, RLE of another size or with counts not summing to h*w, a bbox with a
    non-finite coordinate or a negative width/height, malformed data. Warnings: polygon
    parts outside the image (clipped), zero-area polygons and boxes (dropped).
    Dispatched on the annotation's kind; the checkers may fix `ann.data` in place (clip).
    """
    check = _GEOMETRY_CHECKS.get(ann.kind)
    if check is None:
        return [f"annotation {ann.ann_id}: unsupported segmentation kind {ann.kind!r}"], []
    return check(ann, h, w, f"annotation {ann.ann_id}")


def _check_polygons(ann: Annotation, h: int, w: int, aid: str) -> tuple[list[str], list[str]]:
    polys = ann.data
    if not isinstance(polys, list) or not polys:
        return [f"{aid}: empty segmentation"], []
    errors: list[str] = []
    warns: list[str] = []
    kept = []
    for k, p in enumerate(polys):
        pid = f"{aid} polygon #{k}" if len(polys) > 1 else aid
        arr, error = _polygon_array(p)
        if error:
            errors.append(f"{pid}: {error}")
            continue
        xs, ys = arr[0::2], arr[1::2]
        outside = xs.min() < 0 or ys.min() < 0 or xs.max() > w or ys.max() > h
        area = _clip_area(arr, w, h) if outside else polygon_area(arr)
        if area <= 0:
            what = "lies outside the image" if outside and polygon_area(arr) > 0 else "has zero area"
            warns.append(f"{pid}: polygon {what}; dropped")
            continue
        if outside:
            warns.append(f"{pid}: polygon extends outside the {w}x{h} image; clipped")
        kept.append(clip_polygon(arr, w, h).ravel().tolist() if _far_outside(arr, w, h) else p)
    if not errors:
        ann.data = kept
    return errors, warns


def _polygon_array(p) -> tuple[np.ndarray | None, str | None]:
    """(flat float64 coordinates, None) of a polygon, or (None, what is wrong with it)."""
    if not isinstance(p, (list, tuple)):
        return None, "polygon is not a list of coordinates"
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        return None, "polygon has non-numeric coordinates"
    if arr.ndim != 1 or not np.isfinite(arr).all():
        return None, "polygon has non-numeric coordinates"
    if arr.size % 2:
        return None, f"polygon has an odd number of coordinates ({arr.size})"
    if arr.size < 6:
        return None, f"polygon has {arr.size // 2} point(s), fewer than 3"
    return arr, None


def _check_rle(ann: Annotation, h: int, w: int, aid: str) -> tuple[list[str], list[str]]:
    rle = ann.data
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        return [f"{aid}: RLE segmentation needs 'size' and 'counts'"], []
    try:
        rh, rw = (int(v) for v in rle["size"])
    except (TypeError, ValueError, OverflowError):
        return [f"{aid}: RLE 'size' must be [height, width]"], []
    if (rh, rw) != (h, w):
        return [f"{aid}: RLE size {rw}x{rh} differs from the image size {w}x{h}"], []
    if isinstance(rle["counts"], list):
        try:
            counts = np.asarray(rle["counts"], dtype=np.float64)
        except (TypeError, ValueError):
            return [f"{aid}: RLE counts are not integers"], []
        if counts.ndim != 1 or not np.isfinite(counts).all() or (counts != np.round(counts)).any():
            return [f"{aid}: RLE counts are not integers"], []
        if (counts < 0).any():
            return [f"{aid}: RLE counts are negative"], []
        total = int(counts.sum())
        if total != h * w:
            return [f"{aid}: RLE counts sum to {total}, not {h}*{w} = {h * w}"], []
    elif not isinstance(rle["counts"], (str, bytes)):
        return [f"{aid}: RLE counts must be a list or a string"], []
    return [], []


def _check_box(ann: Annotation, h: int, w: int, aid: str) -> tuple[list[str], list[str]]:
    try:
        x, y, bw, bh = (float(v) for v in ann.data)
    except (TypeError, ValueError, OverflowError):
        return [f"{aid}: bbox must be [x, y, w, h]"], []
    if not all(np.isfinite([x, y, bw, bh])):
        return [f"{aid}: bbox {_fmt(ann.data)} has a non-finite coordinate"], []
    if bw < 0 or bh < 0:
        return [f"{aid}: bbox {_fmt(ann.data)} has a negative width or height"], []
    box = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
    if bw == 0 or bh == 0 or _clip_area(box, w, h) <= 0:
        ann.data = None
        return [], [f"{aid}: box has zero area inside the image; dropped"]
    if _far_outside(np.asarray(box), w, h):
        ann.data = _clipped_box(x, y, bw, bh, w, h)
    return [], []


def _check_shape(ann: Annotation, h: int, w: int, aid: str) -> tuple[list[str], list[str]]:
    from panoptic_detr.data.formats.labelme import check_shape

    return [f"{aid}: {e}" for e in check_shape(ann.data, h, w)], []


_GEOMETRY_CHECKS = {"polygons": _check_polygons, "rle": _check_rle, "box": _check_box, "shape": _check_shape}


def _fmt(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _clipped_box(x: float, y: float, bw: float, bh: float, w: int, h: int) -> list[float]:
    x0, y0 = max(x, -1.0), max(y, -1.0)
    return [x0, y0, min(x + bw, w + 1.0) - x0, min(y + bh, h + 1.0) - y0]


def annotation_rle(ann: Annotation, h: int, w: int):
    """The annotation's mask as one compressed RLE (None if it has no area)."""
    if ann.kind == "polygons":
        polys = [list(map(float, p)) for p in ann.data]
        if not polys:
            return None
        rles = mask_utils.frPyObjects(polys, h, w)
        return mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    if ann.kind == "rle":
        rle = ann.data
        if isinstance(rle["counts"], list):
            return mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in rle["counts"]]}, h, w)
        counts = rle["counts"]
        return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    if ann.kind == "box":
        if ann.data is None:
            return None
        x, y, bw, bh = (float(v) for v in ann.data)
        return mask_utils.frPyObjects([[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], h, w)[0]
    if ann.kind == "shape":
        from panoptic_detr.data.formats.labelme import shape_mask

        m = shape_mask(ann.data, h, w)
        return encode_mask(m) if m.any() else None
    raise ValueError(ann.kind)


def decode_rle(rle) -> np.ndarray:
    """Compressed RLE -> bool [H, W] (Fortran-ordered, as pycocotools returns it)."""
    return mask_utils.decode(rle).view(bool)


def encode_mask(mask: np.ndarray) -> dict:
    """bool [H, W] -> compressed RLE with `counts` as str (JSON-ready). A Fortran-ordered
    mask (e.g. `fortran_id_map == k`) is encoded without a copy."""
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
