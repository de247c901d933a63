"""Exact resumption: SIGKILL in the middle of an epoch, resume, same final weights."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from fake_prepared import TINY_SETTINGS, one_thread, tiny_config, write_prepared  # noqa: E402

from panoptic_detr.errors import CheckpointError  # noqa: E402

# augmentation on (flip, random resize, crop) and dropout on: every RNG stream matters
SETTINGS = TINY_SETTINGS + [
    "model_overrides={dropout: 0.1}",
    "data.scales=[48,64]",
    "data.crop_resize=[56,64]",
    "data.hflip=0.5",
    "checkpoint_every=2",
    "optim.lr_backbone=0",  # frozen backbone weights (BatchNorm statistics still move): smaller checkpoints
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("data"), n_train=6, n_val=1, size=(64, 64))


# `panoptic-detr train` plus test hooks (--kill-at-step)
WITH_TEST_HOOKS = str(Path(__file__).resolve().parent / "train_with_test_hooks.py")


def _cmd(data, out, workers, *extra):
    launch = [sys.executable, WITH_TEST_HOOKS] if extra else [sys.executable, "-m", "panoptic_detr", "train"]
    cmd = launch + ["--data", str(data), "--out", str(out), "--config", "tiny", "--epochs", "2", "--batch-size", "2",
                    "--workers", str(workers), "--seed", "3", "--threads", "1", "--no-progress", *extra]
    for s in SETTINGS:
        cmd += ["--set", s]
    return cmd


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigkill_mid_epoch_then_resume_is_bit_identical(data, tmp_path):
    from panoptic_detr.engine.train import train

    # uninterrupted reference, in this process (same settings, one thread)
    ref = tmp_path / "ref"
    with one_thread():
        train(tiny_config(data, ref, *SETTINGS[len(TINY_SETTINGS):], epochs=2, seed=3, data={"batch_size": 2, "workers": 0}))

    # 3 steps per epoch; checkpoints at steps 2 and 4 (mid-epoch) and at epoch ends.
    # The run is SIGKILLed as it starts step 5: it resumes from step 4, in epoch 2.
    out = tmp_path / "killed"
    p = subprocess.run(_cmd(data, out, 1, "--kill-at-step", "5"), env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ck = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 1, 4)
    assert not (out / "model_final.pth").exists()

    p = subprocess.run(_cmd(data, out, workers=1), env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resume: epoch 2, step 4" in p.stdout

    a = torch.load(ref / "model_final.pth", weights_only=True)["model"]
    b = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    oa = torch.load(ref / "checkpoint.pth", weights_only=True)["optimizer"]["state"]
    ob = torch.load(out / "checkpoint.pth", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)

    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_truncated_or_foreign_checkpoint_gives_clear_error(data, tmp_path):
    from panoptic_detr.cli import main
    from panoptic_detr.engine.checkpointing import load_training_checkpoint, save_checkpoint
    from panoptic_detr.engine.train import train

    good = tmp_path / "good.pth"
    save_checkpoint(good, {"model": {"w": torch.zeros(1000)}, "optimizer": {}, "epoch": 0, "step_in_epoch": 0, "global_step": 0})
    assert load_training_checkpoint(good)["global_step"] == 0

    out = tmp_path / "run"
    out.mkdir()
    blob = good.read_bytes()
    (out / "checkpoint.pth").write_bytes(blob[: len(blob) // 2])
    with one_thread(), pytest.raises(CheckpointError, match=r"checkpoint\.pth: truncated or corrupt"):
        train(tiny_config(data, out, epochs=1))

    (out / "checkpoint.pth").write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pth: not a checkpoint"):
        load_training_checkpoint(out / "checkpoint.pth")

    model_only = tmp_path / "model.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, model_only)
    with pytest.raises(CheckpointError, match="use --init"):
        load_training_checkpoint(model_only)

    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_config(data, tmp_path / "empty", epochs=1), resume=True)

    args = ["train", "--data", str(data), "--out", str(out), "--config", "tiny"]
    assert main(args) == 2
    shutil.rmtree(out)
