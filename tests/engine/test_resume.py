"""Exact resumption: SIGKILL in the middle of an epoch (or before the first checkpoint), resume,
same final weights and the same metrics.jsonl records; a finished run re-run changes nothing."""

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
    "checkpoint_every=5",
    "log_every=2",  # train records at steps 2, 4, 6; the checkpoint at 5 holds a half-full window
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

    # 3 steps per epoch; checkpoints at step 5 (mid-epoch) and at epoch ends (3, 6).
    # The run is SIGKILLed as it starts step 6: it resumes from step 5, in epoch 2, with the
    # running sums of the step-6 train record (step 5) and of the epoch record (4, 5).
    out = tmp_path / "killed"
    p = subprocess.run(_cmd(data, out, 1, "--kill-at-step", "6"), env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ck = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 2, 5)
    assert not (out / "model_final.pth").exists()
    # a kill during a checkpoint write leaves its temporary: the next start removes it
    stale = out / ".checkpoint.pth.k1ll3d_x.tmp"
    stale.write_bytes(b"\0" * 1000)
    other = out / ".notes.txt.k1ll3d_x.tmp"  # not a file of the run: kept
    other.write_text("keep me")

    p = subprocess.run(_cmd(data, out, workers=1), env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resume: epoch 2, step 5" in p.stdout
    assert not stale.exists() and other.exists()
    assert "removed 1 temporary file(s) of an interrupted write" in p.stdout

    a = torch.load(ref / "model_final.pth", weights_only=True)["model"]
    b = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    oa = torch.load(ref / "checkpoint.pth", weights_only=True)["optimizer"]["state"]
    ob = torch.load(out / "checkpoint.pth", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)

    records = _records(out)
    assert [(r["kind"], r["step"]) for r in records] == [
        ("train", 2), ("epoch", 3), ("train", 4), ("train", 6), ("epoch", 6), ("final", 6)]
    assert records == _records(ref)  # same means, record for record (timings aside)


TIMINGS = ("time", "images_per_s", "epoch_time")


def _records(out):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_kill_before_first_checkpoint_then_rerun_and_finished_rerun(data, tmp_path):
    """A kill after the first records but before any checkpoint: the re-run starts over
    without duplicates. Re-running the finished run changes nothing, and completes what a
    kill after its last checkpoint left out (the final record)."""
    from panoptic_detr.engine.train import train

    out = tmp_path / "early"
    p = subprocess.run(_cmd(data, out, 0, "--kill-at-step", "3"), env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not (out / "checkpoint.pth").exists()
    assert [r["step"] for r in _records(out)] == [2]
    with one_thread():
        cfg = tiny_config(data, out, *SETTINGS[len(TINY_SETTINGS):], epochs=2, seed=3,
                          data={"batch_size": 2, "workers": 0})
        train(cfg)
    records = _records(out)
    assert [(r["kind"], r["step"]) for r in records] == [
        ("train", 2), ("epoch", 3), ("train", 4), ("train", 6), ("epoch", 6), ("final", 6)]

    files = ("metrics.jsonl", "model_final.pth", "checkpoint.pth")
    before = {name: (out / name).read_bytes() for name in files}
    with one_thread():
        summary = train(cfg)
    assert summary["global_step"] == 6
    assert {name: (out / name).read_bytes() for name in files} == before

    # killed after its last checkpoint, before the final record (and a torn line): re-run
    lines = before["metrics.jsonl"].decode().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text("".join(lines[:-1]) + '{"kind": "fin')
    with one_thread():
        train(cfg)
    assert _records(out) == records


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
