"""Two CPU processes under torchrun (gloo) train together: same loss and weights, one writer."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from fake_prepared import TINY_SETTINGS, write_prepared  # noqa: E402


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_torchrun_two_cpu_processes(tmp_path):
    data = write_prepared(tmp_path / "data", n_train=4, n_val=1, size=(64, 64))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve().parent / "train_with_test_hooks.py"), "--print-rank-checksum",
           "--data", str(data), "--out", str(out), "--config", "tiny",
           "--epochs", "2", "--batch-size", "1", "--workers", "0", "--device", "cpu", "--threads", "1",
           "--no-progress"]
    for s in TINY_SETTINGS:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    ranks = dict(
        (int(m[1]), (m[2], m[3]))
        for m in re.finditer(r"\[rank (\d)/2\] step 4 loss (\S+) checksum (\S+)", p.stderr)
    )
    assert set(ranks) == {0, 1}, p.stderr[-3000:]
    assert ranks[0] == ranks[1]  # same (averaged) loss and the same weights on both
    # only rank 0 writes: one checkpoint, one set of metrics (4 images / 2 processes / batch 1 = 2 steps per epoch)
    assert sorted(x.name for x in out.iterdir() if x.suffix == ".pth") == ["checkpoint.pth", "model_final.pth"]
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if json.loads(l)["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert p.stdout.count("train: done") == 1
    ck = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["global_step"] == 4
