"""Fixtures of the deploy tests, each model exported once per session.

- the shipped base model (`tiny` preset, trained: masks that differ between queries, so
  exact map equality between the backends means something), exported through the CLI;
- a random `tiny` and a small random r50-style model (Bottleneck ResNet-50 at a quarter of
  the width, 1+1 layers) whose class heads are set to keep a few queries.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import panoptic_detr
from pathlib import Path
from panoptic_detr.data.categories import CategoryList

pytest.importorskip("onnxruntime", reason="the 'deploy' extra (onnx, onnxruntime) is part of the test extra")

CATEGORIES = CategoryList.from_json([
    {"id": 1, "name": "box", "isthing": 1}, {"id": 2, "name": "disc", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0}, {"id": 4, "name": "ground", "isthing": 0},
])
SIZE = dict(short_side=96, max_size=144)  # the predict tests' resize: small images
THRESHOLD = 0.5
# a small r50-style model: Bottleneck ResNet-50 layout at a quarter of the width, 1+1 layers
R50_SMALL = dict(backbone_width=16, enc_layers=1, dec_layers=1, dim_feedforward=128, hidden_dim=128,
                 num_queries=12)


def noise_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def calibrate(model, kept: int, seed: int = 0) -> None:
    """Class head weights that keep about `kept` queries above THRESHOLD, with varied classes."""
    from panoptic_detr.data.preprocess import preprocess_image
    from panoptic_detr.engine.inference import select_queries

    x, _ = preprocess_image(noise_image(90, 120, seed), **SIZE)
    captured = []
    handle = model.detr.class_embed.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.inference_mode():
        model(x[None], with_masks=False)
    handle.remove()
    hs = captured[-1][-1, 0]  # last decoder layer, image 0: [Q, d]
    mu = hs.mean(0)
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(model.detr.class_embed.weight.shape, generator=g) * (8.0 / (hs - mu).norm(dim=1).mean())
    weight[-1] = 0
    lo, hi = -50.0, 50.0
    for _ in range(50):  # bisection on the "no object" bias
        bias = -weight @ mu
        bias[-1] = (lo + hi) / 2
        n = int(select_queries(hs @ weight.T + bias, THRESHOLD)[0].sum())
        lo, hi = ((lo + hi) / 2, hi) if n > kept else (lo, (lo + hi) / 2)
    bias = -weight @ mu
    bias[-1] = hi
    with torch.no_grad():
        model.detr.class_embed.weight.copy_(weight)
        model.detr.class_embed.bias.copy_(bias)


BASE_MODEL = Path(panoptic_detr.__file__).resolve().parent / "weights" / "base-tiny.safetensors"


def scene(index: int, size=(120, 160)) -> np.ndarray:
    """A synthetic construction scene (what the base model was trained on)."""
    from panoptic_detr.data.synth.scene import render_scene

    return render_scene(3, index, size=size).image


@pytest.fixture(scope="session")
def base_model():
    from panoptic_detr.model.checkpoint import load_model

    return load_model(BASE_MODEL)


@pytest.fixture(scope="session")
def base_export(tmp_path_factory):
    """The base model exported through the command line (verification on)."""
    from panoptic_detr.cli import main

    out = tmp_path_factory.mktemp("export") / "base-onnx"
    assert main(["export", str(BASE_MODEL), "--format", "onnx", "--out", str(out), "--trace-size", "96x128"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    model = panoptic_detr.build_model("tiny", categories=CATEGORIES)
    calibrate(model, kept=6)
    return model


@pytest.fixture(scope="session")
def r50_small_model():
    torch.manual_seed(1)
    model = panoptic_detr.build_model("r50-panoptic", categories=CATEGORIES, **R50_SMALL)
    calibrate(model, kept=5, seed=1)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    from panoptic_detr.model.checkpoint import save_model

    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny.pth", tiny_model, categories=CATEGORIES)


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory):
    from panoptic_detr.deploy.export import export_onnx

    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    export_onnx(tiny_model, out, sample_size=(96, 128), verify=False)
    return out


@pytest.fixture(scope="session")
def r50_small_export(r50_small_model, tmp_path_factory):
    from panoptic_detr.deploy.export import export_onnx

    out = tmp_path_factory.mktemp("export") / "r50-small-onnx"
    export_onnx(r50_small_model, out, sample_size=(96, 128), verify=False)
    return out
