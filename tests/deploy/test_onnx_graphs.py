"""The exported graphs against the torch model: dynamic image sizes, dynamic query counts."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch

from panoptic_detr.deploy.runtimes import make_session

MODELS = ["base", "tiny", "r50_small"]  # trained tiny, random tiny, random small r50


def assert_close(got: np.ndarray, ref: torch.Tensor, tol: float) -> None:
    """|got - ref| <= tol, relative to the output's scale when it exceeds 1 (the calibrated class
    heads give logits of ~60, whose float32 rounding alone is ~1e-5 of that)."""
    ref = ref.numpy()
    assert got.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(got - ref).max())
    assert err <= tol * scale, f"max |onnxruntime - torch| {err:.2e} > {tol:.0e} x scale {scale:.1f}"


@pytest.fixture(scope="module")
def sessions(request):
    cache = {}

    def get(which):
        if which not in cache:
            folder = request.getfixturevalue(f"{which}_export")
            cache[which] = (make_session(folder / "detr.onnx", threads=1), make_session(folder / "mask_head.onnx", threads=1))
        return cache[which]

    return get


@pytest.mark.parametrize("which", MODELS)
@pytest.mark.parametrize("size", [(96, 128), (122, 86)])  # the traced size, and another one (not /32, taller)
def test_graphs_equal_the_torch_model(which, size, sessions, request):
    model = request.getfixturevalue(f"{which}_model")
    detr, head = sessions(which)
    x = torch.randn((1, 3, *size), generator=torch.Generator().manual_seed(size[0]))
    with torch.inference_mode():
        ref = model(x, with_masks=False)
    got = dict(zip([o.name for o in detr.get_outputs()], detr.run(None, {"image": x.numpy()})))
    assert_close(got["pred_logits"], ref["pred_logits"], 1e-4)
    assert_close(got["pred_boxes"], ref["pred_boxes"], 1e-4)
    context = {k: got[k] for k in ("image_term", "query_attention", "fpn_s16", "fpn_s8", "fpn_s4")}
    q_total = model.num_queries
    for n in (1, 7):
        query = torch.randperm(q_total, generator=torch.Generator().manual_seed(n))[:n]
        with torch.inference_mode():
            ref_masks = model.masks_for_queries(ref["mask_context"], torch.zeros_like(query), query)
        masks = head.run(None, {**context, "query_index": query.numpy()})[0]
        assert masks.shape == (n, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
        assert_close(masks, ref_masks, 1e-3)
        assert np.abs(ref_masks.numpy()).max() > 1e-2  # real masks, not zeros


def test_export_folder_contents(base_export, base_model):
    data = json.loads((base_export / "model.json").read_text())
    assert data["format_version"] == 1 and data["panoptic"] is True and data["opset"] == 17
    assert data["num_classes"] == base_model.num_classes and data["num_queries"] == 20
    assert data["categories"] == base_model.categories.to_json()
    # the checkpoint's own inference settings travel with the graphs
    defaults = base_model.inference_defaults
    assert data["inference"] == {**defaults.to_dict(), "min_area": 4, "mask_stride": 4}
    assert data["preprocess"]["resize"] == {"short_side": defaults.short_side, "max_size": defaults.max_size,
                                            "interpolation": "bilinear"}
    assert data["model_config"] == base_model.config.to_dict()
    assert set(data["exported_with"]) == {"panoptic_detr", "torch", "onnx"}
    for name in ("detr.onnx", "mask_head.onnx"):
        onnx.checker.check_model(str(base_export / name))
    proto = onnx.load(str(base_export / "detr.onnx"), load_external_data=False)
    assert "already resized and normalised" in proto.doc_string
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == [1, 3] and all(isinstance(d, str) for d in dims[2:])  # H, W dynamic
    readme = (base_export / "README.txt").read_text()
    assert "query_index int64 [N]" in readme and f"threshold ({defaults.threshold})" in readme
    assert f"dedup {defaults.dedup}" in readme and f'geometry "{defaults.geometry}"' in readme


def test_detection_model_exports_one_graph(tmp_path):
    import panoptic_detr
    from panoptic_detr.deploy.export import export_onnx
    from panoptic_detr.deploy.onnx_predictor import OnnxPredictor
    from panoptic_detr.errors import PanopticDetrError

    torch.manual_seed(0)
    model = panoptic_detr.build_model("tiny", masks=False, num_queries=5)
    report = export_onnx(model, tmp_path / "det", sample_size=(64, 96))
    assert not report.panoptic and set(report.file_bytes) == {"detr.onnx"}
    assert report.max_error["pred_logits"] < 1e-4 and "mask_logits" not in report.max_error
    assert not (tmp_path / "det" / "mask_head.onnx").exists()
    with pytest.raises(PanopticDetrError, match="detection model"):
        OnnxPredictor(tmp_path / "det")
