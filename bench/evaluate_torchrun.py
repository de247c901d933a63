"""Benchmark: `evaluate` under `torchrun --nproc_per_node 2` vs one process, on CPU.

Builds a synthetic evaluation split (`synth --classes base` + `prepare --val-ratio 1.0`,
default 200 scenes of 192x256) and scores the shipped base model on it twice, each run a
fresh command: one process, then `torchrun --standalone --nproc_per_node 2` (gloo), every
process with one thread (OMP_NUM_THREADS=1: the comparison is processes, not threads).
Prints both wall times (process start included), their ratio, and the largest difference
between any two numbers of the two metrics.json (the sharded evaluation accumulates the
per-image results in split order, so it is 0).

    python bench/evaluate_torchrun.py [--images 200] [--size 192x256] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parallelism import machine_parallelism  # bench/parallelism.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "panoptic_detr" / "weights" / "base-tiny.safetensors"


def run(cmd: list[str]) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t


def make_split(root: Path, images: int, size: str) -> Path:
    cli = [sys.executable, "-m", "panoptic_detr"]
    raw, data = root / "raw", root / "data"
    run([*cli, "synth", str(raw), "--images", str(images), "--classes", "base", "--size", size, "--quiet"])
    run([*cli, "prepare", "--class-map", "base", "--things", str(raw / "things"), "--stuff-truth",
         str(raw / "stuff" / "panoptic.json"), str(raw / "stuff" / "panoptic"), "--out", str(data),
         "--val-ratio", "1.0", "--quiet", "--workers", "2"])
    return data


def numbers(x, path=""):
    """(path, value) of every number in a JSON value."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from numbers(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from numbers(v, f"{path}/{i}")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, float(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", default="192x256", help="scene size HxW (default 192x256)")
    ap.add_argument("--keep", type=Path, help="build the split and outputs here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = make_split(root, args.images, args.size)
        short = args.size.split("x")[0]
        cmd = ["-m", "panoptic_detr", "evaluate", str(BASE), str(data), "--short-side", short, "--no-progress",
               "--no-per-class", "--batch-size", "1"]
        capacity = machine_parallelism(2)
        t1 = run([sys.executable, *cmd, "--out", str(root / "one")])
        t2 = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *cmd,
                  "--out", str(root / "two")])
        one = dict(numbers(json.loads((root / "one" / "metrics.json").read_text())))
        two = dict(numbers(json.loads((root / "two" / "metrics.json").read_text())))
        if one.keys() != two.keys():
            sys.exit("the two metrics.json have different keys")
        diff = max(abs(one[k] - two[k]) for k in one)
        print(f"evaluate, {args.images} images {args.size}, base model, CPU, 1 thread per process")
        print(f"  1 process:              {t1:7.1f} s  ({args.images / t1:5.1f} images/s)")
        print(f"  torchrun 2 processes:   {t2:7.1f} s  ({args.images / t2:5.1f} images/s)")
        print(f"  speed-up:               {t1 / t2:7.2f}x (reference: 2 processes of a pure CPU loop ran "
              f"{capacity:.2f}x faster than one, now)")
        print(f"  PQ {100 * one['/panoptic/All/pq']:.2f}; largest difference over {len(one)} numbers: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
