"""One preprocessing rule for every path into the network."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from panoptic_detr.data import transforms as T
from panoptic_detr.data.dataset import PanopticDataset
from panoptic_detr.data.preprocess import preprocess_image, resize_nearest, resize_shape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "utils"))
from fake_prepared import write_prepared  # noqa: E402


@pytest.fixture(scope="module")
def prepared_dataset(tmp_path_factory):
    # 60x83 at short side 75: 75 * 83 / 60 = 103.75, truncated to 103 (rounding gave 104)
    return write_prepared(tmp_path_factory.mktemp("prep"), n_train=1, n_val=1, size=(60, 83), n_things=2, crowd=False)


def test_resize_shape_truncates_as_official_detr():
    assert resize_shape(600, 800) == (800, 1066)  # rounding would give 1067
    assert resize_shape(480, 640) == (800, 1066)
    assert resize_shape(100, 1000) == (133, 1330)  # short side round(133.3), as DETR
    assert resize_shape(800, 600) == (1066, 800)
    assert resize_shape(800, 800) == (800, 800)
    assert resize_shape(60, 90, 30) == (30, 45)
    assert resize_shape(100, 1000, 200, max_size=500) == (50, 500)
    assert resize_shape(1, 5000)[0] >= 1


def test_resize_nearest_same_for_arrays_and_tensors_and_equals_pil():
    ids = np.random.default_rng(0).integers(0, 50, (7, 11)).astype(np.int32)
    a = resize_nearest(ids, (23, 30))
    b = resize_nearest(torch.from_numpy(ids), (23, 30)).numpy()
    pil = np.asarray(Image.fromarray(ids).resize((30, 23), Image.NEAREST))
    assert np.array_equal(a, b) and np.array_equal(a, pil)


def test_validation_input_equals_predictor_input(prepared_dataset):
    """A validation image (training's val losses) and the same image through `Predictor`
    get bit-identical network inputs, at a size where rounding and truncation differ."""
    from panoptic_detr.engine.predict import Predictor
    from panoptic_detr.model import build_model

    ds = PanopticDataset(prepared_dataset, "val", T.eval_transforms(75, 1333))
    x, target = ds[0]
    pixels = np.asarray(Image.open(ds.image_path(0)).convert("RGB"))
    H, W = pixels.shape[:2]
    h, w = resize_shape(H, W, 75, 1333)
    assert (h, w) == (75, 103)
    assert x.shape[-2:] == (h, w) and target["masks"].shape[-2:] == (h, w)
    predictor = Predictor(build_model("tiny", num_classes=ds.num_classes, masks=True), short_side=75)
    y, size = predictor.preprocess(pixels)
    assert size == (H, W)
    assert torch.equal(x, y)
    z, _ = preprocess_image(pixels, 75, 1333)
    assert torch.equal(x, z)
