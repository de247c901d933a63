"""Numerical parity with an independent implementation: Hugging Face transformers' DETR.

The HF models are built offline from a config (transformers' own ResNet backbone, random
weights), every parameter and buffer is randomised (so frozen-BN statistics, LayerNorm and
GroupNorm affine parameters and all biases matter), the weights are mapped into our layout
with `hf_import`, and both run a batch of two images of different sizes (so padding masks,
the mask-aware position encoding and masked attention matter) in eval mode.

Known, documented difference (not exercised): with `auxiliary_loss=True` HF feeds the
layer-normed output of each decoder layer into the next one, while official DETR normalises
only the returned copies. The parity models use auxiliary_loss=False, where both agree.
"""

import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from panoptic_detr.model.attention import model_attention  # noqa: E402
from panoptic_detr.model.checkpoint import load_model  # noqa: E402
from panoptic_detr.model.hf_import import convert_hf_state_dict, model_from_hf  # noqa: E402
from panoptic_detr.model.nested_tensor import nested_tensor_from_tensor_list  # noqa: E402

TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _default_convolutions(_small_input_convolutions):
    """Compare on the default (oneDNN) convolution path that users run."""
    torch.backends.mkldnn.enabled = True
    yield


def hf_config(layer_type: str, depths, hidden_sizes, d_model=128, layers=2, ffn=256, queries=12, labels=20):
    backbone = transformers.ResNetConfig(
        embedding_size=64, hidden_sizes=hidden_sizes, depths=depths, layer_type=layer_type,
        out_features=["stage1", "stage2", "stage3", "stage4"])
    return transformers.DetrConfig(
        backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False, d_model=d_model,
        encoder_layers=layers, decoder_layers=layers, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        encoder_attention_heads=8, decoder_attention_heads=8, num_queries=queries, num_labels=labels,
        auxiliary_loss=False)


def randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=g))
            elif "query_position_embeddings" in name:
                t.copy_(torch.randn(t.shape, generator=g))  # well-separated queries
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
        if hasattr(model, "mask_head"):
            # Make the masks depend strongly on each query's attention maps (the last 8 input channels).
            model.mask_head.conv1.conv.weight[:, -8:] *= 300
            model.bbox_attention.q_proj.weight *= 4  # peaky, query-specific attention maps
            model.bbox_attention.k_proj.weight *= 4


def images(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 64, 128, generator=g), torch.randn(3, 96, 64, generator=g)]


def run_both(hf, ours, imgs):
    nt = nested_tensor_from_tensor_list(imgs)
    captured = {}
    handle = None
    if hasattr(hf, "bbox_attention"):
        handle = hf.bbox_attention.register_forward_hook(lambda m, i, o: captured.update(maps=o))
    with torch.no_grad():
        h = hf(pixel_values=nt.tensors, pixel_mask=(~nt.mask).long())
        with model_attention(ours) as rec:
            o = ours(imgs)
    if handle:
        handle.remove()
    return h, o, rec, captured


@pytest.fixture(scope="module")
def hf_segm_r50():
    torch.manual_seed(0)
    hf = transformers.DetrForSegmentation(hf_config("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048])).eval()
    randomise(hf, seed=1)
    return hf


def check_segmentation(hf, ours, imgs):
    h, o, rec, captured = run_both(hf, ours, imgs)
    assert o["pred_masks"].shape == h.pred_masks.shape
    torch.testing.assert_close(o["pred_logits"], h.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(o["pred_boxes"], h.pred_boxes, atol=TOL, rtol=0)
    torch.testing.assert_close(o["pred_masks"], h.pred_masks, atol=TOL, rtol=0)
    torch.testing.assert_close(rec.mask_attention, captured["maps"], atol=1e-5, rtol=0)
    # The comparison is not vacuous: queries, images and padding all make a difference.
    # (Outputs of different queries differ by far more than the tolerance.)
    assert (o["pred_logits"][:, 0] - o["pred_logits"][:, 1]).abs().max() > 20 * TOL
    assert (o["pred_masks"][:, 0] - o["pred_masks"][:, 1]).abs().max() > 20 * TOL


def test_parity_segmentation_resnet50(hf_segm_r50):
    ours = model_from_hf(hf_segm_r50)
    assert ours.config.backbone == "resnet50"
    check_segmentation(hf_segm_r50, ours, images())
    # Padding matters in both: without the mask, HF's answer changes by far more than TOL.
    nt = nested_tensor_from_tensor_list(images())
    with torch.no_grad():
        unmasked = hf_segm_r50(pixel_values=nt.tensors).logits
        masked = ours(images())["pred_logits"]
    assert (unmasked - masked).abs().max() > 100 * TOL


@pytest.fixture(scope="module")
def hf_segm_r18():
    torch.manual_seed(0)
    cfg = hf_config("basic", [2, 2, 2, 2], [64, 128, 256, 512], d_model=128, layers=3, ffn=512, queries=10)
    hf = transformers.DetrForSegmentation(cfg).eval()
    randomise(hf, seed=2)
    return hf


def test_parity_segmentation_resnet18(hf_segm_r18):
    ours = model_from_hf(hf_segm_r18)
    assert ours.config.backbone == "resnet18"
    check_segmentation(hf_segm_r18, ours, images(1))


def test_parity_detection(hf_segm_r18):
    hf = hf_segm_r18.detr  # a DetrForObjectDetection
    assert isinstance(hf, transformers.DetrForObjectDetection)
    ours = model_from_hf(hf)
    assert not hasattr(ours, "mask_head")
    h, o, rec, _ = run_both(hf, ours, images(2))
    torch.testing.assert_close(o["pred_logits"], h.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(o["pred_boxes"], h.pred_boxes, atol=TOL, rtol=0)


def to_legacy_names(sd: dict) -> dict:
    """transformers 5 names -> the transformers 4 names of the files on the Hugging Face Hub."""
    mask_head = {"conv1.conv": "lay1", "conv1.norm": "gn1", "conv2.conv": "lay2", "conv2.norm": "gn2",
                 "output_conv": "out_lay"}
    for i in range(3):
        mask_head[f"fpn_stages.{i}.fpn_adapter"] = f"adapter{i + 1}"
        mask_head[f"fpn_stages.{i}.refine.conv"] = f"lay{i + 3}"
        mask_head[f"fpn_stages.{i}.refine.norm"] = f"gn{i + 3}"
    out = {}
    for k, v in sd.items():
        k = k.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
        k = k.replace(".o_proj.", ".out_proj.")
        k = re.sub(r"\.mlp\.(fc[12])\.", r".\1.", k)
        k = k.replace("bbox_attention.q_proj", "bbox_attention.q_linear").replace(
            "bbox_attention.k_proj", "bbox_attention.k_linear")
        for new, old in mask_head.items():
            k = k.replace(f"mask_head.{new}.", f"mask_head.{old}.")
        out[k] = v
    return out


def test_legacy_hub_names_convert_the_same(hf_segm_r50):
    sd = hf_segm_r50.state_dict()
    legacy = to_legacy_names(sd)
    assert "detr.model.decoder.layers.0.fc1.weight" in legacy and "mask_head.lay1.weight" in legacy
    a, b = convert_hf_state_dict(sd), convert_hf_state_dict(legacy)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # timm backbones (the Hub files) already use torchvision names.
    timm_style = {"model.backbone.conv_encoder.model.layer1.0.downsample.1.running_var": torch.ones(3),
                  "model.backbone.conv_encoder.model.layer1.0.downsample.1.num_batches_tracked": torch.tensor(0),
                  "class_labels_classifier.weight": torch.ones(2, 2)}
    assert set(convert_hf_state_dict(timm_style)) == {"backbone.0.body.layer1.0.downsample.1.running_var",
                                                      "class_embed.weight"}


def test_load_model_recognises_a_hf_file(hf_segm_r18, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "detr-resnet-18-panoptic"
    folder.mkdir()
    sd = {k: v.contiguous() for k, v in to_legacy_names(hf_segm_r18.state_dict()).items()}
    save_file(sd, str(folder / "model.safetensors"))
    ours = load_model(folder)
    assert ours.config.backbone == "resnet18" and ours.config.hidden_dim == 128 and ours.config.nheads == 8
    assert ours.config.masks and ours.config.num_queries == 10 and ours.config.enc_layers == 3
    h, o, _, _ = run_both(hf_segm_r18, ours, images(3))
    torch.testing.assert_close(o["pred_masks"], h.pred_masks, atol=TOL, rtol=0)
