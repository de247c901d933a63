"""GPU check (`make gpu-check`): the CUDA paths end to end, with figures.

On a machine with CUDA: a small synthetic split (`synth --classes base` + `prepare`),
then `train --config r50-panoptic` (random weights) for `--steps` steps with autocast
(`--amp auto`: bf16 where supported, else fp16) and channels-last, DDP over every visible
GPU through `torchrun --nproc_per_node <GPUs>`; then `predict` and `evaluate` on the split
under torchrun as well. Prints the step time, training images/s, peak GPU memory (from the
training's own `torch.cuda.max_memory_allocated`, reported by a hook), predict images/s
and the PQ (of a model trained for a few steps: a smoke figure, not a quality one).
Without CUDA it says so in one line and exits 0.

    python bench/gpu_check.py [--steps 30] [--images 64] [--batch-size 4] [--keep DIR]
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

ROOT = Path(__file__).resolve().parent.parent

HOOK = '''
import sys, torch
from panoptic_detr.commands import train as command
from panoptic_detr.engine.hooks import Hook
from panoptic_detr.engine.train import train

class PeakMemory(Hook):
    def after_train(self, trainer):
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**30
        print(f"[rank {trainer.rank}] peak GPU memory {peak:.2f} GiB", file=sys.stderr, flush=True)

parser = __import__("argparse").ArgumentParser()
command.configure(parser)
args = parser.parse_args()
train(command.build_config(args), resume=args.resume, hooks=[PeakMemory()])
'''


def run(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"gpu-check: failed: {' '.join(cmd)}\n{p.stderr[-4000:]}")
    return time.perf_counter() - t, p.stdout + p.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--keep", type=Path, help="work here (default: a temporary folder)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
              "nothing to check")
        return 0
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        cli = [sys.executable, "-m", "panoptic_detr"]
        dist = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
        raw, data, out = root / "raw", root / "data", root / "run"
        run([*cli, "synth", str(raw), "--images", str(args.images), "--classes", "base", "--quiet"])
        run([*cli, "prepare", "--class-map", "base", "--things", str(raw / "things"), "--stuff-truth",
             str(raw / "stuff" / "panoptic.json"), str(raw / "stuff" / "panoptic"), "--out", str(data), "--quiet",
             "--workers", "4"])
        (root / "train_peak.py").write_text(HOOK)
        _, log = run([*dist, str(root / "train_peak.py"), "--data", str(data), "--out", str(out),
                      "--config", "r50-panoptic", "--max-steps", str(args.steps), "--epochs", "1000",
                      "--batch-size", str(args.batch_size), "--device", "cuda", "--amp", "auto", "--no-progress",
                      "--set", "channels_last=true", "--set", "eval.every=-1", "--set", "log_every=1",
                      "--set", "data.scales=[256]", "--set", "data.max_size=400"])
        records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["kind"] == "train"][5:] or [r for r in records if r["kind"] == "train"]
        times = [b["time"] - a["time"] for a, b in zip(train, train[1:])]
        step_s = sorted(times)[len(times) // 2] if times else float("nan")
        ips = sorted(r["images_per_s"] for r in train)[len(train) // 2]
        peaks = [float(line.split()[-2]) for line in log.splitlines() if "peak GPU memory" in line]
        ckpt = out / "model_final.pth"
        t_pred, _ = run([*dist, "-m", "panoptic_detr", "predict", str(ckpt), str(data / "images" / "val"),
                         "--out", str(root / "pred"), "--device", "cuda", "--quiet", "--threshold", "0.3"])
        n_val = len(list((data / "images" / "val").iterdir()))
        run([*dist, "-m", "panoptic_detr", "evaluate", str(ckpt), str(data), "--out", str(root / "eval"),
             "--device", "cuda", "--no-progress", "--threshold", "0.3"])
        pq = json.loads((root / "eval" / "metrics.json").read_text())["panoptic"]["All"]["pq"]
    print(f"gpu-check: {gpus} x {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"  train r50-panoptic, {args.steps} steps, batch {args.batch_size}/GPU, amp auto, channels-last, "
          f"DDP x{gpus}: median step {step_s * 1000:.0f} ms, {ips:.1f} images/s, "
          f"peak GPU memory {max(peaks) if peaks else float('nan'):.2f} GiB")
    print(f"  predict (torchrun x{gpus}): {n_val} images in {t_pred:.1f} s, process start and model load included")
    print(f"  evaluate (torchrun x{gpus}): PQ {100 * pq:.1f} (after {args.steps} steps from random weights: a smoke test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
