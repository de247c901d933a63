"""Benchmark: PQ evaluation speed, `pq_compute` vs the panopticapi's single-process loop.

Builds a synthetic COCO-panoptic set (default 200 images of 480x640 with about 20
segments each: stuff bands, thing ellipses and boxes, a crowd region, VOID seams) and
perturbed predictions (missing, merged, shifted, relabelled segments, false positives),
written as PNGs with PIL's default compression as the COCO files are. Then times:

- the reference: `tests/evaluation/panopticapi_reference.py`, a step-by-step
  re-implementation of the panopticapi's per-image loop (single process);
- `pq_compute` with one worker thread, and with one thread per CPU;

prints images/s for each, the speed-ups, and checks that the numbers agree (1e-9).

    python bench/pq.py [--images 200] [--height 480] [--width 640] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "evaluation"))

import numpy as np  # noqa: E402

import panopticapi_reference as reference  # noqa: E402
import pq_synthetic as synth  # noqa: E402
from panoptic_detr.evaluation.panoptic_quality import pq_compute  # noqa: E402


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads for the parallel run")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-pq-") as tmp:
        t = time.perf_counter()
        paths = synth.random_set(
            Path(tmp), 0, n_images=args.images, h=args.height, w=args.width, n_things=16, n_stuff=4
        )
        n_segs = np.mean([len(a["segments_info"]) for a in __import__("json").loads(paths[0].read_text())["annotations"]])
        print(
            f"data: {args.images} images {args.width}x{args.height}, {n_segs:.1f} ground-truth segments "
            f"per image (built in {time.perf_counter() - t:.1f} s)"
        )
        ref = reference.pq_compute(*paths)
        ours = pq_compute(*paths, workers=1)
        worst = max(abs(ours[g][k] - ref[g][k]) for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq"))
        assert worst < 1e-9, worst
        print(f"PQ {100 * ours['All']['pq']:.2f} (reference {100 * ref['All']['pq']:.2f}), max difference {worst:.1e}")

        t_ref = best_time(lambda: reference.pq_compute(*paths), args.repeat)
        t_one = best_time(lambda: pq_compute(*paths, workers=1), args.repeat)
        t_par = best_time(lambda: pq_compute(*paths, workers=args.workers), args.repeat)
        n = args.images
        print(f"reference (panopticapi loop, 1 process): {n / t_ref:8.1f} images/s  ({1000 * t_ref / n:.1f} ms/image)")
        print(f"pq_compute, 1 thread:                     {n / t_one:8.1f} images/s  ({1000 * t_one / n:.1f} ms/image)  x{t_ref / t_one:.2f}")
        print(
            f"pq_compute, {args.workers} threads:                    {n / t_par:8.1f} images/s  "
            f"({1000 * t_par / n:.1f} ms/image)  x{t_ref / t_par:.2f}  (target x5)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
