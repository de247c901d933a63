"""evaluate_model over a prepared split (stub predictor and a tiny real model), the
metrics table and the `evaluate` command."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import panopticapi_reference as reference
import pq_synthetic as synth
from panoptic_detr.cli import main
from panoptic_detr.evaluation.coco_ap import coco_ap_from_panoptic
from panoptic_detr.evaluation.evaluate import evaluate_model, format_metrics
from panoptic_detr.evaluation.panoptic_quality import pq_compute
from test_coco_ap import instances_from_panoptic

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

H, W = 48, 64


def write_dataset(root: Path, n: int = 4, seed: int = 0, categories=synth.CATEGORIES, instances=True):
    """A prepared-dataset layout; image i has the value i in its first pixel so that the
    stub predictor can tell the images apart. Returns (root, {image_id: prediction})."""
    rng = np.random.default_rng(seed)
    for sub in ("images/val", "panoptic/val", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    images, anns, items, preds = [], [], [], {}
    for i in range(1, n + 1):
        ids, segs = synth.random_scene(rng, H, W, n_things=4, only_gt=i == 1)
        name = f"img_{i:03d}"
        pixels = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        pixels[0, 0, 0] = i
        Image.fromarray(pixels).save(root / "images" / "val" / f"{name}.png")
        synth.write_png(root / "panoptic" / "val" / f"{name}.png", ids)
        images.append({"id": 100 + i, "file_name": f"{name}.png", "height": H, "width": W})
        anns.append({"image_id": 100 + i, "file_name": f"{name}.png", "segments_info": segs})
        items.append((100 + i, ids, segs))
        pred, psegs = synth.perturb(rng, ids, segs)
        for s in psegs:
            s["isthing"] = s["category_id"] in synth.THINGS or s["category_id"] == synth.ONLY_PRED
        preds[i] = (pred, psegs)
    (root / "annotations" / "panoptic_val.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories})
    )
    if instances:
        inst = instances_from_panoptic(items, categories)
        for im in inst["images"]:  # other ids, same file names: matched by name
            im["id"] += 1000
            im["file_name"] = f"img_{im['id'] - 1100:03d}.png"
        for a in inst["annotations"]:
            a["image_id"] += 1000
        (root / "annotations" / "instances_val.json").write_text(json.dumps(inst))
    return root, preds


class StubPredictor:
    def __init__(self, preds):
        self.preds = preds
        self.batches = []

    def predict_batch(self, images):
        self.batches.append(len(images))
        out = []
        for im in images:
            pred, segs = self.preds[int(im[0, 0, 0])]
            out.append(SimpleNamespace(id_map=torch.from_numpy(pred.astype(np.int32)), segments_info=segs))
        return out


def test_evaluate_model_equals_pq_compute_on_its_files(tmp_path):
    root, preds = write_dataset(tmp_path / "ds")
    stub = StubPredictor(preds)
    out = tmp_path / "out"
    m = evaluate_model(stub, root, out_dir=out, batch_size=3, progress=False)
    assert stub.batches == [3, 1]
    gt = (root / "annotations" / "panoptic_val.json", root / "panoptic" / "val")
    files = pq_compute(*gt, out / "predictions.json", out / "predictions")
    assert m["panoptic"] == files
    ref = reference.pq_compute(*gt, out / "predictions.json", out / "predictions")
    for g in ("All", "Things", "Stuff"):
        assert m["panoptic"][g]["pq"] == pytest.approx(ref[g]["pq"], abs=1e-9)
    assert 0 < m["panoptic"]["All"]["pq"] < 1
    ap = coco_ap_from_panoptic(root / "annotations" / "instances_val.json", out / "predictions.json", out / "predictions")
    # the instances JSON numbers its images differently: matched by file name
    assert m["bbox"] == ap["bbox"] and m["segm"] == ap["segm"]
    assert 0 < m["segm"]["AP"] < 1
    json.dumps(m)

    # no out_dir: a temporary folder; batch size changes nothing
    m2 = evaluate_model(StubPredictor(preds), root, batch_size=1, progress=False)
    assert m2 == m


def test_without_instances_json_no_ap(tmp_path):
    root, preds = write_dataset(tmp_path / "ds", n=2, instances=False)
    m = evaluate_model(StubPredictor(preds), root, progress=False)
    assert set(m) == {"panoptic"}


def test_unknown_split_and_foreign_categories(tmp_path):
    from panoptic_detr.errors import PanopticDetrError
    from panoptic_detr.data.categories import CategoryList

    root, preds = write_dataset(tmp_path / "ds", n=1, instances=False)
    with pytest.raises(PanopticDetrError, match="panoptic_test.json: not found"):
        evaluate_model(StubPredictor(preds), root, split="test", progress=False)
    stub = StubPredictor(preds)
    stub.categories = CategoryList.from_json([{"id": 99, "name": "alien"}])
    with pytest.raises(PanopticDetrError, match="the model.s categories: predicted category .alien. \\(id 99\\) is not a category of"):
        evaluate_model(stub, root, progress=False)


def test_format_metrics_table(tmp_path):
    root, preds = write_dataset(tmp_path / "ds", n=2)
    m = evaluate_model(StubPredictor(preds), root, progress=False)
    text = format_metrics(m)
    lines = text.splitlines()
    assert lines[0].split() == ["PQ", "SQ", "RQ", "N"]
    assert lines[1].split()[0] == "All" and float(lines[1].split()[1]) == pytest.approx(100 * m["panoptic"]["All"]["pq"], abs=0.05)
    assert any(line.startswith("bbox") for line in lines) and any(line.startswith("segm") for line in lines)
    assert any(line.startswith("thing1") for line in lines)
    assert "stuff15" in text  # a class with nothing at all is listed with dashes
    assert "thing1" not in format_metrics(m, per_class=False)


TINY_CATEGORIES = [
    {"id": 1, "name": "thing1", "isthing": 1},
    {"id": 2, "name": "thing2", "isthing": 1},
    {"id": 3, "name": "stuff3", "isthing": 0},
]


@pytest.fixture(scope="module")
def tiny_model():
    from panoptic_detr import build_model
    from panoptic_detr.data.categories import CategoryList

    torch.manual_seed(0)
    model = build_model("tiny", categories=CategoryList.from_json(TINY_CATEGORIES), masks=True)
    with torch.no_grad():  # random weights: keep DETR's unused class 0 out of the way
        model.detr.class_embed.bias[0] = -30.0
    return model


def write_tiny_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images/val", "panoptic/val", "annotations"):
        (root / sub).mkdir(parents=True)
    images, anns = [], []
    for i in (1, 2):
        ids = np.full((H, W), 7)
        ids[10:30, 10:30] = 8
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "images" / "val" / f"{i}.png")
        synth.write_png(root / "panoptic" / "val" / f"{i}.png", ids)
        images.append({"id": i, "file_name": f"{i}.png", "height": H, "width": W})
        segs = [
            {"id": 7, "category_id": 3, "iscrowd": 0, "area": int((ids == 7).sum())},
            {"id": 8, "category_id": 1, "iscrowd": 0, "area": 400},
        ]
        anns.append({"image_id": i, "file_name": f"{i}.png", "segments_info": segs})
    (root / "annotations" / "panoptic_val.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": TINY_CATEGORIES})
    )
    return root


def test_tiny_model_end_to_end(tmp_path, tiny_model):
    root = write_tiny_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    from panoptic_detr.engine.predict import Predictor

    tiny_model.train()  # as during training's periodic evaluation: the Predictor works on a copy
    predictor = Predictor(tiny_model, threshold=0.0, short_side=64, max_size=96)
    m = evaluate_model(predictor, root, out_dir=out, progress=False)
    assert tiny_model.training
    tiny_model.eval()
    gt = (root / "annotations" / "panoptic_val.json", root / "panoptic" / "val")
    assert m["panoptic"] == pq_compute(*gt, out / "predictions.json", out / "predictions")
    pred = json.loads((out / "predictions.json").read_text())
    assert len(pred["annotations"]) == 2 and all(a["segments_info"] for a in pred["annotations"])


def test_command_runs_a_checkpoint(tmp_path, tiny_model, capsys):
    from panoptic_detr.model.checkpoint import save_model

    root = write_tiny_dataset(tmp_path / "ds")
    ckpt = save_model(tmp_path / "tiny.pth", tiny_model, categories=tiny_model.categories)
    out = tmp_path / "eval"
    argv = ["evaluate", str(ckpt), str(root), "--split", "val", "--out", str(out), "--threshold", "0",
            "--short-side", "64", "--max-size", "96", "--batch-size", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "Things" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"panoptic"}
    assert (out / "predictions.json").is_file() and len(list((out / "predictions").glob("*.png"))) == 2
    gt = (root / "annotations" / "panoptic_val.json", root / "panoptic" / "val")
    assert metrics["panoptic"] == json.loads(json.dumps(pq_compute(*gt, out / "predictions.json", out / "predictions")))


# ----------------------------------------------------------------------------- command
def test_command_scores_prediction_files(tmp_path, capsys):
    paths = synth.random_set(tmp_path, 3, n_images=3)
    out = tmp_path / "report"
    code = main(["evaluate", "--predictions", str(paths[2]), str(paths[3]), "--ground-truth", str(paths[0]), str(paths[1]), "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "All" in printed and "Things" in printed and "metrics.json" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["panoptic"] == json.loads(json.dumps(pq_compute(*paths)))


def test_command_with_instances(tmp_path, capsys):
    root, preds = write_dataset(tmp_path / "ds", n=2)
    evaluate_model(StubPredictor(preds), root, out_dir=tmp_path / "p", progress=False)
    code = main([
        "evaluate", "--predictions", str(tmp_path / "p" / "predictions.json"), str(tmp_path / "p" / "predictions"),
        "--ground-truth", str(root / "annotations" / "panoptic_val.json"), str(root / "panoptic" / "val"),
        "--instances", str(root / "annotations" / "instances_val.json"), "--no-progress", "--no-per-class",
    ])  # fmt: skip
    assert code == 0
    assert "segm" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate"], "give CKPT DATASET"),
        (["evaluate", "--predictions", "a.json", "a"], "go together"),
        (["evaluate", "ck.pth", "--predictions", "a.json", "a", "--ground-truth", "b.json", "b"], "not both"),
        (["evaluate", "nope.pth", "nodata"], "nope.pth: checkpoint not found"),
    ],
)
def test_command_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_command_reports_a_bad_prediction_set(tmp_path, capsys):
    gt_json, gt_dir, pred_json, pred_dir = synth.random_set(tmp_path, 3, n_images=2)
    pred = json.loads(pred_json.read_text())
    pred["annotations"].pop()
    pred_json.write_text(json.dumps(pred))
    assert main(["evaluate", "--predictions", str(pred_json), str(pred_dir), "--ground-truth", str(gt_json), str(gt_dir), "--no-progress"]) == 2
    assert "no prediction for the image with id 2" in capsys.readouterr().err


# ----------------------------------------------------------------------------- predict -> evaluate
def renumber_split(root: Path, start: int = 10000) -> None:
    """Ids as `prepare` writes them (10000, 10001, ...), not the file stems."""
    path = root / "annotations" / "panoptic_val.json"
    data = json.loads(path.read_text())
    for k, (img, ann) in enumerate(zip(data["images"], data["annotations"])):
        img["id"] = ann["image_id"] = start + k
    path.write_text(json.dumps(data))


def test_predict_on_a_prepared_split_keeps_its_ids(tmp_path, tiny_model, capsys):
    """predict -> evaluate on a real split failed: `predict` named images by file stem,
    `prepare` numbers them from 10000 ("no prediction for the image with id 10000").
    Images of a prepared split keep the split's ids, so evaluate pairs them by id."""
    from panoptic_detr.model.checkpoint import save_model

    root = write_tiny_dataset(tmp_path / "ds")
    renumber_split(root)
    ckpt = save_model(tmp_path / "tiny.pth", tiny_model, categories=tiny_model.categories)
    out = tmp_path / "pred"
    size = ["--short-side", "64", "--max-size", "96", "--threshold", "0"]
    assert main(["predict", str(ckpt), str(root / "images" / "val"), "--out", str(out), "--quiet", *size]) == 0
    preds = json.loads((out / "predictions.json").read_text())
    assert [a["image_id"] for a in preds["annotations"]] == [10000, 10001]
    capsys.readouterr()
    gt = [str(root / "annotations" / "panoptic_val.json"), str(root / "panoptic" / "val")]
    assert main(["evaluate", "--predictions", str(out / "predictions.json"), str(out / "panoptic"),
                 "--ground-truth", *gt, "--no-progress"]) == 0
    assert "2 image(s) matched to the predictions by image_id" in capsys.readouterr().err
    # images copied elsewhere are named by stem; evaluate then pairs them by file name
    other = tmp_path / "photos"
    other.mkdir()
    for p in (root / "images" / "val").iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    assert main(["predict", str(ckpt), str(other), "--out", str(tmp_path / "p2"), "--quiet", *size]) == 0
    assert main(["evaluate", "--predictions", str(tmp_path / "p2" / "predictions.json"), str(tmp_path / "p2" / "panoptic"),
                 "--ground-truth", *gt, "--no-progress"]) == 0
    assert "matched to the predictions by file name" in capsys.readouterr().err


def test_predict_never_destroys_an_earlier_output(tmp_path, tiny_model, capsys, monkeypatch):
    """`predict` wrote into an existing --out, replaced an earlier predictions.json even
    when every input was bad, and created empty folders when nothing could be read. Now:
    an error unless --overwrite, nothing created without a prediction, and while it runs
    only a staging folder exists (what a killed run leaves)."""
    from panoptic_detr.commands import predict as predict_cmd
    from panoptic_detr.model.checkpoint import save_model

    root = write_tiny_dataset(tmp_path / "ds")
    ckpt = save_model(tmp_path / "tiny.pth", tiny_model, categories=tiny_model.categories)
    images = str(root / "images" / "val")
    out = tmp_path / "pred"
    size = ["--short-side", "64", "--max-size", "96", "--quiet"]
    assert main(["predict", str(ckpt), images, "--out", str(out), *size]) == 0
    before = (out / "predictions.json").read_bytes()
    assert main(["predict", str(ckpt), images, "--out", str(out), *size]) == 2
    assert "error: " + str(out) + ": output exists; pass --overwrite to replace it" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.jpg").write_bytes(b"not an image")
    assert main(["predict", str(ckpt), str(bad), "--out", str(out), "--overwrite", *size]) == 2
    assert "error: no image could be predicted (1 skipped)" in capsys.readouterr().err
    assert (out / "predictions.json").read_bytes() == before  # the earlier output is intact
    assert main(["predict", str(ckpt), str(bad), "--out", str(tmp_path / "new"), *size]) == 2
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ds", "pred", "tiny.pth"]  # no staging left

    seen = []
    real = predict_cmd.PredictionsFolder.add

    def spy(self, *a, **k):  # what a kill at this moment would leave
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real(self, *a, **k)

    monkeypatch.setattr(predict_cmd.PredictionsFolder, "add", spy)
    assert main(["predict", str(ckpt), images, "--out", str(tmp_path / "fresh"), *size]) == 0
    assert seen and all("fresh" not in names and any(n.startswith(".fresh.") and n.endswith(".partial")
                                                     for n in names) for names in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ds", "fresh", "pred", "tiny.pth"]
