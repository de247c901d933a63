"""Stage 3b, paint: one image's id map = its stuff layer, then its annotated objects.

Objects are painted in their file order: first annotations whose class is stuff (e.g. COCO
things folded into `misc`), then things. Things always win over stuff; among overlapping
things the later annotation wins (CVAT exports annotated front-to-back); a thing hidden
entirely is dropped with a warning. labelme's regions are painted among the things in
file order: `__ignore__` makes its pixels VOID, `_background_` shows the stuff layer again
(a hole in the shapes before it); annotations sharing an `instance` key (labelme groups)
paint one segment.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.formats.common import annotation_rle, decode_rle
from panoptic_detr.data.prepare.item import BACKGROUND_REGION, VOID_REGION, Item
from panoptic_detr.data.prepare.stuff import Segments, StuffLabeller

__all__ = ["build_id_map", "thing_masks"]


def _decode_masks(it: Item) -> list[tuple]:
    """(annotation, category id, mask, window) of every kept annotation; the window is the
    mask's bbox (all of the mask lies in it), so painting touches only that."""
    src = it.src
    masks = []
    for ann, cat_id in zip(src.annotations, it.cats):
        if cat_id is None:
            continue
        rle = annotation_rle(ann, src.height, src.width)
        if rle is None:
            continue
        x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
        if bw <= 0 or bh <= 0:
            continue
        masks.append((ann, cat_id, decode_rle(rle), (slice(y, y + bh), slice(x, x + bw))))
    return masks


def thing_masks(it: Item, cats: CategoryList) -> list[tuple]:
    """(mask, window) of the annotated things of `it`: what `mask_things` hides from the teacher."""
    return [(m, win) for _, cat_id, m, win in _decode_masks(it) if cat_id > 0 and cats.by_id[cat_id].isthing]


def build_id_map(it: Item, mode: str, labeller: StuffLabeller, cats: CategoryList
                 ) -> tuple[np.ndarray, list[dict], list[str]]:
    """The id map and segments (id, category_id, iscrowd) of one image, plus warnings."""
    segs = Segments()
    masks = _decode_masks(it)  # first: the teacher may need the union of the things
    layer = [(ann, cat_id, m, win) for ann, cat_id, m, win in masks if cat_id > 0 and not cats.by_id[cat_id].isthing]
    top = [(ann, cat_id, m, win) for ann, cat_id, m, win in masks if cat_id <= 0 or cats.by_id[cat_id].isthing]
    things = [(m, win) for _, cat_id, m, win in top if cat_id > 0]
    id_map = labeller.stuff_map(it, mode, segs, things)
    for ann, cat_id, m, win in layer:
        id_map[win][m[win]] = segs.stuff(cat_id)
    below = id_map.copy() if any(cat_id == BACKGROUND_REGION for _, cat_id, _, _ in top) else None
    thing_segs = []
    instances: dict = {}
    for ann, cat_id, m, win in top:
        if cat_id == VOID_REGION:
            id_map[win][m[win]] = 0
        elif cat_id == BACKGROUND_REGION:
            id_map[win][m[win]] = below[win][m[win]]
        elif ann.instance is not None and (ann.instance, cat_id) in instances:
            id_map[win][m[win]] = instances[(ann.instance, cat_id)]
        else:
            sid = segs.new(cat_id, ann.iscrowd)
            id_map[win][m[win]] = sid
            thing_segs.append((ann, sid))
            if ann.instance is not None:
                instances[(ann.instance, cat_id)] = sid
    warns: list[str] = []
    if thing_segs:
        n = len(segs.list)
        present = np.bincount(id_map.ravel(), minlength=n + 1) if n < 4096 else None
        for ann, sid in thing_segs:
            if present is not None and present[sid] == 0:
                warns.append(f"{it.src.where} annotation {ann.ann_id}: entirely covered by later annotations; dropped")
    return id_map, segs.list, warns
