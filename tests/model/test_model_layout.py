"""Checkpoint files in the official DETR key layout (random values) load strictly, key for key."""

import os

import pytest
import torch

from official_detr_layout import EXPECTED_COUNTS, detr_keys, detr_panoptic_keys
from panoptic_detr.model.build import build_model
from panoptic_detr.model.checkpoint import infer_config, load_model
from panoptic_detr.model.config import ModelConfig


def random_state_dict(table: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in table.items():
        t = torch.randn(shape, generator=g) * 0.05
        if k.endswith("running_var"):
            t = t.abs() + 0.5
        sd[k] = t
    return sd


def assert_matches_table(model, table: dict, sd: dict | None = None):
    got = model.state_dict()
    assert set(got) == set(table), (sorted(set(got) - set(table))[:5], sorted(set(table) - set(got))[:5])
    for k, shape in table.items():
        assert tuple(got[k].shape) == tuple(shape), k
        if sd is not None:
            assert torch.equal(got[k], sd[k]), f"value of {k} not loaded"


def test_tables_have_the_known_sizes_and_facts():
    pan = detr_panoptic_keys()
    det = detr_keys()
    assert len(det) == EXPECTED_COUNTS["detr-r50"]
    assert len(detr_keys("resnet101")) == EXPECTED_COUNTS["detr-r101"]
    assert len(pan) == EXPECTED_COUNTS["detr-r50-panoptic"]
    assert len(detr_panoptic_keys("resnet101")) == EXPECTED_COUNTS["detr-r101-panoptic"]
    assert pan["detr.class_embed.weight"] == (251, 256)
    assert det["class_embed.weight"] == (92, 256)
    assert pan["detr.query_embed.weight"] == (100, 256)
    assert pan["detr.input_proj.weight"] == (256, 2048, 1, 1)
    assert pan["bbox_attention.k_linear.weight"] == (256, 256)
    assert pan["mask_head.lay1.weight"] == (264, 264, 3, 3)
    assert pan["mask_head.adapter1.weight"] == (128, 1024, 1, 1)
    assert pan["mask_head.out_lay.weight"] == (1, 16, 3, 3)
    assert "detr.backbone.0.body.layer3.5.conv3.weight" in pan
    assert "detr.backbone.0.body.layer3.6.conv1.weight" not in pan
    assert "backbone.0.body.layer3.22.bn3.running_var" in detr_keys("resnet101")


def test_presets_build_the_official_layouts():
    # Meta tensors: shapes only, no memory, no init cost.
    with torch.device("meta"):
        for preset, table in [("r50", detr_keys()), ("r50-dc5", detr_keys()), ("r101", detr_keys("resnet101")),
                              ("r50-panoptic", detr_panoptic_keys()), ("r50-dc5-panoptic", detr_panoptic_keys()),
                              ("r101-panoptic", detr_panoptic_keys("resnet101"))]:
            assert_matches_table(build_model(preset), table)


def test_r101_architecture_is_inferred_from_keys():
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in detr_panoptic_keys("resnet101").items()}
        assert infer_config(sd) == ModelConfig.from_preset("r101-panoptic")
        det = {k: torch.empty(s) for k, s in detr_keys("resnet101").items()}
        assert infer_config(det) == ModelConfig.from_preset("r101")
        assert infer_config(det, name_hint="detr-r101-dc5.pth").dilation


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    pan_sd = random_state_dict(detr_panoptic_keys(), seed=1)
    torch.save({"model": pan_sd}, d / "detr-r50-panoptic-00ce5173.pth")
    det_sd = {k[len("detr."):]: v for k, v in pan_sd.items() if k.startswith("detr.")}
    det_sd["class_embed.weight"] = torch.randn(92, 256) * 0.05
    det_sd["class_embed.bias"] = torch.randn(92) * 0.05
    torch.save({"model": det_sd}, d / "detr-r50-e632da11.pth")
    # A DC5 file has the same keys; only its name tells the dilation.
    os.link(d / "detr-r50-panoptic-00ce5173.pth", d / "detr-r50-dc5-panoptic-da08f1b1.pth")
    return d, pan_sd, det_sd


def test_official_panoptic_file_loads_strictly(official_files):
    d, pan_sd, _ = official_files
    model = load_model(d / "detr-r50-panoptic-00ce5173.pth")
    assert model.config == ModelConfig.from_preset("r50-panoptic")
    assert not model.training
    assert_matches_table(model, detr_panoptic_keys(), pan_sd)
    assert model.categories is not None and len(model.categories) == 133  # COCO panoptic


def test_official_detection_file_loads_strictly(official_files):
    d, _, det_sd = official_files
    model = load_model(d / "detr-r50-e632da11.pth")
    assert model.config == ModelConfig.from_preset("r50")
    assert_matches_table(model, detr_keys(), det_sd)


def test_dc5_file_gets_dilation_from_its_name(official_files):
    d, pan_sd, _ = official_files
    model = load_model(d / "detr-r50-dc5-panoptic-da08f1b1.pth")
    assert model.config == ModelConfig.from_preset("r50-dc5-panoptic")
    assert_matches_table(model, detr_panoptic_keys(), pan_sd)
    layer4 = model.detr.backbone[0].body.layer4
    assert [b.conv2.dilation for b in layer4] == [(1, 1), (2, 2), (2, 2)]
    assert [b.conv2.stride for b in layer4] == [(1, 1), (1, 1), (1, 1)]
    assert layer4[0].downsample[0].stride == (1, 1)
    assert model.detr.backbone.strides[-1] == 16


def test_num_batches_tracked_keys_are_ignored(official_files, tmp_path):
    _, _, det_sd = official_files
    sd = dict(det_sd)
    for k in list(sd):
        if k.endswith("running_var"):
            sd[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(1000)
    torch.save({"model": sd}, tmp_path / "detr-r50-bn.pth")
    model = load_model(tmp_path / "detr-r50-bn.pth")
    assert_matches_table(model, detr_keys(), det_sd)
