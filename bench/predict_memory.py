"""Benchmark: `predict`'s memory stays flat however many images (results written as they come).

Writes `--images` small synthetic images (default 2,000 PNGs of 64x80), then runs
`commands.predict.predict_paths` with the shipped base model (short side 64, overlays on,
images decoded by 2 worker processes) in a fresh process and records this process's
resident memory (VmRSS) after every `--every` images. Prints the RSS after 200 images
(the reference, taken in the same run), after each checkpoint, and the ratio of the last
to the reference (goal: within 10%).

    python bench/predict_memory.py [--images 2000] [--every 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE = ROOT / "panoptic_detr" / "weights" / "base-tiny.safetensors"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_images(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 64), Image.BILINEAR).save(folder / f"img_{i:06d}.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import torch

    from panoptic_detr.commands import _predict_output as po
    from panoptic_detr.commands.predict import predict_paths
    from panoptic_detr.engine.predict import Predictor

    torch.set_num_threads(1)
    seen: list[tuple[int, float, float]] = []
    real = po.PredictionsFolder.add
    t0 = [0.0]

    def add(self, *a, **k):  # the writer of each image, counting and sampling RSS
        real(self, *a, **k)
        count = add.count = getattr(add, "count", 0) + 1
        if count % args.every == 0 or count == args.images:
            seen.append((count, rss_mb(), time.perf_counter() - t0[0]))

    po.PredictionsFolder.add = add
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        write_images(Path(tmp) / "images", args.images)
        predictor = Predictor(BASE, short_side=64)
        t0[0] = time.perf_counter()
        report = predict_paths(predictor, [Path(tmp) / "images"], Path(tmp) / "out", progress=False,
                               workers=args.workers)
        assert len(report.written) == args.images
        after = rss_mb()  # predictions.json and predictions.jsonl assembled, the folder renamed
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"predict, {args.images} images 64x80, base model, 1 thread, {args.workers} decoding workers")
    ref = next(r for n, r, _ in seen if n >= 200)
    for n, r, t in seen:
        print(f"  after {n:6d} images: RSS {r:7.1f} MB  ({n / t:5.1f} images/s so far)")
    print(f"  after assembling predictions.json: RSS {after:7.1f} MB; peak RSS of the run {peak:7.1f} MB")
    print(f"  RSS after {seen[-1][0]} / after 200: {seen[-1][1] / ref:.3f} (peak / after 200: {peak / ref:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
