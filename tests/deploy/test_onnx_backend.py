"""`predict` / `evaluate --backend onnxruntime|openvino`: the same maps as torch, and one-line errors on bad folders."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import BASE_MODEL, SIZE, THRESHOLD, noise_image, scene
from panoptic_detr.cli import main
from panoptic_detr.data.formats.coco_panoptic import read_id_png

RUNTIMES = ["onnxruntime", "openvino"]
COMMON = ["--threshold", str(THRESHOLD), "--short-side", str(SIZE["short_side"]), "--max-size", str(SIZE["max_size"])]


def image_folder(root: Path) -> Path:
    root.mkdir()
    for i, (h, w) in enumerate([(120, 160), (150, 110), (97, 97)]):
        Image.fromarray(scene(i, (h, w))).save(root / f"im{i}.png")
    return root


def needs(runtime: str) -> None:
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="the 'openvino' extra is part of the test extra")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_predict_maps_equal_torch(runtime, base_export, tmp_path, capsys):
    """The shipped base model, each backend with the checkpoint's own inference settings."""
    needs(runtime)
    images = image_folder(tmp_path / "images")
    args = [str(images), "--quiet", "--no-overlay"]
    assert main(["predict", str(BASE_MODEL), *args, "--out", str(tmp_path / "torch")]) == 0
    assert main(["predict", "--backend", runtime, str(base_export), *args, "--threads", "1",
                 "--out", str(tmp_path / "ort")]) == 0
    settings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("inference:")]
    assert len(settings) == 2 and settings[0] == settings[1] and "threshold 0.4, dedup 0.5" in settings[0]
    torch_json = json.loads((tmp_path / "torch" / "predictions.json").read_text())
    ort_json = json.loads((tmp_path / "ort" / "predictions.json").read_text())
    assert ort_json["categories"] == torch_json["categories"]
    segments = 0
    for a, b in zip(torch_json["annotations"], ort_json["annotations"]):
        ids_a = read_id_png(tmp_path / "torch" / "panoptic" / a["file_name"])
        ids_b = read_id_png(tmp_path / "ort" / "panoptic" / b["file_name"])
        np.testing.assert_array_equal(ids_a, ids_b)
        for sa, sb in zip(a["segments_info"], b["segments_info"], strict=True):
            assert {k: v for k, v in sa.items() if k != "score"} == {k: v for k, v in sb.items() if k != "score"}
            assert sa.get("score", 0) == pytest.approx(sb.get("score", 0), abs=1e-4)
        segments += len(a["segments_info"])
    assert segments >= 6 and len({s["category_id"] for a in torch_json["annotations"] for s in a["segments_info"]}) > 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_r50_small_predictor_keeps_the_same_queries(runtime, r50_small_model, r50_small_export):
    """The random r50-style model: same kept queries, scores and mask logits as the torch path.
    (Its maps are not compared: random mask heads give every query nearly the same mask, ~1e-5
    apart, so the argmax between them is decided by float rounding.)"""
    from panoptic_detr.deploy.onnx_predictor import OnnxPredictor
    from panoptic_detr.engine.inference import select_queries
    from panoptic_detr.engine.predict import Predictor

    needs(runtime)
    ort = OnnxPredictor(r50_small_export, threshold=THRESHOLD, threads=1, runtime=runtime, **SIZE)
    ref = Predictor(r50_small_model, threshold=THRESHOLD, **SIZE)
    assert ort.categories.names() == ref.categories.names()
    for image in (noise_image(90, 120, 0), noise_image(120, 90, 5)):
        x, _ = ort.preprocess(image)
        outs, masks = ort.run_graphs(x)
        with torch.inference_mode():
            out = ref.model(x[None], with_masks=False)
            keep, scores, labels = select_queries(out["pred_logits"][0], THRESHOLD)
            kept = keep.nonzero().flatten()
            ref_masks = ref.model.masks_for_queries(out["mask_context"], torch.zeros_like(kept), kept)
        ort_keep, ort_scores, ort_labels = select_queries(torch.from_numpy(outs["pred_logits"][0]), THRESHOLD)
        assert torch.equal(ort_keep, keep) and torch.equal(ort_labels[keep], labels[keep]) and kept.numel() >= 2
        assert torch.allclose(ort_scores, scores, atol=1e-4)
        assert masks.shape == tuple(ref_masks.shape) and np.abs(masks - ref_masks.numpy()).max() < 1e-3
    id_map, segments, cats = ort.panoptic(noise_image(90, 120, 0))  # the teacher form
    assert id_map.shape == (90, 120) and segments and cats is ort.categories


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_evaluate_metrics_equal_torch(runtime, tiny_checkpoint, tiny_export, tmp_path):
    """A random tiny model (the prepared test data's categories) under both backends."""
    needs(runtime)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
    from fake_prepared import write_prepared

    data = write_prepared(tmp_path / "data", n_train=1, n_val=2, size=(72, 96))
    metrics = {}
    for backend, model in (("torch", tiny_checkpoint), (runtime, tiny_export)):
        out = tmp_path / backend
        assert main(["evaluate", str(model), str(data), "--backend", backend, "--out", str(out), "--no-progress",
                     *COMMON]) == 0
        metrics[backend] = json.loads((out / "metrics.json").read_text())
    assert metrics[runtime] == metrics["torch"]


# ----------------------------------------------------------------------------- bad input
def broken_copy(src: Path, dst: Path, edit=None, drop: str | None = None, swap: tuple[str, Path] | None = None) -> Path:
    """A copy of an export folder (graphs linked) with model.json edited or a graph dropped or swapped."""
    dst.mkdir()
    for name in ("detr.onnx", "mask_head.onnx"):
        if name != drop:
            os.symlink(swap[1] if swap and swap[0] == name else src / name, dst / name)
    data = json.loads((src / "model.json").read_text())
    if edit:
        edit(data)
    (dst / "model.json").write_text(json.dumps(data))
    return dst


def _other_version(d):
    d["format_version"] = 99


def _foreign_category(d):
    d["categories"].append({"id": 300, "name": "crane", "isthing": 1})


def _fewer_classes(d):
    d["num_classes"] = max(c["id"] for c in d["categories"])  # the last category no longer fits


def _more_classes(d):
    d["num_classes"] += 30  # fits the categories, not the graph


@pytest.mark.parametrize("case, message", [
    ("empty", "no model.json"),
    ("file", "not an export folder"),
    ("version", "format_version 99 was written by another panoptic-detr version"),
    ("missing", "detr.onnx: graph file not found"),
    ("swapped", "mask_head.onnx: not the graph"),
    ("category", "category id 300 ('crane') does not fit the graph's {n} classes"),
    ("fewer", "category id {last_id} ('{last}') does not fit the graph's {last_id} classes"),
    ("more", "num_classes {more} does not match detr.onnx's {c} classes"),
])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_export_folders_give_one_line(runtime, case, message, tiny_export, r50_small_export, tmp_path, capsys):
    needs(runtime)
    data = json.loads((tiny_export / "model.json").read_text())
    last = max(data["categories"], key=lambda c: c["id"])
    message = message.format(n=data["num_classes"], last_id=last["id"], last=last["name"], more=data["num_classes"] + 30,
                             c=data["num_classes"])
    bad = tmp_path / "bad"
    if case == "empty":
        bad.mkdir()
    elif case == "file":
        bad.write_text("x")
    else:
        edits = {"version": _other_version, "category": _foreign_category, "fewer": _fewer_classes,
                 "more": _more_classes}
        broken_copy(tiny_export, bad, edit=edits.get(case), drop="detr.onnx" if case == "missing" else None,
                    swap=("mask_head.onnx", r50_small_export / "mask_head.onnx") if case == "swapped" else None)
    image = tmp_path / "im.png"
    Image.fromarray(noise_image(40, 50, 0)).save(image)
    code = main(["predict", "--backend", runtime, str(bad), str(image), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_export_errors(tiny_checkpoint, tiny_export, tmp_path, capsys, monkeypatch):
    assert main(["export", str(tiny_checkpoint), "--out", str(tiny_export)]) == 2
    assert "output exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing.pth"), "--out", str(tmp_path / "x")]) == 2
    assert "no such checkpoint file or folder, model name or model preset" in capsys.readouterr().err
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "x"), "--opset", "13"]) == 2
    assert "--opset must be at least 17" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the 'deploy' extra not installed
    assert main(["predict", "--backend", "onnxruntime", str(tiny_export), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'panoptic-detr[deploy]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(["predict", "--backend", "openvino", str(tiny_export), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'panoptic-detr[openvino]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_openvino_runs_on_the_cpu_only(tiny_export):
    needs("openvino")
    from panoptic_detr.deploy.onnx_predictor import OnnxPredictor
    from panoptic_detr.errors import PanopticDetrError

    with pytest.raises(PanopticDetrError, match="--backend openvino runs on the CPU here"):
        OnnxPredictor(tiny_export, runtime="openvino", device="cuda")


def test_export_a_preset_with_random_weights(tmp_path, capsys):
    out = tmp_path / "tiny-random"
    assert main(["export", "tiny", "--out", str(out), "--trace-size", "64x96", "--no-verify"]) == 0
    captured = capsys.readouterr()
    assert "warning: 'tiny' is a model preset, not a file: exporting random weights" in captured.err
    assert "exported panoptic model" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "detr.onnx", "mask_head.onnx", "model.json"]
    shutil.rmtree(out)


def test_openvino_predictors_leave_a_valid_signal_stack(tiny_export):
    """OpenVINO's CPU plugin swaps the thread's signal stack; predictors made and dropped in
    creation order once left it on freed memory, and the next Python signal handler (Ctrl-C,
    a DataLoader's SIGCHLD) killed the process. In a child process: a crash must not take
    the test run with it."""
    needs("openvino")
    import subprocess

    code = f"""
import gc, os, signal, sys
from panoptic_detr.deploy.onnx_predictor import OnnxPredictor
first = OnnxPredictor({str(tiny_export)!r}, runtime="openvino", threads=1)
second = OnnxPredictor({str(tiny_export)!r}, runtime="openvino", threads=1)
del first; gc.collect(); del second; gc.collect()
caught = []
signal.signal(signal.SIGUSR1, lambda *_: caught.append(1))
os.kill(os.getpid(), signal.SIGUSR1)
sys.exit(0 if caught else 3)
"""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-1000:])
