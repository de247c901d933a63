"""Benchmark: `prepare --workers 2` vs `--workers 1`: images/s and identical bytes.

Writes the synthetic CVAT-style export of `bench/prepare.py` (default 500 JPEGs of
640x480, 8 polygon instances each, one RLE), then prepares it with 1 and with 2 worker
processes, alternately, `--repeat` times (best of each: the machine may be shared, and
both are timed in the same run). Prints images/s of each, the ratio (goal >= 1.7x on 2
cores) and whether every output file is byte-identical; with the CPU time of each (main
process and workers), the speed-up to expect on free cores.

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

from parallelism import machine_parallelism  # noqa: E402  (bench/parallelism.py)
from prepare import make_export  # noqa: E402  (bench/prepare.py)

from panoptic_detr.data.prepare import PrepareOptions, prepare  # noqa: E402


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    best = {1: float("inf"), args.workers: float("inf")}
    cpu: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-prepare-workers-") as tmp:
        tmp = Path(tmp)
        js = make_export(tmp / "export", args.images)
        for _ in range(args.repeat):
            for w in best:
                out = tmp / f"ds{w}"
                if out.exists():
                    shutil.rmtree(out)
                t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
                s = prepare(PrepareOptions("demo", out, things=[js], progress=False, workers=w), log=lambda m: None)
                best[w] = min(best[w], time.perf_counter() - t0)
                cpu[w] = (time.process_time() - c0, _children_cpu() - k0)  # (main process, workers)
                assert sum(s.images.values()) == args.images
        same = files_of(tmp / "ds1") == files_of(tmp / f"ds{args.workers}")
    capacity = machine_parallelism(args.workers)
    one, many = best[1], best[args.workers]
    print(f"prepare, {args.images} images 640x480 (no teacher), best of {args.repeat}")
    print(f"  --workers 1:   {args.images / one:6.1f} images/s  ({one:.1f} s)")
    print(f"  --workers {args.workers}:   {args.images / many:6.1f} images/s  ({many:.1f} s)")
    print(f"  ratio:         {one / many:6.2f}x [goal >= 1.7x on 2 cores]; output byte-identical: {same}")
    (main1, _), (main, kids) = cpu[1], cpu[args.workers]
    print(f"  CPU time: --workers 1 {main1:.2f} s; --workers {args.workers}: main process {main:.2f} s "
          f"({100 * main / main1:.0f}%) + workers {kids:.2f} s; on {args.workers} free cores about "
          f"{main1 / (main + kids / args.workers):.2f}x (the main process's CPU counted as serial)")
    print(f"  reference: {args.workers} processes of a pure CPU loop ran {capacity:.2f}x faster than one, now "
          "(below 2: the machine is shared)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
