"""`prepare`: build one COCO-panoptic dataset from annotated things and panoptic stuff.

Inputs (any mix): COCO instances exports of things (`--things`, CVAT "COCO 1.0" files or
folders of per-class exports, see `formats.coco_instances`), labelme folders
(`--labelme`), COCO-panoptic sets (`--coco-panoptic JSON PNG_DIR IMAGE_DIR`), and a class
map (`data.class_map`) that names the dataset's classes and folds every input name into
one of them. Output (`out/`), readable by the COCO panopticapi::

    images/{train,val}/<name>             the images (copied; EXIF-rotated ones re-encoded upright)
    panoptic/{train,val}/<stem>.png       RGB-encoded segment ids (id = R + 256 G + 256^2 B; 0 = VOID)
    annotations/panoptic_{train,val}.json segments_info: id, category_id, iscrowd, bbox, area (from the PNG)
    annotations/instances_{train,val}.json  thing segments as COCO instances (RLE masks), for box/mask AP
    categories.json                       the class map's categories (ids 1..C, see data.class_map)
    dataset.yaml                          what was built from what (inputs, options, counts)
    prepare-report.txt                    warnings and skipped items (only when there are any)

How each image's id map is made:
1. Stuff. Custom images (things only: `--things`, `--labelme`) take their stuff from the
   teacher (`--stuff-from CKPT`, or the `teacher` callable of the API), from the true
   stuff (`--stuff-truth JSON PNG_DIR`, matched by file name), or nothing (VOID). With both
   teacher and truth, the teacher labels the train split and the truth the val split (an
   honest val score). COCO-panoptic images keep their own segments. Every segment's
   category name goes through the class map; segments that land on a stuff class are kept
   and merged (one segment per stuff class and image); segments that land on a thing class
   are kept as instances for COCO-panoptic inputs, dropped (VOID) for teacher/truth stuff;
   unknown names become VOID (with a warning).
2. Annotated objects are painted over the stuff, in their file order: first annotations
   whose class is stuff (e.g. COCO things folded into `misc`), then things. Things always
   win over stuff; among overlapping things the later annotation wins (for CVAT exports
   annotated front-to-back this is the usual z-order; a thing hidden entirely is dropped
   with a warning). Crowd annotations (`iscrowd: 1`) become crowd segments.
3. Everything else is VOID (0).

Image ids are 1..N over the whole dataset in file-name order. The train/val split is
deterministic for (inputs, seed, val ratio) and stratified: every thing class with at
least 2 images has one in val, then val is filled towards `val_ratio` keeping per-class
proportions (images without things count as one more class) and at least one train
image per class.

Bad input: every problem is one line naming the file and the item. By default the first
problem stops the run (exit 2 at the CLI) before anything is written; `check=True` lists
every problem and writes nothing; `skip_bad=True` drops the bad images (whole images, so
no unlabelled object is left in a kept one) and lists them in `prepare-report.txt`. The
output is built under a temporary name and renamed at the end (`utils.io.atomic_dir`).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import yaml
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.class_map import IGNORE, ClassMap
from panoptic_detr.data.formats.coco_instances import instances_json, read_things
from panoptic_detr.data.formats.coco_panoptic import (
    PanopticImage,
    check_png_ids,
    panoptic_json,
    read_coco_panoptic,
    read_id_png,
    segments_from_id_map,
    write_id_png,
)
from panoptic_detr.data.formats.common import SourceImage, annotation_rle, check_geometry, decode_rle, encode_mask
from panoptic_detr.data.formats.labelme import read_labelme_dir
from panoptic_detr.errors import DataError, PanopticDetrError
from panoptic_detr.utils.io import atomic_dir, write_json, write_text

__all__ = ["prepare", "PrepareSummary", "stratified_split", "Teacher", "MASK_FILL"]

# teacher(image HxWx3 uint8) -> (id_map int32 HxW, segments_info, categories)
Teacher = Callable[[np.ndarray], tuple]
MASK_FILL = (124, 116, 104)  # ImageNet mean colour: what the teacher sees where things were masked out
_ORIENTATION = 0x0112


@dataclass
class PrepareSummary:
    out: str | None
    images: dict = field(default_factory=dict)  # split -> number of images
    segments: dict = field(default_factory=dict)  # split -> number of segments
    num_categories: int = 0
    problems: list = field(default_factory=list)  # errors (check mode, or skipped with skip_bad)
    skipped: list = field(default_factory=list)  # names of images left out (skip_bad)
    warnings: list = field(default_factory=list)
    checked: bool = False
    report: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- helpers
@dataclass
class _Item:
    src: SourceImage
    cats: list = field(default_factory=list)  # per annotation: target category id or None (dropped)
    seg_map: dict = field(default_factory=dict)  # panoptic: source category_id -> target id or None
    thing_classes: set = field(default_factory=set)
    orientation: int = 1
    truth: PanopticImage | None = None
    bad: bool = False
    image_id: int = 0
    split: str = "train"

    @property
    def name(self) -> str:
        return self.src.name


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def _image_header(item: SourceImage) -> tuple[int, int, int]:
    """(width, height) as displayed (EXIF orientation applied) and the orientation, from the header."""
    if item.image_bytes is not None:
        fh = io.BytesIO(item.image_bytes)
        where = f"{item.source}: embedded imageData"
    else:
        fh = item.image_path
        where = f"{item.image_path}"
    try:
        with Image.open(fh) as im:
            w, h = im.size
            try:
                orient = int(im.getexif().get(_ORIENTATION, 1) or 1)
            except Exception:
                orient = 1
    except FileNotFoundError:
        raise DataError(f"{item.source}: {item.ref}: image file {where} not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{item.source}: {item.ref}: cannot read image {where} ({msg})") from None
    if orient in (5, 6, 7, 8):
        w, h = h, w
    return w, h, orient


def _load_pixels(item: _Item) -> np.ndarray:
    src = item.src
    where = src.image_path if src.image_bytes is None else f"{src.source}: embedded imageData"
    try:
        with Image.open(src.image_path if src.image_bytes is None else io.BytesIO(src.image_bytes)) as im:
            im.load()
            if item.orientation != 1:
                im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{where}: cannot decode image ({msg}) ({src.ref})") from None


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


def _resize_nearest(id_map: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = id_map.shape
    rows = np.minimum((np.arange(h) * H) // h, H - 1)
    cols = np.minimum((np.arange(w) * W) // w, W - 1)
    return id_map[rows[:, None], cols[None, :]]


def _relabel(src_map: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Map the ids of `src_map` through `table` (ids absent from it -> 0)."""
    if not table:
        return np.zeros(src_map.shape, np.int32)
    keys = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[k] for k in keys.tolist()], dtype=np.int32)
    flat = src_map.astype(np.int64, copy=False)
    idx = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
    return np.where(keys[idx] == flat, vals[idx], 0).astype(np.int32)


def stratified_split(
    names: Sequence[str], classes: Sequence[Iterable[int]], val_ratio: float = 0.2, seed: int = 0
) -> list[str]:
    """'train' / 'val' per name: deterministic for (names, classes, ratio, seed), whatever
    the input order. Every class with >= 2 images gets one in val (rarest classes first);
    then val is filled to round(n * val_ratio) images, per-class quotas first, keeping at
    least one train image per class whenever possible."""
    n = len(names)
    if not 0.0 <= val_ratio < 1.0:
        raise DataError(f"--val-ratio must be in [0, 1), got {val_ratio}")
    splits = ["train"] * n
    if n < 2 or val_ratio <= 0:
        return splits
    labels = [frozenset(int(c) for c in cl) for cl in classes]
    order = sorted(range(n), key=lambda i: names[i])
    random.Random(seed).shuffle(order)
    count = Counter(c for lab in labels for c in lab)
    in_train = Counter(count)
    in_val: Counter = Counter()
    val: set[int] = set()
    n_val = min(n - 1, max(1, int(round(n * val_ratio))))

    def can_move(i: int) -> bool:
        return all(in_train[c] > 1 for c in labels[i])

    # images without things form one more group (-1) for the proportions
    ext = [lab or frozenset([-1]) for lab in labels]
    target: Counter = Counter()
    for lab in ext:
        for c in lab:
            target[c] += val_ratio
    ext_val: Counter = Counter()

    def move(i: int) -> None:
        val.add(i)
        for c in labels[i]:
            in_train[c] -= 1
            in_val[c] += 1
        for c in ext[i]:
            ext_val[c] += 1

    # 1. one val image for every class with >= 2 images, rarest first; among the
    #    candidates, the one whose other classes most need val images
    for c in sorted(count, key=lambda c: (count[c], c)):
        if count[c] < 2 or in_val[c] > 0:
            continue
        cands = [i for i in order if c in labels[i] and i not in val]
        movable = [i for i in cands if can_move(i)] or [i for i in cands if in_train[c] > 1]
        if movable:
            move(max(movable, key=lambda i: sum(target[d] - ext_val[d] for d in ext[i] if d != c)))
    # 2. fill towards n_val keeping each class's share
    for rule in (
        lambda i: all(ext_val[c] + 1 <= target[c] + 0.5 for c in ext[i]),
        lambda i: any(ext_val[c] < target[c] for c in ext[i]),
        lambda i: True,
    ):
        for i in order:
            if len(val) >= n_val:
                break
            if i not in val and can_move(i) and rule(i):
                move(i)
    for i in val:
        splits[i] = "val"
    return splits


# ------------------------------------------------------------------------------ prepare
def prepare(
    class_map: str | os.PathLike | ClassMap,
    out: str | os.PathLike | None,
    things: Sequence[str | os.PathLike] = (),
    labelme: Sequence[str | os.PathLike] = (),
    coco_panoptic: Sequence | None = None,
    stuff_from: str | os.PathLike | None = None,
    stuff_truth: Sequence | None = None,
    teacher: Teacher | None = None,
    teacher_mask_things: bool = False,
    teacher_options: dict | None = None,
    val_ratio: float = 0.2,
    seed: int = 0,
    check: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    compress_level: int = 1,
    max_logged_warnings: int = 20,
) -> PrepareSummary:
    """Build a prepared dataset in `out` (see the module docstring). Returns a summary.

    coco_panoptic: one (json, png_dir, image_dir) triple or a list of them.
    stuff_truth: (json, png_dir) of the true stuff of custom images (matched by name).
    teacher: `teacher(image) -> (id_map, segments_info, categories)`; `stuff_from` (a
        checkpoint) builds one lazily with `engine.predict.Predictor(stuff_from,
        **teacher_options).panoptic`, only when some image needs it.
    check: validate everything (PNG ids included), write nothing; problems are returned
        (`summary.problems`), never raised.
    Raises `DataError` (one line) on the first bad input unless `check` or `skip_bad`.
    """
    t0 = time.time()
    log = log or (lambda s: print(s, file=sys.stderr))
    cmap = class_map if isinstance(class_map, ClassMap) else ClassMap.load(class_map)
    cats = cmap.categories()
    if coco_panoptic and isinstance(coco_panoptic[0], (str, os.PathLike)):
        coco_panoptic = [coco_panoptic]
    coco_panoptic = [tuple(t) for t in (coco_panoptic or [])]
    for t in coco_panoptic:
        if len(t) != 3:
            raise DataError("--coco-panoptic takes JSON PNG_DIR IMAGE_DIR")
    if stuff_truth is not None and len(stuff_truth) != 2:
        raise DataError("--stuff-truth takes JSON PNG_DIR")
    if not (things or labelme or coco_panoptic):
        raise DataError("nothing to prepare: give --things, --labelme and/or --coco-panoptic")
    if not 0.0 <= float(val_ratio) < 1.0:
        raise DataError(f"--val-ratio must be in [0, 1), got {val_ratio}")
    if out is not None and not check and Path(out).exists() and not overwrite:
        raise PanopticDetrError(f"{out}: output exists; pass --overwrite to replace it")
    if out is None and not check:
        raise DataError("prepare needs an output folder")

    summary = PrepareSummary(out=str(out) if out is not None else None, checked=check, num_categories=len(cats))
    problems: list[str] = []  # every problem, in order
    warnings: list[str] = []

    # ---- read every input
    sources: list[SourceImage] = []
    src_desc: list[dict] = []
    for p in things:
        imgs, probs = read_things(p, cmap)
        sources += imgs
        problems += probs
        src_desc.append({"kind": "coco-instances", "path": str(p), "images": len(imgs)})
    for p in labelme:
        imgs, probs = read_labelme_dir(p)
        sources += imgs
        problems += probs
        src_desc.append({"kind": "labelme", "path": str(p), "images": len(imgs)})
    for js, png_dir, img_dir in coco_panoptic:
        try:
            pset = read_coco_panoptic(js)
        except PanopticDetrError as e:
            problems.append(str(e))
            continue
        names = {cid: str(c["name"]) for cid, c in pset.categories.items()}
        for pim in pset.images:
            src = SourceImage(
                name=Path(pim.file_name).name,
                source=str(js),
                ref=f"image id {pim.image_id}",
                image_path=Path(img_dir) / pim.file_name,
                width=pim.width,
                height=pim.height,
                relpath=pim.file_name,
                kind="panoptic",
                png_path=Path(png_dir) / pim.png_name,
                segments=pim.segments,
                seg_labels=names,
            )
            if not src.image_path.is_file():
                src.problems.append(f"{js}: {src.ref}: image file {src.image_path} not found")
                src.image_path = None
            if not src.png_path.is_file():
                src.problems.append(f"{js}: {src.ref}: panoptic PNG {src.png_path} not found")
            sources.append(src)
        src_desc.append({"kind": "coco-panoptic", "path": str(js), "png_dir": str(png_dir), "image_dir": str(img_dir), "images": len(pset.images)})

    # ---- validate every image and annotation (no pixels decoded yet)
    items: list[_Item] = []
    unknown_seen: set = set()
    for src in sources:
        it = _Item(src)
        items.append(it)
        item_probs = list(src.problems)
        warnings += src.warnings
        size_ok = src.width is not None and src.height is not None
        if src.image_path is not None or src.image_bytes is not None:
            try:
                w, h, it.orientation = _image_header(src)
                if src.kind == "panoptic" and not size_ok:
                    src.width, src.height = w, h
                    size_ok = True
                elif size_ok and (w, h) != (src.width, src.height):
                    size_ok = False
                    item_probs.append(
                        f"{src.source}: {src.ref}: image {src.name} is {w}x{h} but the annotation says {src.width}x{src.height}"
                    )
            except PanopticDetrError as e:
                item_probs.append(str(e))
        for ann in src.annotations:
            target = cmap.resolve(ann.label)
            if target is None:
                first = (src.source, ann.label) not in unknown_seen
                unknown_seen.add((src.source, ann.label))
                msg = cmap.unknown_message(ann.label) if first else f"unknown category '{ann.label}' (see above)"
                item_probs.append(f"{src.source}: {src.ref} annotation {ann.ann_id}: {msg}")
                it.cats.append(None)
                continue
            if target == IGNORE:
                it.cats.append(None)
                continue
            cat = cats.by_name[target]
            if size_ok:
                errs, warns = check_geometry(ann, src.height, src.width)
                item_probs += [f"{src.source}: {src.ref} {e}" for e in errs]
                warnings += [f"{src.source}: {src.ref} {w_}" for w_ in warns]
                if errs or (ann.kind == "polygons" and not ann.data) or (ann.kind == "box" and ann.data is None):
                    it.cats.append(None)
                    continue
            it.cats.append(cat.id)
            if cat.isthing:
                it.thing_classes.add(cat.id)
        if src.kind == "panoptic":
            for s in src.segments:
                cid = int(s["category_id"])
                if cid in it.seg_map:
                    continue
                name = src.seg_labels.get(cid, str(cid))
                target = cmap.resolve(name)
                if target is None or target == IGNORE:
                    if target is None and (src.source, cid) not in unknown_seen:
                        unknown_seen.add((src.source, cid))
                        warnings.append(f"{src.source}: category '{name}' (id {cid}) is not in the class map; its segments become VOID")
                    it.seg_map[cid] = None
                else:
                    it.seg_map[cid] = cats.by_name[target].id
            for s in src.segments:
                t = it.seg_map.get(int(s["category_id"]))
                if t is not None and cats.by_id[t].isthing:
                    it.thing_classes.add(t)
        if item_probs:
            it.bad = True
            problems += item_probs

    # ---- duplicate output names (the PNG is named by the stem)
    by_stem: dict[str, _Item] = {}
    for it in items:
        key = _stem(it.name)
        first = by_stem.get(key)
        if first is None:
            by_stem[key] = it
            continue
        it.bad = True
        problems.append(
            f"{it.src.source}: {it.src.ref}: duplicate file name '{it.name}' (also {first.src.where}, as '{first.name}')"
        )

    # ---- true stuff for custom images, matched by name
    truth_set = None
    truth_png_dir = None
    truth_names: dict[int, str] = {}
    if stuff_truth is not None:
        tjson, truth_png_dir = Path(stuff_truth[0]), Path(stuff_truth[1])
        try:
            truth_set = read_coco_panoptic(tjson)
        except PanopticDetrError as e:
            problems.append(str(e))
        if truth_set is not None:
            truth_names = {cid: str(c["name"]) for cid, c in truth_set.categories.items()}
            index: dict[str, PanopticImage] = {}
            for pim in truth_set.images:
                for k in (pim.file_name, _stem(pim.file_name), Path(pim.file_name).name, _stem(Path(pim.file_name).name), _stem(pim.png_name)):
                    index.setdefault(k, pim)
            for it in items:
                if it.src.kind != "custom":
                    continue
                for k in (it.src.relpath, _stem(it.src.relpath), it.name, _stem(it.name)):
                    if k and k in index:
                        it.truth = index[k]
                        break
            matched = sum(1 for it in items if it.truth is not None)
            src_desc.append({"kind": "stuff-truth", "path": str(tjson), "png_dir": str(truth_png_dir), "matched_images": matched})

    good = [it for it in items if not it.bad]
    if check:
        # the checks that need pixels: PNG ids of panoptic inputs and of the stuff truth
        for it in _progress(good, progress, "check"):
            try:
                if it.src.kind == "panoptic":
                    _read_checked_png(it.src.png_path, it.src.segments, it.src.height, it.src.width, it.src.where)
                if it.truth is not None:
                    _read_checked_png(truth_png_dir / it.truth.png_name, it.truth.segments, it.src.height, it.src.width,
                                      f"{stuff_truth[0]}: image id {it.truth.image_id}")
            except PanopticDetrError as e:
                problems.append(str(e))
        summary.problems = problems
        summary.warnings = warnings
        _log_list(log, warnings, "warning", max_logged_warnings)
        for p in problems:
            log(f"problem: {p}")
        log(f"check: {len(items)} images, {len(problems)} problem(s), {len(warnings)} warning(s)")
        if out is not None and Path(out).exists() and not overwrite:
            log(f"note: {out} exists; the real run needs --overwrite")
        summary.seconds = time.time() - t0
        return summary

    if problems and not skip_bad:
        more = f" (and {len(problems) - 1} more problem(s); run with --check to list them all)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    skipped_problems = list(problems)
    skipped = [it.name for it in items if it.bad]
    if not good:
        raise DataError("no usable images to prepare" + (f" ({len(skipped)} skipped as bad)" if skipped else ""))

    # ---- split and ids
    good.sort(key=lambda it: it.name)
    for i, it in enumerate(good, start=1):
        it.image_id = i
    for it, sp in zip(good, stratified_split([it.name for it in good], [it.thing_classes for it in good], val_ratio, seed)):
        it.split = sp

    # ---- stuff source per custom image
    has_teacher = teacher is not None or stuff_from is not None
    teacher_state: dict = {"fn": teacher, "names": {}}

    def get_teacher():
        if teacher_state["fn"] is None:
            try:
                from panoptic_detr.engine.predict import Predictor
            except ImportError as e:
                raise PanopticDetrError(f"--stuff-from needs panoptic_detr.engine.predict ({e})") from None
            log(f"loading teacher {stuff_from}")
            teacher_state["fn"] = Predictor(stuff_from, **(teacher_options or {})).panoptic
        return teacher_state["fn"]

    def stuff_mode(it: _Item) -> str:
        if it.src.kind != "custom":
            return "own"
        if has_teacher and it.truth is not None:
            return "truth" if it.split == "val" else "teacher"
        if it.truth is not None:
            return "truth"
        return "teacher" if has_teacher else "none"

    no_truth = [it.name for it in good if it.src.kind == "custom" and stuff_truth is not None and it.truth is None]
    if no_truth:
        warnings.append(
            f"{stuff_truth[0]}: no true stuff for {len(no_truth)} image(s) (e.g. {no_truth[0]}); "
            + ("the teacher labels them" if has_teacher else "their stuff is VOID")
        )

    # ---- build
    counts = {"train": 0, "val": 0}
    seg_counts = {"train": 0, "val": 0}
    modes: Counter = Counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for sp in ("train", "val"):
            (tmp / "images" / sp).mkdir(parents=True)
            (tmp / "panoptic" / sp).mkdir(parents=True)
        (tmp / "annotations").mkdir()
        pan = {"train": ([], []), "val": ([], [])}
        inst = {"train": [], "val": []}
        next_ann = [1]
        for it in _progress(good, progress, "prepare"):
            try:
                mode = stuff_mode(it)
                id_map, segs, hidden = _build_map(
                    it, cats, cmap, mode, get_teacher, teacher_mask_things, truth_png_dir, truth_names,
                    stuff_truth[0] if stuff_truth else None,
                )
            except PanopticDetrError as e:
                if not skip_bad:
                    raise
                skipped_problems.append(str(e))
                skipped.append(it.name)
                continue
            warnings += hidden
            modes[mode] += 1
            h, w = id_map.shape
            stats = segments_from_id_map(id_map)
            seg_infos = []
            for s in segs:
                st = stats.get(s["id"])
                if st is None:
                    continue
                seg_infos.append({"id": s["id"], "category_id": s["category_id"], "iscrowd": s["iscrowd"], "bbox": st["bbox"], "area": st["area"]})
            png_name = _stem(it.name) + ".png"
            write_id_png(tmp / "panoptic" / it.split / png_name, id_map, compress_level)
            _write_image(it, tmp / "images" / it.split / it.name)
            img_entry = {"id": it.image_id, "file_name": it.name, "width": w, "height": h}
            pan[it.split][0].append(img_entry)
            pan[it.split][1].append({"image_id": it.image_id, "file_name": png_name, "segments_info": seg_infos})
            id_map_f = None
            for s in seg_infos:
                if not cats.by_id[s["category_id"]].isthing:
                    continue
                if id_map_f is None:
                    id_map_f = np.asfortranarray(id_map)  # comparisons then stay Fortran-ordered
                rle = encode_mask(id_map_f == s["id"])
                inst[it.split].append(
                    {
                        "id": next_ann[0],
                        "image_id": it.image_id,
                        "category_id": s["category_id"],
                        "segmentation": rle,
                        "area": s["area"],
                        "bbox": s["bbox"],
                        "iscrowd": s["iscrowd"],
                    }
                )
                next_ann[0] += 1
            counts[it.split] += 1
            seg_counts[it.split] += len(seg_infos)
        if not any(counts.values()):
            raise DataError("no usable images to prepare (all skipped as bad)")
        cat_json = cats.to_json()
        thing_json = [c for c in cat_json if c["isthing"]]
        info = {"description": "prepared by panoptic-detr", "class_map": cmap.source}
        for sp in ("train", "val"):
            images, anns = pan[sp]
            write_json(tmp / "annotations" / f"panoptic_{sp}.json", panoptic_json(images, anns, cat_json, info))
            write_json(tmp / "annotations" / f"instances_{sp}.json", instances_json(images, inst[sp], thing_json, info))
        write_json(tmp / "categories.json", cat_json, indent=1)
        described = {
            "format": "coco-panoptic",
            "built_by": "panoptic-detr prepare",
            "class_map": {"source": cmap.source, **cmap.to_dict()},
            "categories": {
                "count": len(cats),
                "num_classes": cats.num_classes,
                "ids": "1..C: things in class-map order, then stuff groups in class-map order",
                "things": [c.name for c in cats if c.isthing],
                "stuff": [c.name for c in cats if not c.isthing],
            },
            "inputs": src_desc,
            "stuff_of_custom_images": {
                "teacher": str(stuff_from) if stuff_from is not None else ("<callable>" if teacher is not None else None),
                "teacher_mask_things": bool(teacher_mask_things),
                "truth": str(stuff_truth[0]) if stuff_truth else None,
                "rule": "teacher labels train, truth labels val" if has_teacher and stuff_truth else
                        ("truth" if stuff_truth else ("teacher" if has_teacher else "none (VOID)")),
                "images_by_source": dict(sorted(modes.items())),
            },
            "painting": "stuff first, then annotations in file order; things win over stuff; the later of overlapping things wins",
            "split": {"seed": seed, "val_ratio": val_ratio, "train": counts["train"], "val": counts["val"], "stratified_by": "thing classes"},
            "segments": seg_counts,
            "skipped": len(skipped),
            "warnings": len(warnings),
        }
        write_text(tmp / "dataset.yaml", "# What this dataset was built from (panoptic-detr prepare)\n" + yaml.safe_dump(described, sort_keys=False, allow_unicode=True))
        if skipped_problems or warnings:
            lines = [f"# prepare report: {len(skipped)} image(s) skipped, {len(warnings)} warning(s)"]
            if skipped_problems:
                lines += ["", "## problems (the images they name were skipped)"] + skipped_problems
                lines += ["", "## skipped images"] + sorted(set(skipped))
            if warnings:
                lines += ["", "## warnings"] + warnings
            write_text(tmp / "prepare-report.txt", "\n".join(lines) + "\n")
            summary.report = str(Path(out) / "prepare-report.txt")
    _log_list(log, warnings, "warning", max_logged_warnings)
    for p in skipped_problems:
        log(f"skipped: {p}")
    summary.images = counts
    summary.segments = seg_counts
    summary.problems = skipped_problems
    summary.skipped = sorted(set(skipped))
    summary.warnings = warnings
    summary.seconds = time.time() - t0
    return summary


def _log_list(log, msgs: list[str], what: str, limit: int) -> None:
    for m in msgs[:limit]:
        log(f"{what}: {m}")
    if len(msgs) > limit:
        log(f"... and {len(msgs) - limit} more {what}s (see prepare-report.txt)")


def _progress(seq, enabled: bool, desc: str):
    if not enabled:
        return seq
    from tqdm import tqdm

    return tqdm(seq, desc=desc, unit="img", leave=False, dynamic_ncols=True)


def _read_checked_png(path: Path, segments: list[dict], h, w, where: str) -> np.ndarray:
    ids = read_id_png(path)
    if h is not None and w is not None and ids.shape != (h, w):
        raise DataError(f"{where}: PNG {path.name} is {ids.shape[1]}x{ids.shape[0]} but the image is {w}x{h}")
    check_png_ids(ids, segments, f"{where} ({path.name})")
    return ids


def _write_image(it: _Item, dst: Path) -> None:
    src = it.src
    if it.orientation == 1:
        if src.image_bytes is not None:
            dst.write_bytes(src.image_bytes)
        else:
            shutil.copyfile(src.image_path, dst)
        return
    # stored rotated: write it upright, without the EXIF tag, so every reader agrees with the PNG
    arr = _load_pixels(it)
    fmt = "JPEG" if dst.suffix.lower() in (".jpg", ".jpeg") else None
    Image.fromarray(arr).save(dst, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _build_map(it: _Item, cats: CategoryList, cmap: ClassMap, mode: str, get_teacher, mask_things: bool,
               truth_png_dir, truth_names, truth_json) -> tuple[np.ndarray, list[dict], list[str]]:
    """The id map and segments (id, category_id, iscrowd) of one image, plus warnings."""
    src = it.src
    h, w = src.height, src.width
    id_map = np.zeros((h, w), np.int32)
    segs: list[dict] = []
    stuff_seg: dict[int, int] = {}
    warns: list[str] = []

    def new_segment(cat_id: int, iscrowd: int = 0) -> int:
        sid = len(segs) + 1
        segs.append({"id": sid, "category_id": cat_id, "iscrowd": int(iscrowd)})
        return sid

    def stuff_id(cat_id: int) -> int:
        if cat_id not in stuff_seg:
            stuff_seg[cat_id] = new_segment(cat_id)
        return stuff_seg[cat_id]

    # decode the annotations first (the teacher may need the union of the things)
    masks = []
    for ann, cat_id in zip(src.annotations, it.cats):
        if cat_id is None:
            continue
        rle = annotation_rle(ann, h, w)
        if rle is None:
            continue
        x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
        if bw <= 0 or bh <= 0:
            continue
        win = (slice(y, y + bh), slice(x, x + bw))  # all of the mask lies in its bbox
        masks.append((ann, cat_id, decode_rle(rle), win))

    # 1. stuff
    if mode == "own":
        src_ids = _read_checked_png(src.png_path, src.segments, h, w, src.where)
        table = {}
        for s in src.segments:
            target = it.seg_map.get(int(s["category_id"]))
            if target is None:
                continue
            if cats.by_id[target].isthing:
                table[int(s["id"])] = new_segment(target, int(s.get("iscrowd", 0) or 0))
            else:
                table[int(s["id"])] = stuff_id(target)
        id_map = _relabel(src_ids, table)
    elif mode == "truth":
        pim = it.truth
        where = f"{truth_json}: image id {pim.image_id}"
        t_ids = _read_checked_png(Path(truth_png_dir) / pim.png_name, pim.segments, h, w, where)
        table = {}
        for s in pim.segments:
            name = truth_names.get(int(s["category_id"]), "")
            target = cmap.resolve(name)
            if target is None or target == IGNORE or cats.by_name[target].isthing:
                continue
            table[int(s["id"])] = stuff_id(cats.by_name[target].id)
        id_map = _relabel(t_ids, table)
    elif mode == "teacher":
        image = _load_pixels(it)
        if image.shape[:2] != (h, w):
            raise DataError(f"{src.where}: decoded image is {image.shape[1]}x{image.shape[0]}, expected {w}x{h}")
        if mask_things:
            union = np.zeros((h, w), bool)
            for _, cat_id, m, win in masks:
                if cats.by_id[cat_id].isthing:
                    union[win] |= m[win]
            if union.any():
                image = image.copy()
                image[union] = MASK_FILL
        try:
            t_map, t_segs, t_cats = _teacher_parts(get_teacher()(image))
        except PanopticDetrError:
            raise
        t_map = t_map.astype(np.int64, copy=False)
        if t_map.shape != (h, w):
            t_map = _resize_nearest(t_map, h, w)
        names = _category_names(t_cats)
        table = {}
        for s in t_segs:
            name = names.get(int(s["category_id"]), str(s["category_id"]))
            target = cmap.resolve(name)
            if target is None or target == IGNORE or cats.by_name[target].isthing:
                continue
            table[int(s["id"])] = stuff_id(cats.by_name[target].id)
        id_map = _relabel(t_map, table)

    # 2. annotated objects: stuff classes first, then things (later wins)
    for ann, cat_id, m, win in masks:
        if not cats.by_id[cat_id].isthing:
            id_map[win][m[win]] = stuff_id(cat_id)
    thing_segs = []
    for ann, cat_id, m, win in masks:
        if cats.by_id[cat_id].isthing:
            sid = new_segment(cat_id, ann.iscrowd)
            id_map[win][m[win]] = sid
            thing_segs.append((ann, sid))
    if thing_segs:
        present = np.bincount(id_map.ravel(), minlength=len(segs) + 1) if len(segs) < 4096 else None
        for ann, sid in thing_segs:
            if present is not None and present[sid] == 0:
                warns.append(f"{src.where} annotation {ann.ann_id}: entirely covered by later annotations; dropped")
    return id_map, segs, warns
