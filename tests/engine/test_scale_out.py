"""Scale-out: evaluate and predict under torchrun (gloo, 2 CPU processes) equal one process,
predict --resume after a SIGKILL, prepare --workers 2 byte-identical to 1, prepare's teacher
batched and under torchrun byte-identical to one process, TensorBoard events."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from panoptic_detr.cli import main
from panoptic_detr.engine.sharding import Shard, shard_indices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from fake_prepared import tiny_config, write_prepared  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = ["--short-side", "96"]
needs_dist = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")


def torchrun(*args: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(root, a prepared evaluation set of 6 synthetic 96x128 scenes, the shipped base model)."""
    import panoptic_detr

    root = tmp_path_factory.mktemp("scale")
    raw, data = root / "raw", root / "data"
    assert main(["synth", str(raw), "--images", "6", "--classes", "base", "--size", "96x128", "--quiet"]) == 0
    assert main(["prepare", "--class-map", "base", "--things", str(raw / "things"), "--stuff-truth",
                 str(raw / "stuff" / "panoptic.json"), str(raw / "stuff" / "panoptic"), "--out", str(data),
                 "--val-ratio", "1.0", "--quiet"]) == 0
    return root, data, Path(panoptic_detr.__file__).parent / "weights" / "base-tiny.safetensors"


def test_shards_are_disjoint_and_complete():
    for n in (0, 1, 5, 12):
        for world in (1, 2, 3):
            parts = [list(Shard(r, world).indices(n)) for r in range(world)]
            assert sorted(i for p in parts for i in p) == list(range(n))
    assert list(shard_indices(7, 1, 2)) == [1, 3, 5]
    with pytest.raises(ValueError):
        shard_indices(3, 2, 2)


@needs_dist
def test_evaluate_under_torchrun_equals_one_process(tiny, capsys):
    root, data, ckpt = tiny
    args = ["evaluate", str(ckpt), str(data), *SIZE, "--no-progress"]
    assert main([*args, "--out", str(root / "eval1")]) == 0
    capsys.readouterr()
    p = torchrun("-m", "panoptic_detr", *args, "--out", str(root / "eval2"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("metrics written to") == 1  # rank 0 reports, once
    one = json.loads((root / "eval1" / "metrics.json").read_text())
    two = json.loads((root / "eval2" / "metrics.json").read_text())
    assert two == one  # every number, exactly
    assert one["panoptic"]["num_images"] == 6
    assert one["panoptic"]["All"]["pq"] > 0.05 and "bbox" in one and "segm" in one  # real numbers
    assert files_of(root / "eval2") == files_of(root / "eval1")  # predictions.json and the PNGs too


@needs_dist
def test_predict_torchrun_killed_then_resumed_equals_one_process(tiny, capsys):
    root, data, ckpt = tiny
    images = data / "images" / "val"
    args = [str(ckpt), str(images), *SIZE, "--quiet", "--workers", "1"]
    assert main(["predict", *args, "--out", str(root / "pred1")]) == 0
    capsys.readouterr()
    out = root / "pred2"
    killed = torchrun(str(ROOT / "tests" / "engine" / "predict_with_kill.py"), *args, "--out", str(out),
                      env={"KILL_RANK": "1", "KILL_AFTER": "1"})
    assert killed.returncode != 0
    staging = root / ".pred2.partial"
    assert not out.exists() and staging.is_dir()
    parts = {}
    for part in sorted((staging / "parts").glob("rank-*.jsonl")):
        lines = part.read_text().splitlines()
        parts[part.name] = [json.loads(line)["index"] for line in lines if line.endswith("}")]
    assert parts["rank-1.jsonl"] == [1]  # rank 1 did image 1, then died writing image 3
    assert (staging / "parts" / "rank-1.jsonl").read_text().endswith('"id"')  # the torn line
    assert set(parts["rank-0.jsonl"]) <= {0, 2, 4}  # rank 0's shard: disjoint from rank 1's
    done = sum(len(v) for v in parts.values())

    resumed = torchrun("-m", "panoptic_detr", "predict", *args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    m = re.search(r"(\d+) image\(s\) predicted into .* \((\d+) done before --resume\) by 2 processes", resumed.stderr)
    assert m and int(m[2]) == done and int(m[1]) + done == 6, resumed.stderr[-2000:]  # each image once
    assert not staging.exists()
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["image"]["file_name"] for line in lines) == sorted(p.name for p in images.iterdir())
    assert files_of(out) == files_of(root / "pred1")  # PNGs, overlays, predictions.json(l): identical


def test_predict_resume_refuses_other_settings(tiny, capsys):
    root, data, ckpt = tiny
    out = root / "pred3"
    staging = root / ".pred3.partial"
    args = [str(ckpt), str(data / "images" / "val"), *SIZE, "--quiet", "--workers", "0", "--out", str(out)]
    staging.mkdir()
    (staging / "run.json").write_text(json.dumps({"images": 6}))
    assert main(["predict", *args]) == 2
    assert "partial output of an interrupted run; pass --resume to continue it" in capsys.readouterr().err
    assert main(["predict", *args, "--resume"]) == 2
    assert "started with other" in capsys.readouterr().err
    assert main(["predict", *args, "--overwrite"]) == 0  # starts over
    assert "removing the partial output" in capsys.readouterr().err
    assert not staging.exists() and len((out / "predictions.jsonl").read_text().splitlines()) == 6


def test_prepare_two_workers_byte_identical(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["synth", str(raw), "--images", "10", "--classes", "demo"]) == 0
    common = ["prepare", "--class-map", "demo", "--things", str(raw / "things"), "--stuff-truth",
              str(raw / "stuff" / "panoptic.json"), str(raw / "stuff" / "panoptic"), "--quiet"]
    assert main([*common, "--out", str(tmp_path / "w1"), "--workers", "1"]) == 0
    assert main([*common, "--out", str(tmp_path / "w2"), "--workers", "2"]) == 0
    one, two = files_of(tmp_path / "w1"), files_of(tmp_path / "w2")
    assert sum(name.endswith(".png") for name in one) >= 20  # images and panoptic PNGs
    assert two == one


@pytest.fixture(scope="module")
def teacher_prepared(tiny):
    """(the prepare command with the shipped model as teacher, its output in one process,
    the teacher asked image by image)."""
    root, _, ckpt = tiny
    common = ["prepare", "--class-map", "base", "--things", str(root / "raw" / "things"), "--stuff-from", str(ckpt),
              "--teacher-short-side", "96", "--teacher-mask-things", "--quiet"]
    assert main([*common, "--out", str(root / "teach1")]) == 0
    one = files_of(root / "teach1")
    assert sum(name.startswith("panoptic/") for name in one) == 6
    return common, one


def test_prepare_teacher_batched_equals_one_by_one(tiny, teacher_prepared, monkeypatch, capsys):
    import panoptic_detr.engine.predict as predict_mod

    root = tiny[0]
    common, one = teacher_prepared
    # windows of images, each image alone through the network (the CPU default), 2 workers
    assert main([*common, "--out", str(root / "teach3"), "--teacher-batch-size", "3", "--workers", "2"]) == 0
    assert files_of(root / "teach3") == one
    # the GPU path on the CPU: same-size images through the network 3 at a time
    real, forwards = predict_mod.Predictor, []

    class Batching(real):
        def __init__(self, *a, **kw):
            super().__init__(*a, batch_forward=True, **kw)

        def _run(self, tensors, sizes):
            forwards.append(len(tensors))
            return super()._run(tensors, sizes)

    monkeypatch.setattr(predict_mod, "Predictor", Batching)
    assert main([*common, "--out", str(root / "teachb"), "--teacher-batch-size", "3"]) == 0
    assert forwards == [3, 3]
    assert files_of(root / "teachb") == one
    capsys.readouterr()
    assert main([*common, "--out", str(root / "teachx"), "--teacher-batch-size", "0"]) == 2
    assert "error: --teacher-batch-size must be at least 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*common, "--out", str(root / "teachx"), "--teacher-device", "cuda"]) == 2
        assert "error: --teacher-device cuda: CUDA is not available" in capsys.readouterr().err
    assert not (root / "teachx").exists()


@needs_dist
def test_prepare_teacher_under_torchrun_equals_one_process(tiny, teacher_prepared):
    root = tiny[0]
    common, one = teacher_prepared
    p = torchrun("-m", "panoptic_detr", *common, "--out", str(root / "teach2"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "teacher: 6 image(s) labelled by 2 processes (3 + 3)" in p.stderr  # a disjoint shard each
    assert p.stdout.count("prepared ") == 1  # rank 0 writes
    assert files_of(root / "teach2") == one


def test_tensorboard_events_written_and_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from panoptic_detr.engine.metrics_log import read_metrics
    from panoptic_detr.engine.train import train as run_training

    data = write_prepared(tmp_path / "data", n_train=2, n_val=1, size=(48, 64))
    out = tmp_path / "run"
    run_training(tiny_config(data, out, "eval.every=1", "eval.threshold=0.05", epochs=1, device="cpu"), log_fn=lambda m: None)
    assert list(out.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    records = read_metrics(out)
    train = [r for r in records if r["kind"] == "train"]
    assert [e.step for e in acc.Scalars("train/loss")] == [r["step"] for r in train]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([r["lr"] for r in train], rel=1e-6)
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and [e.value for e in acc.Scalars("eval/pq")] == pytest.approx([r["pq"] for r in evals], rel=1e-6)
    assert {"eval/sq", "eval/rq", "eval/val_loss", "epoch/loss"} <= set(acc.Tags()["scalars"])
    assert any(tag.startswith("val/") for tag in acc.Tags()["images"])  # a val overlay
