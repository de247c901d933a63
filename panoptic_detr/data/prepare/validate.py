"""Stage 2, validate: every image and annotation against the class map (no pixels decoded).

Each problem is one line naming the file and the item; an image with a problem is marked
bad (whole images are dropped with `skip_bad`, so no unlabelled object stays in a kept one).
"""

from __future__ import annotations

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.class_map import IGNORE, ClassMap, _is_all_coco, normalise_name
from panoptic_detr.data.formats.common import SourceImage, check_geometry
from panoptic_detr.data.prepare.item import BACKGROUND_REGION, VOID_REGION, Item, image_header, stem
from panoptic_detr.errors import PanopticDetrError

__all__ = ["validate_sources", "stuff_group_warnings"]


class _Validator:
    def __init__(self, cmap: ClassMap, cats: CategoryList, header=image_header):
        self.cmap, self.cats, self.header = cmap, cats, header
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
        it.annotated = self._annotated(src)
        if probs:
            it.bad = True
            self.problems += probs
        return it

    def _annotated(self, src: SourceImage) -> set | None:
        """The thing ids whose every instance is annotated in `src` (None: all things)."""
        if src.annotated is None:
            return None
        out = set()
        for name in src.annotated:
            target = self.cmap.resolve(name)
            if target is not None and target != IGNORE and self.cats.by_name[target].isthing:
                out.add(self.cats.by_name[target].id)
        all_things = {c.id for c in self.cats if c.isthing}
        return None if out >= all_things else out

    def _check_size(self, it: Item, probs: list[str]) -> bool:
        """Whether the annotation's size is known and matches the image header."""
        src = it.src
        size_ok = src.width is not None and src.height is not None
        if src.image_path is None and src.image_bytes is None:
            return size_ok
        try:
            w, h, it.orientation = self.header(src)
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
            if ann.role != "object":  # labelme's __ignore__ / _background_ regions
                errs, warns = check_geometry(ann, src.height, src.width) if size_ok else ([], [])
                probs += [f"{src.source}: {src.ref} {e}" for e in errs]
                self.warnings += [f"{src.source}: {src.ref} {w_}" for w_ in warns]
                it.cats.append(None if errs else (VOID_REGION if ann.role == "void" else BACKGROUND_REGION))
                continue
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


def validate_sources(sources: list[SourceImage], cmap: ClassMap, cats: CategoryList, progress: bool = False,
                     header=image_header) -> tuple[list[Item], list[str], list[str]]:
    """(items, problems, warnings) of every source image, in input order (every image is
    decoded once, so a progress bar when `progress`). `header(src)`: `item.image_header`,
    or its results computed beforehand in worker processes (`parallel.read_headers`)."""
    v = _Validator(cmap, cats, header)
    seq = sources
    if progress:
        from tqdm import tqdm

        seq = tqdm(sources, desc="validate", unit="img", leave=False, dynamic_ncols=True)
    items = [v.item(src) for src in seq]
    v.mark_duplicates(items)
    return items, v.problems, v.warnings


def stuff_group_warnings(cmap: ClassMap, sources: list[SourceImage], truth_names: dict | None = None,
                         truth_source: str | None = None) -> list[str]:
    """One warning per name of a class-map stuff group that no COCO-panoptic input (nor the
    stuff truth, nor any annotation label) has: a misspelt name leaves its group silently
    empty. Checked only when there is a COCO-panoptic input or a stuff truth (a teacher's
    categories are known only when it runs)."""
    panoptic = [s for s in sources if s.kind == "panoptic"]
    files = list(dict.fromkeys(s.source for s in panoptic)) + ([truth_source] if truth_names is not None else [])
    if not files:
        return []
    have: set[str] = set()
    for s in panoptic:
        have |= set(s.seg_labels.values())
    have |= set((truth_names or {}).values())
    for s in sources:
        have |= {a.label for a in s.annotations}
    have_norm = {normalise_name(n) for n in have}
    out = []
    for group, names in cmap.stuff.items():
        for n in names:
            if _is_all_coco(n) or n in have or normalise_name(n) in have_norm:
                continue
            out.append(f"{cmap.source}: stuff group '{group}' lists '{n}', a category that the COCO-panoptic "
                       f"input(s) do not have ({', '.join(files)}); nothing folds into '{group}' under that name")
    return out
