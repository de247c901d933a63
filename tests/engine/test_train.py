import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from fake_prepared import TINY_SETTINGS, one_thread, tiny_config, write_prepared  # noqa: E402

from panoptic_detr.engine.train import TrainingDiverged, train  # noqa: E402


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("data"), n_train=2, n_val=1, size=(64, 64), n_things=2, crowd=True)


def test_cli_train_lowers_loss_writes_outputs_and_plot(data, tmp_path):
    from panoptic_detr.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--config", "tiny", "--epochs", "25",
            "--batch-size", "2", "--workers", "0", "--no-progress", "--seed", "1"]
    for s in TINY_SETTINGS:
        args += ["--set", s]
    args += ["--set", "optim.lr=5e-4", "--set", "optim.lr_backbone=5e-4", "--set", "data.hflip=0",
             "--set", "eval.every=25", "--set", "eval.pq=false", "--set", "checkpoint_epochs=25"]
    assert main(args) == 0
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 25
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    assert any(r["kind"] == "eval" and "val_loss" in r for r in records)
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "class_error", "cardinality_error", "lr"} <= set(records[0])
    for name in ("checkpoint.pth", "model_final.pth", "train_config.yaml"):
        assert (out / name).exists()
    import panoptic_detr

    model = panoptic_detr.load_model(out / "model_final.pth")
    assert model.categories.names() == ["box", "disc", "sky", "ground"]
    assert model.config.num_queries == 8 and model.config.masks
    # the training checkpoint is a model checkpoint too
    assert panoptic_detr.load_model(out / "checkpoint.pth").config.num_queries == 8
    # re-running the finished command does nothing and succeeds
    assert main(args) == 0
    assert main(["plot", str(out)]) == 0
    png = out / "curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nan_loss_stops_naming_the_step_and_saves_nothing_bad(data, tmp_path, monkeypatch):
    from panoptic_detr.engine.criterion import SetCriterion

    calls = {"n": 0}
    original = SetCriterion.forward

    def poisoned(self, outputs, targets, indices=None):
        losses = original(self, outputs, targets, indices)
        calls["n"] += 1
        if calls["n"] == 3:
            losses["loss_giou"] = losses["loss_giou"] * float("nan")
        return losses

    monkeypatch.setattr(SetCriterion, "forward", poisoned)
    out = tmp_path / "nan"
    cfg = tiny_config(data, out, "checkpoint_every=1", epochs=5)
    cfg.data.batch_size = 1  # 2 steps per epoch
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3 \(epoch 2, iteration 1\)"):
        train(cfg)
    ck = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ck["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (out / "model_final.pth").exists()
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2


def test_stage_masks_trains_only_mask_head_and_init_adapts_classes(data, tmp_path):
    from panoptic_detr.data.categories import CategoryList
    from panoptic_detr.model.checkpoint import save_model

    # a "pretrained" detection model for other classes (sky and ground shared by name)
    from panoptic_detr.model.build import build_model

    other = CategoryList.from_json([
        {"id": 1, "name": "sky", "isthing": 0}, {"id": 2, "name": "tree", "isthing": 1},
        {"id": 3, "name": "ground", "isthing": 0},
    ])
    torch.manual_seed(5)
    det = build_model("tiny", categories=other, masks=False, enc_layers=1, dec_layers=2, dim_feedforward=128,
                      num_queries=8, frozen_bn=False)
    init = save_model(tmp_path / "det.pth", det, categories=other)
    out = tmp_path / "masks"
    cfg = tiny_config(data, out, epochs=1, stage="masks", init=str(init))
    train(cfg)
    ck = torch.load(out / "model_final.pth", weights_only=True)
    sd = ck["model"]
    det_sd = det.state_dict()
    # DETR frozen: identical to the init weights (class head adapted: sky/ground rows carried over)
    assert torch.equal(sd["detr.transformer.decoder.layers.0.linear1.weight"], det_sd["transformer.decoder.layers.0.linear1.weight"])
    assert torch.equal(sd["detr.backbone.0.body.layer1.0.bn1.running_mean"], det_sd["backbone.0.body.layer1.0.bn1.running_mean"])
    assert sd["detr.class_embed.weight"].shape[0] == 6  # 4 classes + unused 0 + no-object
    assert torch.equal(sd["detr.class_embed.weight"][3], det_sd["class_embed.weight"][1])  # sky
    assert torch.equal(sd["detr.class_embed.weight"][4], det_sd["class_embed.weight"][3])  # ground
    assert torch.equal(sd["detr.class_embed.weight"][-1], det_sd["class_embed.weight"][-1])  # no object
    assert [c["name"] for c in ck["categories"]] == ["box", "disc", "sky", "ground"]
    # boxes stage: a detection model
    out2 = tmp_path / "boxes"
    train(tiny_config(data, out2, epochs=1, stage="boxes", init=str(init)))
    sd2 = torch.load(out2 / "model_final.pth", weights_only=True)["model"]
    assert not any(k.startswith(("mask_head", "detr.")) for k in sd2)
