"""Benchmark: `prepare --workers 2` vs `--workers 1`: images/s and identical bytes.

Writes the synthetic CVAT-style export of `bench/prepare.py` (default 500 JPEGs of
640x480, 8 polygon instances each, one RLE), then prepares it with 1 and with 2 worker
processes, alternately, `--repeat` times (best of each: the machine may be shared, and
both are timed in the same run). Prints images/s of each, the ratio (goal >= 1.7x on 2
cores) and whether every output file is byte-identical.

    python bench/prepare_workers.py [--images 500] [--workers 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from prepare import make_export  # noqa: E402  (bench/prepare.py)

from panoptic_detr.data.prepare import PrepareOptions, prepare  # noqa: E402


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _spin(_) -> int:
    s = 0
    for i in range(3_000_000):
        s += i
    return s


def machine_parallelism(workers: int) -> float:
    """The speed-up `workers` processes get on a pure CPU task now (the same run's
    reference: on a shared machine it is below `workers`)."""
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    best = {1: float("inf"), args.workers: float("inf")}
    with tempfile.TemporaryDirectory(prefix="bench-prepare-workers-") as tmp:
        tmp = Path(tmp)
        js = make_export(tmp / "export", args.images)
        for _ in range(args.repeat):
            for w in best:
                out = tmp / f"ds{w}"
                if out.exists():
                    shutil.rmtree(out)
                t0 = time.perf_counter()
                s = prepare(PrepareOptions("demo", out, things=[js], progress=False, workers=w), log=lambda m: None)
                best[w] = min(best[w], time.perf_counter() - t0)
                assert sum(s.images.values()) == args.images
        same = files_of(tmp / "ds1") == files_of(tmp / f"ds{args.workers}")
    capacity = machine_parallelism(args.workers)
    one, many = best[1], best[args.workers]
    print(f"prepare, {args.images} images 640x480 (no teacher), best of {args.repeat}")
    print(f"  --workers 1:   {args.images / one:6.1f} images/s  ({one:.1f} s)")
    print(f"  --workers {args.workers}:   {args.images / many:6.1f} images/s  ({many:.1f} s)")
    print(f"  ratio:         {one / many:6.2f}x [goal >= 1.7x on 2 cores]; output byte-identical: {same}")
    print(f"  reference: {args.workers} processes of a pure CPU loop ran {capacity:.2f}x faster than one, now "
          "(below 2: the machine is shared)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
