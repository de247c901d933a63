"""The same-run reference of the multi-process benchmarks: how much faster `workers`
processes run a pure CPU loop than one process, now. On a shared machine it is below
`workers`, and a measured speed-up should be read against it.

    python bench/parallelism.py [--workers 2]
"""

from __future__ import annotations

import argparse
import time


def _spin(_) -> int:
    s = 0
    for i in range(3_000_000):
        s += i
    return s


def machine_parallelism(workers: int) -> float:
    """The speed-up `workers` forked processes get on a pure CPU task now."""
    import multiprocessing as mp

    t = time.perf_counter()
    for k in range(workers):
        _spin(k)
    one = time.perf_counter() - t
    with mp.get_context("fork").Pool(workers) as pool:
        t = time.perf_counter()
        pool.map(_spin, range(workers))
        many = time.perf_counter() - t
    return one / many


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    n = ap.parse_args().workers
    print(f"{n} processes of a pure CPU loop: {machine_parallelism(n):.2f}x one process, now")
