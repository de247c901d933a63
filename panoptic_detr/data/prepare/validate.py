"""Stage 2, validate: every image and annotation against the class map (no pixels decoded).

Each problem is one line naming the file and the item; an image with a problem is marked
bad (whole images are dropped with `skip_bad`, so no unlabelled object stays in a kept one).
"""

from __future__ import annotations

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.class_map import IGNORE, ClassMap
from panoptic_detr.data.formats.common import SourceImage, check_geometry
from panoptic_detr.data.prepare.item import Item, image_header, stem
from panoptic_detr.errors import PanopticDetrError

__all__ = ["validate_sources"]


class _Validator:
    def __init__(self, cmap: ClassMap, cats: CategoryList):
        self.cmap, self.cats = cmap, cats
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.unknown_seen: set = set()  # (source, label or category id) already reported

    def item(self, src: SourceImage) -> Item:
        it = Item(src)
        probs = list(src.problems)
        self.warnings += src.warnings
        size_ok = self._check_size(it, probs)
        self._resolve_annotations(it, size_ok, probs)
        if src.kind == "panoptic":
            self._resolve_segments(it)
        if probs:
            it.bad = True
            self.problems += probs
        return it

    def _check_size(self, it: Item, probs: list[str]) -> bool:
        """Whether the annotation's size is known and matches the image header."""
        src = it.src
        size_ok = src.width is not None and src.height is not None
        if src.image_path is None and src.image_bytes is None:
            return size_ok
        try:
            w, h, it.orientation = image_header(src)
        except PanopticDetrError as e:
            probs.append(str(e))
            return size_ok
        if src.kind == "panoptic" and not size_ok:
            src.width, src.height = w, h
            return True
        if size_ok and (w, h) != (src.width, src.height):
            probs.append(f"{src.source}: {src.ref}: image {src.name} is {w}x{h} but the annotation says {src.width}x{src.height}")
            return False
        return size_ok

    def _resolve_annotations(self, it: Item, size_ok: bool, probs: list[str]) -> None:
        """`it.cats`: each annotation's category id, None where it is dropped."""
        src = it.src
        for ann in src.annotations:
            target = self.cmap.resolve(ann.label)
            if target is None:
                first = (src.source, ann.label) not in self.unknown_seen
                self.unknown_seen.add((src.source, ann.label))
                msg = self.cmap.unknown_message(ann.label) if first else f"unknown category '{ann.label}' (see above)"
                probs.append(f"{src.source}: {src.ref} annotation {ann.ann_id}: {msg}")
                it.cats.append(None)
                continue
            if target == IGNORE:
                it.cats.append(None)
                continue
            cat = self.cats.by_name[target]
            if size_ok:
                errs, warns = check_geometry(ann, src.height, src.width)
                probs += [f"{src.source}: {src.ref} {e}" for e in errs]
                self.warnings += [f"{src.source}: {src.ref} {w_}" for w_ in warns]
                if errs or (ann.kind == "polygons" and not ann.data) or (ann.kind == "box" and ann.data is None):
                    it.cats.append(None)
                    continue
            it.cats.append(cat.id)
            if cat.isthing:
                it.thing_classes.add(cat.id)

    def _resolve_segments(self, it: Item) -> None:
        """`it.seg_map` of a COCO-panoptic image: its category ids -> target ids (None: VOID)."""
        src = it.src
        for s in src.segments:
            cid = int(s["category_id"])
            if cid in it.seg_map:
                continue
            name = src.seg_labels.get(cid, str(cid))
            target = self.cmap.resolve(name)
            if target is None or target == IGNORE:
                if target is None and (src.source, cid) not in self.unknown_seen:
                    self.unknown_seen.add((src.source, cid))
                    self.warnings.append(f"{src.source}: category '{name}' (id {cid}) is not in the class map; its segments become VOID")
                it.seg_map[cid] = None
            else:
                it.seg_map[cid] = self.cats.by_name[target].id
        for s in src.segments:
            t = it.seg_map.get(int(s["category_id"]))
            if t is not None and self.cats.by_id[t].isthing:
                it.thing_classes.add(t)

    def mark_duplicates(self, items: list[Item]) -> None:
        """Two images with one stem would write one PNG: the later is bad."""
        by_stem: dict[str, Item] = {}
        for it in items:
            first = by_stem.setdefault(stem(it.name), it)
            if first is it:
                continue
            it.bad = True
            self.problems.append(
                f"{it.src.source}: {it.src.ref}: duplicate file name '{it.name}' (also {first.src.where}, as '{first.name}')"
            )


def validate_sources(sources: list[SourceImage], cmap: ClassMap, cats: CategoryList
                     ) -> tuple[list[Item], list[str], list[str]]:
    """(items, problems, warnings) of every source image, in input order."""
    v = _Validator(cmap, cats)
    items = [v.item(src) for src in sources]
    v.mark_duplicates(items)
    return items, v.problems, v.warnings
