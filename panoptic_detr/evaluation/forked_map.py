"""`forked_map`: a function over many items, spread over this process and forked children.

PQ evaluation decodes two PNGs per image with pyspng, which holds the GIL, so threads
cannot decode in parallel. A `multiprocessing.Pool` can, but on a 2-core machine its
machinery (a task queue, three handler threads, a pickled message per chunk, one more
process than cores) took a quarter of the cores' time back. Here the parent forks
`workers - 1` children, every process takes every `workers`-th item (items of one kind
cost about the same, so the shares end together), each child sends its results back
once through a pipe, and the parent works on its own share meanwhile.

The children inherit everything (nothing is pickled on the way in), run only the given
function, and leave with `os._exit`. An exception in a child comes back and is raised in
the parent as it was (or as a RuntimeError with its text, if it cannot be pickled). Where
fork is unavailable or unsafe (Windows; macOS, whose system libraries may not survive a
fork), `fork_available()` is False and callers use threads instead.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import warnings
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["fork_available", "forked_map"]


def fork_available() -> bool:
    return hasattr(os, "fork") and sys.platform != "darwin" and not os.environ.get("PANOPTIC_DETR_NO_FORK")


def _child(fn: Callable[[T], R], items: Sequence[T], start: int, step: int, write_fd: int) -> None:
    """In the child: results of items[start::step] (or the exception) into the pipe, then exit."""
    code = 0
    try:
        try:
            payload = ("ok", [fn(items[i]) for i in range(start, len(items), step)])
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            payload = ("error", e)
        try:
            data = pickle.dumps(payload)
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled
            data = pickle.dumps(("error", RuntimeError(f"{type(payload[1]).__name__}: {payload[1]}")))
        with os.fdopen(write_fd, "wb") as f:
            f.write(data)
    except BaseException:  # noqa: BLE001 - the parent reports a child that sent nothing
        code = 1
    finally:
        os._exit(code)


def forked_map(fn: Callable[[T], R], items: Sequence[T], workers: int,
               on_result: Callable[[int], None] | None = None) -> list[R]:
    """`[fn(x) for x in items]`, computed by this process and `workers - 1` forked children.

    `on_result(n)` is called as results arrive (n results at a time), e.g. for a
    progress bar. The order of the returned list is the order of `items`.
    """
    workers = max(1, min(int(workers), len(items)))
    children: list[tuple[int, int]] = []  # (pid, read end)
    try:
        for k in range(1, workers):
            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():
                # Python >= 3.12 warns about fork in a process with threads; the child runs
                # `fn` alone (no thread pools, no locks of other threads) and exits
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(fn, items, k, workers, write_fd)
            os.close(write_fd)
            children.append((pid, read_fd))

        results: list = [None] * len(items)
        for i in range(0, len(items), workers):
            results[i] = fn(items[i])
            if on_result is not None:
                on_result(1)
        for k, (pid, read_fd) in enumerate(children, start=1):
            with os.fdopen(read_fd, "rb") as f:
                data = f.read()
            children[k - 1] = (pid, -1)
            if not data:
                raise RuntimeError(f"a worker process (pid {pid}) ended without sending its results")
            status, value = pickle.loads(data)
            if status == "error":
                raise value
            results[k::workers] = value
            if on_result is not None:
                on_result(len(value))
        return results
    finally:
        for pid, read_fd in children:
            if read_fd != -1:  # stopped early: the child's results are not wanted
                os.close(read_fd)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
