"""Benchmark: PQ evaluation speed, `pq_compute` vs the panopticapi's single-process loop.

Builds a synthetic COCO-panoptic set (default 200 images of 480x640 with about 20
segments each: stuff bands, thing ellipses and boxes, a crowd region, VOID seams) and
perturbed predictions (missing, merged, shifted, relabelled segments, false positives),
written as PNGs with PIL's default compression as the COCO files are. Then times:

- the reference: `tests/evaluation/panopticapi_reference.py`, a step-by-step
  re-implementation of the panopticapi's per-image loop (single process);
- `pq_compute` with one worker thread, and with one thread per CPU;

prints images/s for each, the speed-ups, and checks that the numbers agree (1e-9). Also
prints the time PIL needs just to decode the two PNGs of an image: a floor that both
implementations pay (with numpy >= 2, whose sort is fast, it is most of the reference's
time too, so the single-thread speed-up is bounded by it; threads scale with free cores).

    python bench/pq.py [--images 200] [--height 480] [--width 640] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
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
from panoptic_detr.evaluation.panoptic_quality import _read_packed, pq_compute  # noqa: E402


def best_time(fn, repeat: int) -> float:
    return best_times(fn, repeat)[0]


def best_times(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU time (this process, all threads) over `repeat` runs."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu


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
        n_segs = np.mean([len(a["segments_info"]) for a in json.loads(paths[0].read_text())["annotations"]])
        print(
            f"data: {args.images} images {args.width}x{args.height}, {n_segs:.1f} ground-truth segments "
            f"per image (built in {time.perf_counter() - t:.1f} s)"
        )
        ref = reference.pq_compute(*paths)
        ours = pq_compute(*paths, workers=1)
        worst = max(abs(ours[g][k] - ref[g][k]) for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq"))
        assert worst < 1e-9, worst
        print(f"PQ {100 * ours['All']['pq']:.2f} (reference {100 * ref['All']['pq']:.2f}), max difference {worst:.1e}")

        t_ref, c_ref = best_times(lambda: reference.pq_compute(*paths), args.repeat)
        t_one, c_one = best_times(lambda: pq_compute(*paths, workers=1), args.repeat)
        t_par, c_par = best_times(lambda: pq_compute(*paths, workers=args.workers), args.repeat)
        gt = json.loads(paths[0].read_text())
        files = [paths[1] / a["file_name"] for a in gt["annotations"]] + [paths[3] / a["file_name"] for a in gt["annotations"]]
        t_png, c_png = best_times(lambda: [_read_packed(f, str(f)) for f in files], args.repeat)
        n = args.images

        def row(label, wall, cpu, base=None):
            extra = "" if base is None else f"  x{base[0] / wall:.2f} wall, x{base[1] / cpu:.2f} CPU"
            print(f"{label:44} {n / wall:7.1f} images/s  {1000 * wall / n:6.1f} ms/image wall  {1000 * cpu / n:6.1f} ms/image CPU{extra}")

        row("reference (panopticapi loop, 1 process)", t_ref, c_ref)
        row("pq_compute, 1 thread", t_one, c_one, (t_ref, c_ref))
        row(f"pq_compute, {args.workers} threads", t_par, c_par, (t_ref, c_ref))
        row("PNG decoding alone (PIL, gt + prediction)", t_png, c_png)
        print(f"speed-up, {args.workers} threads vs reference: x{t_ref / t_par:.2f} (target x5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
