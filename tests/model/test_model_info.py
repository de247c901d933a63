"""`panoptic-detr model-info` runs a real forward and prints counts and shapes."""

import pytest
import torch

from panoptic_detr.cli import main
from panoptic_detr.model.build import build_model
from panoptic_detr.model.checkpoint import save_model
from panoptic_detr.model.summary import parameter_groups


def test_model_info_on_tiny(capsys):
    assert main(["model-info", "--preset", "tiny", "--size", "128x160"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "20 queries" in out
    for part in ("backbone", "transformer", "heads", "mask head", "trainable", "frozen", "total"):
        assert part in out
    assert "8.11M" in out  # tiny's parameter count (ResNet-18 with a 48-channel stem)
    assert "backbone layer4 (stride 32)" in out and "[1, 384, 4, 5]" in out
    assert "4x5 = 20 tokens x 128" in out
    assert "bbox_attention maps" in out and "[1, 20, 8, 4, 5]" in out
    assert "[20, 8, 32, 40]" in out  # lay5 output, per query, stride 4
    assert "pred_masks" in out and "[1, 20, 32, 40]" in out


def test_model_info_on_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_model(tmp_path / "det.safetensors", build_model("tiny", masks=False, num_classes=5))
    assert main(["model-info", "--checkpoint", str(path), "--size", "64x64"]) == 0
    out = capsys.readouterr().out
    assert "detection" in out and "[1, 20, 6]" in out and "pred_masks" not in out


def test_model_info_rejects_a_bad_size(capsys):
    with pytest.raises(SystemExit) as e:
        main(["model-info", "--preset", "tiny", "--size", "big"])
    assert e.value.code == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err


def test_r50_panoptic_has_the_official_parameter_count():
    with torch.device("meta"):
        model = build_model("r50-panoptic")
    total = sum(t + f for _, parts in parameter_groups(model) for _, t, f in parts)
    assert total == sum(p.numel() for p in model.parameters())
    assert round(total / 1e6, 1) == 42.9
