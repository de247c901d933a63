"""Predictor and `panoptic-detr predict` with a tiny random model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import panoptic_detr
from panoptic_detr.cli import main
from panoptic_detr.data.categories import Category, CategoryList
from panoptic_detr.data.formats.coco_panoptic import rgb2id
from panoptic_detr.engine.inference import panoptic_inference, select_queries
from panoptic_detr.engine.predict import Predictor
from panoptic_detr.errors import PanopticDetrError


def _image_io_tests():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "test_image_io.py"
    spec = importlib.util.spec_from_file_location("_image_io_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_image_folder = _image_io_tests().make_image_folder

SIZE = dict(short_side=64, max_size=128)
CATS = CategoryList(
    [
        Category(1, "rebar", True, (230, 25, 75)),
        Category(2, "pipe", True, (60, 180, 75)),
        Category(3, "pallet", True, (0, 130, 200)),
        Category(4, "ground", False, (245, 130, 48)),
        Category(5, "sky", False, (70, 240, 240)),
    ]
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is as fast, and immune to OpenMP stalls on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def noise_image(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


@pytest.fixture(scope="module")
def model():
    """A tiny random model whose class head keeps a handful of queries with varied classes."""
    torch.manual_seed(0)
    m = panoptic_detr.build_model("tiny", categories=CATS)
    captured = []
    handle = m.detr.class_embed.register_forward_hook(lambda mod, i, o: captured.append(i[0]))
    x, _ = Predictor(m, **SIZE).preprocess(noise_image(60, 90, 0))
    with torch.inference_mode():
        m(x[None], with_masks=False)
    handle.remove()
    hs = captured[-1][-1, 0]  # last decoder layer, image 0: [Q, d]
    mu = hs.mean(0)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(m.detr.class_embed.weight.shape, generator=g) * (4 / (hs - mu).std() / hs.shape[1] ** 0.5)
    w[-1] *= 0.5
    with torch.no_grad():
        m.detr.class_embed.weight.copy_(w)
        m.detr.class_embed.bias.copy_(-w @ mu)
    return m


@pytest.fixture(scope="module")
def images():
    return {
        "a": noise_image(60, 90, 0),
        "b": noise_image(130, 100, 1),  # portrait, larger: would pad "a" in a batch
        "c": noise_image(60, 90, 2),  # same size as "a"
    }


def test_prediction_has_segments_of_both_kinds(model, images):
    out = Predictor(model, **SIZE)(images["a"])
    assert out.id_map.shape == (60, 90) and out.id_map.dtype == torch.int32
    info = out.segments_info
    assert len(info) >= 2
    assert [s["id"] for s in info] == list(range(1, len(info) + 1))
    assert set(out.id_map.unique().tolist()) <= {0} | {s["id"] for s in info}
    for s in info:
        assert s["area"] == int((out.id_map == s["id"]).sum()) > 4
        assert s["score"] > 0.85
        assert s["isthing"] == CATS.by_id[s["category_id"]].isthing if s["category_id"] in CATS.by_id else True
    assert {s["isthing"] for s in info} == {True, False}
    # stuff classes appear once at most
    stuff = [s["category_id"] for s in info if not s["isthing"]]
    assert len(stuff) == len(set(stuff))


def test_fast_masks_equal_full_masks(model, images):
    fast = Predictor(model, **SIZE)
    full = Predictor(model, fast_masks=False, **SIZE)
    for img in (images["a"], images["b"]):
        a, b = fast(img), full(img)
        assert torch.equal(a.id_map, b.id_map)
        assert a.segments_info == b.segments_info
    # and at the level of the mask logits
    x, _ = fast.preprocess(images["a"])
    with torch.inference_mode():
        light = model(x[None], with_masks=False)
        heavy = model(x[None])
        keep, _, _ = select_queries(light["pred_logits"], 0.85)
        b, q = keep.nonzero(as_tuple=True)
        assert len(q) > 0
        torch.testing.assert_close(model.masks_for_queries(light["mask_context"], b, q), heavy["pred_masks"][b, q])


def test_map_does_not_depend_on_batch_size_or_padding(model, images):
    alone = {k: Predictor(model, **SIZE)(v) for k, v in images.items()}
    for batch_size in (2, 3):
        p = Predictor(model, batch_size=batch_size, **SIZE)
        outs = p.predict_batch([images["a"], images["b"], images["c"]])
        for key, out in zip("abc", outs):
            assert torch.equal(out.id_map, alone[key].id_map), (key, batch_size)
            assert out.segments_info == alone[key].segments_info
    # a batched forward ("a" with "c": same size, never padded) only changes float
    # rounding, which may flip a pixel where two random masks tie
    p = Predictor(model, batch_size=3, batch_forward=True, **SIZE)
    for key, out in zip("abc", p.predict_batch([images["a"], images["b"], images["c"]])):
        assert (out.id_map == alone[key].id_map).float().mean() > 0.98


def test_padding_would_change_the_model_output(model, images):
    """Why the Predictor never pads: the model's own output depends on the padding."""
    p = Predictor(model, **SIZE)
    xa, size_a = p.preprocess(images["a"])
    xb, _ = p.preprocess(images["b"])
    with torch.inference_mode():
        single = model([xa])
        padded = model([xa, xb])  # "a" is padded to the larger batch
    h, w = single["pred_masks"].shape[-2:]
    assert not torch.allclose(single["pred_masks"][0], padded["pred_masks"][0, :, :h, :w], atol=1e-3)
    # the crop itself is right: the unpadded masks placed in a larger grid give the same map
    grid = torch.full((single["pred_masks"].shape[1], h + 7, w + 5), 1e3)
    grid[:, :h, :w] = single["pred_masks"][0]
    logits = single["pred_logits"][0]
    a = panoptic_inference(logits, single["pred_masks"][0], xa.shape[-2:], size_a, p._isthing)
    b = panoptic_inference(logits, grid, xa.shape[-2:], size_a, p._isthing)
    assert torch.equal(a.id_map, b.id_map)


def test_teacher_interface(model, images):
    id_map, info, cats = Predictor(model, **SIZE).panoptic(images["a"])
    assert isinstance(id_map, np.ndarray) and id_map.dtype == np.int32 and id_map.shape == (60, 90)
    assert isinstance(info, list) and cats.names() == CATS.names()


def test_nothing_kept_is_all_void(images):
    torch.manual_seed(1)
    m = panoptic_detr.build_model("tiny", num_classes=4)  # random: no query passes 0.85
    out = Predictor(m, **SIZE)(images["a"])
    assert (out.id_map == 0).all() and out.segments_info == []


def test_checkpoint_carries_categories(model, images, tmp_path):
    from panoptic_detr.model.checkpoint import save_model

    path = save_model(tmp_path / "m.pth", model)
    p = Predictor(path, **SIZE)
    assert p.categories.names() == CATS.names()
    a = p(images["a"])
    b = Predictor(model, **SIZE)(images["a"])
    assert torch.equal(a.id_map, b.id_map) and a.segments_info == b.segments_info


def test_detection_model_is_refused():
    m = panoptic_detr.build_model("tiny", masks=False, num_classes=4)
    with pytest.raises(PanopticDetrError, match="panoptic"):
        Predictor(m)


# ----------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    from panoptic_detr.model.checkpoint import save_model

    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model)


def read_png_ids(path):
    with Image.open(path) as im:
        return rgb2id(np.asarray(im.convert("RGB")))


def test_cli_folder_with_good_and_bad_files(checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    expected = make_image_folder(folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    code = main(["predict", str(checkpoint), str(folder), "--out", str(out), "--short-side", "64",
                 "--max-size", "128", "--batch-size", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.jpg" in err and err.count("broken.jpg") == 1
    assert "Traceback" not in err
    pngs = sorted(p.name for p in (out / "panoptic").iterdir())
    assert pngs == sorted(n.rsplit(".", 1)[0] + ".png" for n in expected)
    assert len(list((out / "overlays").glob("*.jpg"))) == len(expected)
    preds = json.loads((out / "predictions.json").read_text())
    assert [c["name"] for c in preds["categories"]] == CATS.names()
    assert len(preds["annotations"]) == len(expected)
    for ann in preds["annotations"]:
        ids = read_png_ids(out / "panoptic" / ann["file_name"])
        name = next(i["file_name"] for i in preds["images"] if i["id"] == ann["image_id"])
        assert ids.shape == expected[name]  # original size, EXIF orientation applied
        assert set(np.unique(ids).tolist()) <= {0} | {s["id"] for s in ann["segments_info"]}
        for s in ann["segments_info"]:
            assert s["area"] == int((ids == s["id"]).sum())
    assert not list(out.rglob("*.tmp"))


def test_cli_equals_api(checkpoint, model, images, tmp_path):
    paths = []
    for key in ("a", "b"):
        paths.append(tmp_path / f"{key}.png")
        Image.fromarray(images[key]).save(paths[-1])
    out = tmp_path / "out"
    code = main(["predict", str(checkpoint), str(tmp_path / "*.png"), "--out", str(out), "--short-side", "64",
                 "--max-size", "128", "--no-overlay", "--quiet"])
    assert code == 0
    assert not (out / "overlays").exists()
    preds = {a["image_id"]: a for a in json.loads((out / "predictions.json").read_text())["annotations"]}
    predictor = Predictor(model, **SIZE)
    for path in paths:
        api = predictor(path)
        np.testing.assert_array_equal(read_png_ids(out / "panoptic" / f"{path.stem}.png"), api.id_map.numpy())
        cli = preds[path.stem]["segments_info"]
        assert [(s["id"], s["category_id"], s["area"], s["bbox"]) for s in cli] == [
            (s["id"], s["category_id"], s["area"], s["bbox"]) for s in api.segments_info
        ]
        assert [s["score"] for s in cli] == pytest.approx([s["score"] for s in api.segments_info], abs=1e-6)


def test_cli_user_errors(checkpoint, tmp_path, capsys):
    assert main(["predict", str(checkpoint), str(tmp_path / "nothing-here"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nothing-here" in err and "error: no image could be predicted (1 skipped)" in err
    assert not (tmp_path / "o").exists()
    assert main(["predict", str(tmp_path / "missing.pth"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main(["predict", str(checkpoint), str(tmp_path), "--out", str(tmp_path / "o"), "--batch-size", "0"]) == 2


def test_predictor_leaves_the_model_alone(model, images):
    from panoptic_detr.model.backbone import fold_frozen_batchnorm

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        Predictor(model, **SIZE)(images["a"])
        assert model.training
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    finally:
        model.eval()
    folded = fold_frozen_batchnorm(model)
    x, _ = Predictor(model, fold_bn=False, **SIZE).preprocess(images["a"])
    with torch.inference_mode():
        a, b = model(x[None]), folded(x[None])
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=1e-3, atol=1e-3)
    assert not any("bn" in k for k in folded.state_dict() if k.startswith("detr.backbone"))


def test_dedup_cli_equals_api_and_bad_values_are_refused(checkpoint, model, images, tmp_path, capsys):
    path = tmp_path / "a.png"
    Image.fromarray(images["a"]).save(path)
    out = tmp_path / "out"
    code = main(["predict", str(checkpoint), str(path), "--out", str(out), "--short-side", "64", "--max-size", "128",
                 "--threshold", "0.3", "--dedup", "0", "--no-overlay", "--quiet"])
    assert code == 0
    api = Predictor(model, threshold=0.3, dedup=0.0, **SIZE)(path)
    np.testing.assert_array_equal(read_png_ids(out / "panoptic" / "a.png"), api.id_map.numpy())
    # the fast path (masks of the kept queries only) and the full one agree with dedup too
    full = Predictor(model, threshold=0.3, dedup=0.0, fast_masks=False, **SIZE)(path)
    assert torch.equal(full.id_map, api.id_map) and full.segments_info == api.segments_info
    plain = Predictor(model, threshold=0.3, **SIZE)(path)
    # this model fires several queries of class 3 on overlapping regions: one survives
    things = lambda out: sorted(s["category_id"] for s in out.segments_info if s["isthing"])  # noqa: E731
    assert things(plain).count(3) > 1 and things(api).count(3) == 1
    assert set(things(api)) == set(things(plain))
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(path), "--out", str(tmp_path / "o"), "--dedup", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--dedup" in err and "1.5" in err and "Traceback" not in err
    with pytest.raises(PanopticDetrError, match="dedup"):
        Predictor(model, dedup=-0.1)
