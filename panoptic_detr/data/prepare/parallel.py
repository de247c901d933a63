"""`prepare` on several cores (`PrepareOptions.workers`): the per-image work in processes.

Two stages run in a pool of forked processes, each in image order (`Pool.imap`):
- `read_headers`: decoding every image once while validating (`item.image_header`); the
  validator then uses the results;
- `build_results`: the stuff layer and painting (`paint.build_id_map`) and the files of
  each image (`DatasetWriter.write_files`: its PNG and image copy, its JSON entries).
The main process keeps everything that depends on order (JSON entries, instance ids,
warnings, counts), so the output is byte-identical to one worker's. The workers inherit
the items, the labeller and the writer through `fork` (nothing is pickled but the
results). A teacher runs inside each worker (a lazy one is built there, each with
`cores / workers` threads), except a teacher with `batch` (a GPU one, or one sharded
under torchrun: `teach.py`): that one runs in the main process, a window of images ahead
of the workers, and its answers go to the workers with the items. Without `fork` (not on
Linux / macOS) the work runs in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Iterator

from panoptic_detr.data.formats.common import SourceImage
from panoptic_detr.data.prepare.item import Item, image_header
from panoptic_detr.data.prepare.paint import build_id_map
from panoptic_detr.data.prepare.teach import ask_window, batches, teacher_windows
from panoptic_detr.errors import PanopticDetrError

__all__ = ["read_headers", "build_results"]

_STATE: dict = {}  # what the forked workers inherit (set just before the pool starts)


def _pool(workers: int):
    threads = max(1, (os.cpu_count() or 1) // workers)
    return mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(threads,))


def _init_worker(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _can_fork(workers: int) -> bool:
    return workers > 1 and "fork" in mp.get_all_start_methods()


def _chunk(n: int, workers: int, most: int) -> int:
    """Items per pool task: up to `most` (every task costs the main process CPU in the
    pool's threads: 500 images built 2 a task took 0.63 s of the main process's CPU, 8 a
    task 0.21 s), but at least 4 tasks per worker, to keep the workers balanced."""
    return max(1, min(most, n // (4 * workers)))


def _progress(seq, total: int, enabled: bool, desc: str):
    if not enabled:
        return seq
    from tqdm import tqdm

    return tqdm(seq, total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)


def _header(k: int):
    try:
        return image_header(_STATE["sources"][k])
    except PanopticDetrError as e:
        return e


def read_headers(sources: list[SourceImage], workers: int, progress: bool = False) -> Callable:
    """`header(src)` answering `item.image_header(src)` for every source, all decoded now
    in `workers` processes (errors raised when asked, as `image_header` raises them)."""
    if not _can_fork(workers) or len(sources) < 2:
        return image_header
    _STATE["sources"] = sources
    try:
        with _pool(workers) as pool:
            chunks = pool.imap(_header, range(len(sources)), chunksize=_chunk(len(sources), workers, 16))
            results = list(_progress(chunks, len(sources), progress, "decode"))
    finally:
        _STATE.clear()
    by_id = {id(s): r for s, r in zip(sources, results)}

    def header(src: SourceImage):
        r = by_id[id(src)]
        if isinstance(r, Exception):
            raise r
        return r

    return header


def _build(k: int):
    """(mode, warnings, entries) of item k, its files written; or its PanopticDetrError."""
    it, labeller, writer = _STATE["items"][k], _STATE["labeller"], _STATE["writer"]
    try:
        mode = labeller.mode(it)
        id_map, segs, hidden = build_id_map(it, mode, labeller, labeller.cats)
    except PanopticDetrError as e:
        return e
    return mode, hidden, writer.write_files(it, id_map, segs)


def _build_answered(task: tuple):
    """`_build(k)` in a worker, with the teacher's answer for item k (if it was asked)."""
    k, answer = task
    if answer is not None:
        _STATE["labeller"].answers.update(answer)
    return _build(k)


def build_results(good: list[Item], labeller, writer, workers: int, progress: bool) -> Iterator:
    """`_build`'s result for each item of `good`, in order, from `workers` processes (or
    this one). The caller records the entries (`writer.record`) as they come. A teacher
    with `batch` (`teach.py`) is asked here, in this process, one window ahead of the
    workers building the window before."""
    _STATE.update(items=good, labeller=labeller, writer=writer)
    try:
        if not _can_fork(workers) or len(good) < 2:
            results = map(_build, range(len(good)))
            if batches(labeller.teacher):
                results = _windows_here(good, labeller)
            yield from _progress(results, len(good), progress, "prepare")
            return
        with _pool(workers) as pool:  # forked now: the workers see _STATE (and no teacher built yet)
            if batches(labeller.teacher):
                results = _windows_in(pool, good, labeller)
            else:
                results = pool.imap(_build, range(len(good)), chunksize=_chunk(len(good), workers, 8))
            yield from _progress(results, len(good), progress, "prepare")
    finally:
        _STATE.clear()


def _windows_here(good: list[Item], labeller) -> Iterator:
    for ks in teacher_windows(good, labeller):
        labeller.answers.update(ask_window([good[k] for k in ks], labeller))
        yield from map(_build, ks)


def _windows_in(pool, good: list[Item], labeller) -> Iterator:
    """The teacher labels window w + 1 while the workers build window w."""
    pending: Iterator = iter(())
    for ks in teacher_windows(good, labeller):
        answers = ask_window([good[k] for k in ks], labeller)
        tasks = [(k, {good[k].image_id: answers[good[k].image_id]} if good[k].image_id in answers else None)
                 for k in ks]
        started = pool.imap(_build_answered, tasks, chunksize=1)
        yield from pending
        pending = started
    yield from pending
