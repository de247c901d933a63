"""`prepare`: read -> validate -> (check) -> split -> stuff + paint -> write."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.formats.panoptic_sources import read_checked_png
from panoptic_detr.data.prepare.item import Item
from panoptic_detr.data.prepare.options import PrepareOptions, PrepareSummary, Teacher
from panoptic_detr.data.prepare.parallel import build_results, read_headers
from panoptic_detr.data.prepare.read import read_inputs
from panoptic_detr.data.prepare.split import stratified_split
from panoptic_detr.data.prepare.stuff import StuffLabeller, StuffTruth
from panoptic_detr.data.prepare.teach import ask_window, batches, teacher_windows
from panoptic_detr.data.prepare.validate import stuff_group_warnings, validate_sources
from panoptic_detr.data.prepare.write import (
    REPORT_NAME,
    DatasetWriter,
    dataset_description,
    report_text,
    write_description,
)
from panoptic_detr.errors import DataError, PanopticDetrError
from panoptic_detr.utils.io import atomic_dir, write_text

__all__ = ["prepare"]

Log = Callable[[str], None]


def prepare(options: PrepareOptions, teacher: Teacher | None = None, log: Log | None = None) -> PrepareSummary:
    """Build a prepared dataset in `options.out` (see `data.prepare`). Returns a summary.

    teacher: `teacher(image) -> (id_map, segments_info, categories)` that labels the stuff
        of custom images (the CLI passes `engine.predict.Predictor(...).panoptic`, built on
        first use); `options.stuff_from` names it in dataset.yaml. With `batch` and
        `window` it is asked a window of images at a time (`teach.py`).
    Raises `DataError` (one line) on the first bad input unless `check` or `skip_bad`.
    """
    t0 = time.time()
    log = log or (lambda s: print(s, file=sys.stderr))
    o = options
    cmap = o.class_map if isinstance(o.class_map, ClassMap) else ClassMap.load(o.class_map)
    cats = cmap.categories()
    o.validate(has_teacher=teacher is not None)
    summary = PrepareSummary(out=str(o.out) if o.out is not None else None, checked=o.check, num_categories=len(cats))

    sources, problems, warnings, inputs = read_inputs(o, cmap)
    header = read_headers(sources, o.workers, o.progress)  # decoded in `workers` processes
    items, bad, checked = validate_sources(sources, cmap, cats, progress=o.progress, header=header)
    problems += bad
    warnings += checked
    truth = None
    if o.stuff_truth is not None:
        try:
            truth = StuffTruth(o.stuff_truth[0], o.stuff_truth[1])
        except PanopticDetrError as e:
            problems.append(str(e))
        if truth is not None:
            inputs.append(truth.match(items))
    warnings += stuff_group_warnings(cmap, sources, truth.names if truth is not None else None,
                                     truth.source if truth is not None else None)
    good = [it for it in items if not it.bad]
    if o.check:
        return _check_only(o, len(items), good, truth, problems, warnings, summary, log, t0)
    if problems and not o.skip_bad:
        more = f" (and {len(problems) - 1} more problem(s); run with --check to list them all)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    skipped = [it.name for it in items if it.bad]
    if not good:
        raise DataError("no usable images to prepare" + (f" ({len(skipped)} skipped as bad)" if skipped else ""))

    _split(good, o.val_ratio, o.seed)
    no_truth = [it.name for it in good if it.src.kind == "custom" and o.stuff_truth is not None and it.truth is None]
    if no_truth:
        warnings.append(
            f"{o.stuff_truth[0]}: no true stuff for {len(no_truth)} image(s) (e.g. {no_truth[0]}); "
            + ("the teacher labels them" if teacher is not None else "their stuff is VOID")
        )
    labeller = StuffLabeller(cmap, cats, teacher, o.teacher_mask_things, truth)
    if o.teacher_only:  # a helper of a sharded teacher: the same windows as the main process
        if not batches(teacher):
            raise PanopticDetrError("teacher_only needs a teacher with batch()")
        for ks in teacher_windows(good, labeller):
            ask_window([good[k] for k in ks], labeller)
        summary.seconds = time.time() - t0
        return summary
    problems = list(problems)  # from here on: the problems of skipped images
    with atomic_dir(o.out, overwrite=o.overwrite) as tmp:
        writer = DatasetWriter(tmp, cats, o.compress_level)
        modes = _build_all(o, good, labeller, writer, problems, skipped, warnings)
        warnings += _empty_split_warnings(o, writer.counts)
        writer.finish(cmap)
        described = dataset_description(o, cmap, cats, inputs, teacher is not None, modes, writer, len(skipped),
                                        len(warnings))
        write_description(writer.dataset.dataset_yaml, described)
        if problems or warnings:
            write_text(tmp / REPORT_NAME, report_text(problems, skipped, warnings))
            summary.report = str(Path(o.out) / REPORT_NAME)
    _log_list(log, warnings, "warning", o.max_logged_warnings)
    for p in problems:
        log(f"skipped: {p}")
    summary.images = writer.counts
    summary.segments = writer.seg_counts
    summary.problems = problems
    summary.skipped = sorted(set(skipped))
    summary.warnings = warnings
    summary.seconds = time.time() - t0
    return summary


def _empty_split_warnings(o: PrepareOptions, counts: dict) -> list[str]:
    """A warning for each split left empty that the val ratio did not ask to be empty."""
    n = sum(counts.values())
    out = []
    if counts.get("val", 0) == 0 and o.val_ratio > 0:
        out.append(f"{o.out}: the val split is empty ({n} image(s) in all, --val-ratio {o.val_ratio}): evaluate has "
                   "nothing to score; prepare more images, or an evaluation-only set with --val-ratio 1.0")
    if counts.get("train", 0) == 0 and o.val_ratio < 1:
        out.append(f"{o.out}: the train split is empty ({n} image(s) in all, --val-ratio {o.val_ratio}): "
                   "train has nothing to learn from")
    return out


def _split(good: list[Item], val_ratio: float, seed: int) -> None:
    """Image ids 1..N in file-name order, and each image's split."""
    good.sort(key=lambda it: it.name)
    for i, it in enumerate(good, start=1):
        it.image_id = i
    splits = stratified_split([it.name for it in good], [it.thing_classes for it in good], val_ratio, seed)
    for it, sp in zip(good, splits):
        it.split = sp


def _build_all(o: PrepareOptions, good: list[Item], labeller: StuffLabeller, writer: DatasetWriter,
               problems: list[str], skipped: list[str], warnings: list[str]) -> Counter:
    """Build and write every image; with `skip_bad`, one that fails here is skipped.
    Returns how many images took their stuff from each source."""
    modes: Counter = Counter()
    # built and written in `o.workers` processes; recorded here in image order
    for it, result in zip(good, build_results(good, labeller, writer, o.workers, o.progress)):
        if isinstance(result, PanopticDetrError):
            if not o.skip_bad:
                raise result
            problems.append(str(result))
            skipped.append(it.name)
            continue
        mode, hidden, entries = result
        warnings += hidden
        modes[mode] += 1
        writer.record(it, entries)
    if not any(writer.counts.values()):
        raise DataError("no usable images to prepare (all skipped as bad)")
    return modes


def _check_only(o: PrepareOptions, n_images: int, good: list[Item], truth: StuffTruth | None, problems: list[str],
                warnings: list[str], summary: PrepareSummary, log: Log, t0: float) -> PrepareSummary:
    """`check`: add the checks that need pixels (the PNG ids of panoptic inputs and of the
    stuff truth), log every problem, write nothing."""
    for it in _progress(good, o.progress, "check"):
        try:
            if it.src.kind == "panoptic":
                read_checked_png(it.src.png_path, it.src.segments, it.src.height, it.src.width, it.src.where)
            if it.truth is not None:
                truth.read_map(it)
        except PanopticDetrError as e:
            problems.append(str(e))
    summary.problems = problems
    summary.warnings = warnings
    _log_list(log, warnings, "warning", o.max_logged_warnings)
    for p in problems:
        log(f"problem: {p}")
    log(f"check: {n_images} images, {len(problems)} problem(s), {len(warnings)} warning(s)")
    if o.out is not None and Path(o.out).exists() and not o.overwrite:
        log(f"note: {o.out} exists; the real run needs --overwrite")
    summary.seconds = time.time() - t0
    return summary


def _log_list(log: Log, msgs: list[str], what: str, limit: int) -> None:
    for m in msgs[:limit]:
        log(f"{what}: {m}")
    if len(msgs) > limit:
        log(f"... and {len(msgs) - limit} more {what}s (see {REPORT_NAME})")


def _progress(seq, enabled: bool, desc: str):
    if not enabled:
        return seq
    from tqdm import tqdm

    return tqdm(seq, desc=desc, unit="img", leave=False, dynamic_ncols=True)
