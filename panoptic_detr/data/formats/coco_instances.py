"""COCO instances input (CVAT "COCO 1.0" exports and COCO itself), and the instances writer.

`read_things(path, class_map)` accepts:
- a COCO instances JSON file; images are looked up beside it, under `images/` beside it,
  or (CVAT layout `annotations/instances_default.json`) under `../images/`;
- a CVAT export folder (`coco.json` or `annotations/*.json` inside, plus `images/`);
- a folder of per-class exports, one subfolder per class (`<class>/coco.json` +
  `<class>/images/img_NNN.png`), read in sorted folder order. Image ids restart at 1 in
  every folder: images are identified by (folder, id) and re-numbered by `prepare`.
  Folder names may differ from class names (`cvat_folder_aliases` in the class map).

Output names: a single export keeps the images' base names; a per-class folder's images
are named `<class>_<base name>` (the class the folder resolves to, else the folder name
with unsafe characters replaced), so `img_001.png` of two folders never collide.

Tolerated quirks: float `bbox`/`area` (recomputed later), extra keys, `segmentation`
as polygons, uncompressed RLE (`counts` a list) or compressed RLE (a string), empty
segmentation with a bbox (filled as a rectangle, with a warning).

Crowd (`crowd`): CVAT writes every brush-tool mask as RLE with `iscrowd: 1`
(cvat-ai/cvat#7030), which would make them crowd regions that training ignores. With
`crowd="auto"` (the default) the RLE masks marked crowd of a CVAT export (its
annotations carry CVAT's `attributes: {occluded: ...}`) are read as ordinary instances,
with one counted warning per file; other files keep their crowds (COCO's are real).
`"instances"`: every crowd annotation is read as an instance; `"keep"`: crowds stay.

Annotation ids must be unique within a file (as image ids).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from panoptic_detr.data.class_map import IGNORE
from panoptic_detr.data.formats.common import Annotation, SourceImage
from panoptic_detr.errors import DataError, PanopticDetrError
from panoptic_detr.utils.io import read_json

__all__ = ["read_things", "read_instances_json", "find_export_json", "instances_json", "safe_name", "CROWD_MODES"]

CROWD_MODES = ("auto", "keep", "instances")

_EXPORT_NAMES = ("coco.json", "instances_default.json", "annotations.json")


def safe_name(s: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", s).strip("_") or "x"


def find_export_json(folder: Path) -> Path | None:
    """The annotation JSON of a CVAT-style export folder, or None."""
    for n in _EXPORT_NAMES:
        if (folder / n).is_file():
            return folder / n
    ann_dir = folder / "annotations"
    if ann_dir.is_dir():
        found = sorted(ann_dir.glob("instances*.json")) or sorted(ann_dir.glob("*.json"))
        if found:
            return found[0]
    return None


def read_things(path: str | os.PathLike, class_map=None, crowd: str = "auto", warnings: list | None = None
                ) -> tuple[list[SourceImage], list[str]]:
    """All images of a `--things` input. Returns (images, file-level problems); file-level
    warnings (crowd masks read as instances) are appended to `warnings` when given."""
    if crowd not in CROWD_MODES:
        raise ValueError(f"crowd must be one of {CROWD_MODES}, got {crowd!r}")
    path = Path(path)
    warnings = [] if warnings is None else warnings
    if path.is_file():
        return _read_one(path, path.parent, None, crowd, warnings)
    if not path.is_dir():
        return [], [f"{path}: not found (--things takes a COCO JSON file or a folder of exports)"]
    own = find_export_json(path)
    if own is not None:
        return _read_one(own, path, None, crowd, warnings)
    images: list[SourceImage] = []
    problems: list[str] = []
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        return [], [f"{path}: no COCO JSON and no per-class export folders inside"]
    for sub in subdirs:
        js = find_export_json(sub)
        if js is None:
            problems.append(f"{sub}: no coco.json (or annotations/*.json) in this export folder")
            continue
        cls = class_map.resolve(sub.name, folder=True) if class_map is not None else None
        prefix = cls if isinstance(cls, str) and cls != IGNORE else safe_name(sub.name)
        imgs, probs = _read_one(js, path, prefix, crowd, warnings)
        if isinstance(cls, str) and cls != IGNORE:
            for im in imgs:  # a per-class export: only its class was labelled exhaustively
                im.annotated = [cls]
        images += imgs
        problems += probs
    return images, problems


def _resolve_image(json_path: Path, file_name: str) -> Path | None:
    base = json_path.parent
    rel = Path(file_name)
    candidates = [base / rel, base / "images" / rel, base.parent / "images" / rel]
    if rel.name != file_name:
        candidates += [base / rel.name, base / "images" / rel.name, base.parent / "images" / rel.name]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _is_cvat(annotations: list) -> bool:
    """CVAT's COCO export gives every annotation `attributes: {"occluded": ...}`."""
    return any(isinstance(a, dict) and isinstance(a.get("attributes"), dict) and "occluded" in a["attributes"]
               for a in annotations)


def _read_one(json_path: Path, root: Path, prefix: str | None, crowd: str = "auto", warnings: list | None = None
              ) -> tuple[list[SourceImage], list[str]]:
    try:
        data = read_json(json_path)
    except PanopticDetrError as e:
        return [], [str(e)]
    src = str(json_path)
    if not isinstance(data, dict):
        return [], [f"{src}: not a COCO instances JSON (expected an object)"]
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            return [], [f"{src}: not a COCO instances JSON (no '{key}' list)"]
    problems: list[str] = []
    cats: dict = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            problems.append(f"{src}: category #{i} needs 'id' and 'name'")
            continue
        cats[_key(c["id"])] = str(c["name"])
    by_id: dict = {}
    out: list[SourceImage] = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            problems.append(f"{src}: image #{i} needs 'id' and 'file_name'")
            continue
        iid = _key(im["id"])
        ref = f"image id {im['id']}"
        if iid in by_id:
            problems.append(f"{src}: {ref}: image id listed twice")
            continue
        fname = str(im["file_name"])
        img_path = _resolve_image(json_path, fname)
        base = Path(fname).name
        name = f"{prefix}_{base}" if prefix else base
        w, h = im.get("width"), im.get("height")
        try:
            w, h = (int(w), int(h)) if w is not None and h is not None else (None, None)
        except (TypeError, ValueError, OverflowError):
            w = h = None
        rel = (img_path.relative_to(root).as_posix() if img_path is not None and _is_under(img_path, root) else fname)
        item = SourceImage(name=name, source=src, ref=ref, image_path=img_path, width=w, height=h, relpath=rel)
        if img_path is None:
            item.problems.append(f"{src}: {ref}: image file '{fname}' not found (looked beside the JSON and under images/)")
        if w is None or h is None or w <= 0 or h <= 0:
            item.problems.append(f"{src}: {ref}: missing or invalid width/height")
        by_id[iid] = item
        out.append(item)
    for item in out:  # a single export annotates the classes it lists
        item.annotated = list(dict.fromkeys(cats.values()))
    ann_problems, n_crowd = _read_annotations(data["annotations"], src, cats, by_id, crowd)
    problems += ann_problems
    if n_crowd and warnings is not None:
        if crowd == "auto":
            warnings.append(f"{src}: {n_crowd} RLE mask(s) marked iscrowd 1 read as ordinary instances (a CVAT export: "
                            "CVAT marks every brush-tool mask as crowd, cvat-ai/cvat#7030); pass --crowd keep to keep "
                            "them as crowd regions")
        else:
            warnings.append(f"{src}: {n_crowd} crowd annotation(s) (iscrowd 1) read as ordinary instances (--crowd instances)")
    return out, problems


def _read_annotations(anns: list, src: str, cats: dict, by_id: dict, crowd: str) -> tuple[list[str], int]:
    """Each annotation onto its image (`by_id`); (file-level problems, number of crowd
    annotations read as instances)."""
    to_instances = "all" if crowd == "instances" else ("rle" if crowd == "auto" and _is_cvat(anns) else None)
    problems: list[str] = []
    seen: dict = {}
    n_crowd = 0
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            problems.append(f"{src}: annotation #{i} is not an object")
            continue
        aid = a.get("id", f"#{i}")
        item = by_id.get(_key(a.get("image_id")))
        if item is None:
            problems.append(f"{src}: annotation {aid}: unknown image_id {a.get('image_id')!r}")
            continue
        if "id" in a and _key(aid) in seen:
            item.problems.append(f"{src}: {item.ref} annotation {aid}: annotation id listed twice "
                                 f"(also on {seen[_key(aid)]})")
            continue
        if "id" in a:
            seen[_key(aid)] = item.ref
        if _key(a.get("category_id")) not in cats:
            item.problems.append(f"{src}: {item.ref} annotation {aid}: unknown category_id {a.get('category_id')!r}")
            continue
        label = cats[_key(a["category_id"])]
        try:
            iscrowd = int(a.get("iscrowd", 0) or 0)
        except (TypeError, ValueError, OverflowError):
            iscrowd = 0
        seg = a.get("segmentation")
        if isinstance(seg, dict):
            ann = Annotation(aid, label, "rle", seg, iscrowd)
        elif isinstance(seg, list) and seg:
            # a flat list of numbers is one polygon
            polys = [seg] if all(isinstance(v, (int, float)) for v in seg) else seg
            ann = Annotation(aid, label, "polygons", polys, iscrowd)
        elif a.get("bbox") and (seg is None or seg == []):
            ann = Annotation(aid, label, "box", a["bbox"], iscrowd)
            item.warnings.append(f"{src}: {item.ref} annotation {aid}: no segmentation; its bbox is filled as a rectangle")
        else:
            item.problems.append(f"{src}: {item.ref} annotation {aid}: no segmentation and no bbox")
            continue
        if ann.iscrowd and (to_instances == "all" or (to_instances == "rle" and ann.kind == "rle")):
            ann.iscrowd = 0
            n_crowd += 1
        item.annotations.append(ann)
    return problems, n_crowd


def _key(v):
    return repr(v) if isinstance(v, (list, dict)) else v


def _is_under(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def read_instances_json(path: str | os.PathLike) -> dict:
    """A COCO instances JSON as a dict, with a one-line error when it is not one."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO instances JSON")
    return data


def instances_json(images: list[dict], annotations: list[dict], categories: list[dict], info: dict | None = None) -> dict:
    """A COCO instances JSON object (annotations with RLE `segmentation`): the same top-level
    layout as a COCO-panoptic file."""
    from panoptic_detr.data.formats.coco_panoptic import panoptic_json

    return panoptic_json(images, annotations, categories, info)
