"""Benchmark: PQ evaluation speed, `pq_compute` vs the panopticapi's single-process loop.

Builds a synthetic COCO-panoptic set (default 200 images of 480x640 with about 20
segments each: stuff bands, thing ellipses and boxes, a crowd region, VOID seams) and
perturbed predictions (missing, merged, shifted, relabelled segments, false positives),
written as PNGs with PIL's default compression as the COCO files are. Then times, in
interleaved rounds (best of `--repeat`; the machine may be shared, so every figure is
taken in the same run as the reference's, as wall-clock and as CPU time of this process):

- the reference: `tests/evaluation/panopticapi_reference.py`, a step-by-step
  re-implementation of the panopticapi's per-image loop (single process);
- `pq_compute` in one thread, and with `--workers` workers (forked processes, as it
  chooses for enough images; threads for small sets);
- decoding the two PNGs of every image alone, with PIL and with pyspng: a floor that the
  decoder puts under the whole evaluation.

prints images/s for each and the speed-ups, and checks that the numbers agree (1e-9).
`--decoder pil` times the package as it runs without pyspng.

    python bench/pq.py [--images 200] [--height 480] [--width 640] [--repeat 3] [--workers N] [--decoder auto|pil]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
from panoptic_detr.data.formats import png_decode  # noqa: E402
from panoptic_detr.evaluation.panoptic_quality import pq_compute  # noqa: E402


def interleaved_best_times(fns: dict, repeat: int) -> dict[str, tuple[float, float]]:
    """Best wall-clock and best CPU time (this process, all threads, and its worker
    processes) of each function over
    `repeat` rounds; each round runs every function once, so a change in the machine's
    load hits all of them alike."""
    best = {name: (float("inf"), float("inf")) for name in fns}

    def cpu_time() -> float:  # this process and its finished worker processes
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    for _ in range(repeat):
        for name, fn in fns.items():
            t, c = time.perf_counter(), cpu_time()
            fn()
            wall, cpu = time.perf_counter() - t, cpu_time() - c
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=3, help="best of N interleaved rounds")
    ap.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="workers for the parallel run (default: pq_compute's)"
    )
    ap.add_argument("--decoder", choices=("auto", "pil"), default="auto", help="pil: as without pyspng installed")
    args = ap.parse_args(argv)
    from panoptic_detr.utils.malloc import tune_malloc

    tune_malloc()  # as the CLI does: freed buffers stay on the heap (no page faults per PNG)
    if args.decoder == "pil":
        png_decode.BACKEND = "pil"
    have_spng = png_decode.pyspng is not None

    with tempfile.TemporaryDirectory(prefix="bench-pq-") as tmp:
        t = time.perf_counter()
        paths = synth.random_set(
            Path(tmp), 0, n_images=args.images, h=args.height, w=args.width, n_things=16, n_stuff=4
        )
        n_segs = np.mean([len(a["segments_info"]) for a in json.loads(paths[0].read_text())["annotations"]])
        print(
            f"data: {args.images} images {args.width}x{args.height}, {n_segs:.1f} ground-truth segments "
            f"per image (built in {time.perf_counter() - t:.1f} s); {os.cpu_count()} CPUs; "
            f"PNG decoder: {png_decode.BACKEND}" + ("" if have_spng else " (pyspng not installed)")
        )
        ref = reference.pq_compute(*paths)
        for w in sorted({1, args.workers}):
            ours = pq_compute(*paths, workers=w)
            worst = max(abs(ours[g][k] - ref[g][k]) for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq"))
            assert worst < 1e-9, worst
        print(f"PQ {100 * ours['All']['pq']:.2f} (reference {100 * ref['All']['pq']:.2f}), max difference {worst:.1e}")

        gt = json.loads(paths[0].read_text())
        files = [paths[1] / a["file_name"] for a in gt["annotations"]] + [paths[3] / a["file_name"] for a in gt["annotations"]]
        par = f"pq_compute, {args.workers} workers"
        fns = {
            "reference": lambda: reference.pq_compute(*paths),
            "pq_compute, 1 thread": lambda: pq_compute(*paths, workers=1),
        }
        if args.workers > 1:
            fns[par] = lambda: pq_compute(*paths, workers=args.workers)

        def decode_all(release_gil: bool) -> None:
            for f in files:  # one image at a time: keeping them all would time page faults
                png_decode.read_packed_rgb(f, str(f), release_gil)

        fns["PNG decoding alone, PIL (gt + prediction)"] = lambda: decode_all(True)
        if have_spng and png_decode.BACKEND == "pyspng":
            fns["PNG decoding alone, pyspng (gt + prediction)"] = lambda: decode_all(False)
        best = interleaved_best_times(fns, args.repeat)
        n = args.images
        base = best["reference"]
        for label, (wall, cpu) in best.items():
            extra = "" if label == "reference" else f"  x{base[0] / wall:.2f} wall, x{base[1] / cpu:.2f} CPU"
            name = "reference (panopticapi loop, 1 process)" if label == "reference" else label
            print(f"{name:45} {n / wall:7.1f} images/s  {1000 * wall / n:6.1f} ms/image wall  {1000 * cpu / n:6.1f} ms/image CPU{extra}")
        top = min((k for k in best if k.startswith("pq_compute")), key=lambda k: best[k][0])  # fastest wall
        print(
            f"speed-up vs reference (target x5): x{base[0] / best[top][0]:.2f} wall ({top}), "
            f"x{base[1] / best['pq_compute, 1 thread'][1]:.2f} CPU (pq_compute, 1 thread)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
