"""Stage 3, stuff: the first layer of an image's id map, before its annotated objects.

Where the stuff of an image comes from (`StuffLabeller.mode`):
- "own": a COCO-panoptic input keeps its segments (things as instances, stuff merged);
- "truth": the true stuff of a custom image (`--stuff-truth`, matched by file name);
- "teacher": the teacher's prediction (with both, the teacher labels train, truth val);
- "none": VOID.
Every source map goes through `_relabel` once: its segments are mapped to the class map's
categories, stuff merged into one segment per class, unmapped segments become VOID.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.class_map import IGNORE, ClassMap
from panoptic_detr.data.formats.coco_panoptic import PanopticImage, read_coco_panoptic
from panoptic_detr.data.formats.panoptic_sources import read_checked_png
from panoptic_detr.data.prepare.item import Item, load_pixels, stem
from panoptic_detr.data.prepare.options import Teacher
from panoptic_detr.data.preprocess import resize_nearest
from panoptic_detr.errors import DataError

__all__ = ["MASK_FILL", "Segments", "StuffTruth", "StuffLabeller"]

MASK_FILL = (124, 116, 104)  # ImageNet mean colour: what the teacher sees where things were masked out


class Segments:
    """The segments (id, category_id, iscrowd) of the image being built: ids 1, 2, ... in
    creation order, one segment per stuff category."""

    def __init__(self):
        self.list: list[dict] = []
        self._stuff: dict[int, int] = {}

    def new(self, cat_id: int, iscrowd: int = 0) -> int:
        sid = len(self.list) + 1
        self.list.append({"id": sid, "category_id": cat_id, "iscrowd": int(iscrowd)})
        return sid

    def stuff(self, cat_id: int) -> int:
        if cat_id not in self._stuff:
            self._stuff[cat_id] = self.new(cat_id)
        return self._stuff[cat_id]


class StuffTruth:
    """The true stuff of custom images (`--stuff-truth JSON PNG_DIR`), matched by file name."""

    def __init__(self, json_path: str | os.PathLike, png_dir: str | os.PathLike):
        self.source = str(json_path)  # as given, for messages
        self.json_path, self.png_dir = Path(json_path), Path(png_dir)
        pset = read_coco_panoptic(self.json_path)
        self.names = {cid: str(c["name"]) for cid, c in pset.categories.items()}
        self.index: dict[str, PanopticImage] = {}
        for pim in pset.images:
            for k in (pim.file_name, stem(pim.file_name), Path(pim.file_name).name, stem(Path(pim.file_name).name),
                      stem(pim.png_name)):
                self.index.setdefault(k, pim)

    def match(self, items: list[Item]) -> dict:
        """Set `it.truth` of every custom item found; the input description for dataset.yaml."""
        for it in items:
            if it.src.kind != "custom":
                continue
            for k in (it.src.relpath, stem(it.src.relpath), it.name, stem(it.name)):
                if k and k in self.index:
                    it.truth = self.index[k]
                    break
        matched = sum(1 for it in items if it.truth is not None)
        return {"kind": "stuff-truth", "path": str(self.json_path), "png_dir": str(self.png_dir), "matched_images": matched}

    def read_map(self, it: Item) -> np.ndarray:
        pim = it.truth
        where = f"{self.source}: image id {pim.image_id}"
        return read_checked_png(self.png_dir / pim.png_name, pim.segments, it.src.height, it.src.width, where)


def _teacher_parts(out):
    if isinstance(out, tuple) and len(out) == 3:
        id_map, segs, cats = out
    else:  # a PanopticOutput-like object
        id_map, segs, cats = out.id_map, out.segments_info, getattr(out, "categories", None)
    if hasattr(id_map, "detach"):
        id_map = id_map.detach().cpu().numpy()
    return np.asarray(id_map), list(segs), cats


def _category_names(cats) -> dict[int, str]:
    if cats is None:
        return {}
    if isinstance(cats, CategoryList):
        return {c.id: c.name for c in cats}
    if isinstance(cats, dict):
        return {int(k): (v["name"] if isinstance(v, dict) else str(v)) for k, v in cats.items()}
    out = {}
    for c in cats:
        if isinstance(c, dict):
            out[int(c["id"])] = str(c["name"])
        else:
            out[int(c.id)] = str(c.name)
    return out


def _relabel(src_map: np.ndarray, segments: list[dict], target_of: Callable[[dict], int | None],
             keep_things: bool, cats: CategoryList, segs: Segments) -> np.ndarray:
    """`src_map` with every segment's id replaced by its new segment id: stuff merged per
    category, things new instances (`keep_things`) or VOID, unmapped segments VOID (0)."""
    table: dict[int, int] = {}
    for s in segments:
        target = target_of(s)
        if target is None:
            continue
        if not cats.by_id[target].isthing:
            table[int(s["id"])] = segs.stuff(target)
        elif keep_things:
            table[int(s["id"])] = segs.new(target, int(s.get("iscrowd", 0) or 0))
    if not table:
        return np.zeros(src_map.shape, np.int32)
    keys = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[k] for k in keys.tolist()], dtype=np.int32)
    flat = src_map.astype(np.int64, copy=False)
    idx = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
    return np.where(keys[idx] == flat, vals[idx], 0).astype(np.int32)


class StuffLabeller:
    """Makes the stuff layer of each image from its source (see the module docstring)."""

    def __init__(self, cmap: ClassMap, cats: CategoryList, teacher: Teacher | None, mask_things: bool,
                 truth: StuffTruth | None):
        self.cmap, self.cats = cmap, cats
        self.teacher, self.mask_things, self.truth = teacher, mask_things, truth
        # image id -> the teacher's answer (or the error of loading its image), when the
        # teacher ran ahead on a window of images (`teach.py`); else it is asked per image
        self.answers: dict[int, object] = {}

    def mode(self, it: Item) -> str:
        if it.src.kind != "custom":
            return "own"
        if self.teacher is not None and it.truth is not None:
            return "truth" if it.split == "val" else "teacher"
        if it.truth is not None:
            return "truth"
        return "teacher" if self.teacher is not None else "none"

    def _stuff_by_name(self, names: dict[int, str]) -> Callable[[dict], int | None]:
        """Segment -> its class-map category id by its category's name (None: VOID)."""
        def target_of(s: dict) -> int | None:
            target = self.cmap.resolve(names.get(int(s["category_id"]), str(s["category_id"])))
            return None if target is None or target == IGNORE else self.cats.by_name[target].id

        return target_of

    def stuff_map(self, it: Item, mode: str, segs: Segments, thing_masks: list) -> np.ndarray:
        """The int32 id map of the stuff of `it` (ids from `segs`); `thing_masks`: the
        (mask, window) of its annotated things (masked out for the teacher if asked)."""
        src = it.src
        h, w = src.height, src.width
        if mode == "own":
            src_ids = read_checked_png(src.png_path, src.segments, h, w, src.where)
            return _relabel(src_ids, src.segments, lambda s: it.seg_map.get(int(s["category_id"])), True,
                            self.cats, segs)
        if mode == "truth":
            return _relabel(self.truth.read_map(it), it.truth.segments, self._stuff_by_name(self.truth.names), False,
                            self.cats, segs)
        if mode == "teacher":
            if it.image_id in self.answers:  # asked ahead, with a window of images
                answer = self.answers.pop(it.image_id)
                if isinstance(answer, Exception):
                    raise answer
            else:
                answer = self.teacher(self.teacher_image(it, thing_masks))
            t_map, t_segs, t_cats = _teacher_parts(answer)
            t_map = resize_nearest(t_map.astype(np.int64, copy=False), (h, w))
            target_of = self._stuff_by_name(_category_names(t_cats))
            if it.annotated is not None and self.cmap.misc is not None:
                # partial labels: what the teacher calls a thing (always VOID here) or `misc`
                # may be one of the unlabelled objects; VOID, not misc, so that no query learns
                # to call an unlabelled transit mixer "misc" (docs/DESIGN.md, partial labels)
                misc_id = self.cats.by_name[self.cmap.misc].id
                stuff_of = target_of

                def target_of(s: dict) -> int | None:
                    t = stuff_of(s)
                    return None if t == misc_id else t

            return _relabel(t_map, t_segs, target_of, False, self.cats, segs)
        return np.zeros((h, w), np.int32)

    def teacher_image(self, it: Item, thing_masks: list) -> np.ndarray:
        """What the teacher sees of `it`: its pixels, the annotated things greyed out
        (`MASK_FILL`) with `mask_things`. `thing_masks`: (mask, window) of its things."""
        src = it.src
        h, w = src.height, src.width
        image = load_pixels(it)
        if image.shape[:2] != (h, w):
            raise DataError(f"{src.where}: decoded image is {image.shape[1]}x{image.shape[0]}, expected {w}x{h}")
        if self.mask_things and thing_masks:
            union = np.zeros((h, w), bool)
            for m, win in thing_masks:
                union[win] |= m[win]
            if union.any():
                image = image.copy()
                image[union] = MASK_FILL
        return image
