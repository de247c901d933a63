"""glibc malloc settings for tensor workloads, applied once per process.

PyTorch on CPU allocates and frees many blocks of megabytes per step. By default glibc
serves every allocation above a threshold (at most 32 MB) with a fresh `mmap` and
returns it to the kernel on free, so every large activation of every forward pass is
page-faulted in again: measured here, 5-10x more system time per training step and
15-25% more time per predicted image. With `mmap` off and trimming (nearly) off, freed
blocks stay on the heap and are reused; the process keeps its peak memory afterwards.

Process-wide, so the CLI applies it (`cli.main`) and the benchmarks do; library users
call `tune_malloc()` themselves. A no-op where glibc is not the C library or another
allocator is preloaded; `PANOPTIC_DETR_NO_MALLOC_TUNING=1` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def tune_malloc() -> bool:
    """Apply the settings once per process; returns True when they are in effect."""
    global _done
    if _done or os.environ.get("PANOPTIC_DETR_NO_MALLOC_TUNING"):
        return _done
    if not sys.platform.startswith("linux") or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return _done
