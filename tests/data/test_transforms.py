import numpy as np
import torch

from panoptic_detr.data import transforms as T
from panoptic_detr.utils.box_ops import box_cxcywh_to_xyxy, masks_to_boxes


def _sample(h=60, w=90):
    image = torch.randint(0, 256, (3, h, w)).float()  # pixel values, as PanopticDataset.load gives
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, 5:20, 10:30] = True
    masks[1, 30:58, 60:89] = True
    masks[2, 0:4, 0:4] = True
    target = {
        "masks": masks,
        "boxes": masks_to_boxes(masks),
        "labels": torch.tensor([1, 2, 3]),
        "iscrowd": torch.zeros(3, dtype=torch.int64),
        "area": masks.flatten(1).sum(1).float(),
        "size": torch.tensor([h, w]),
    }
    return image, target


def test_hflip_moves_boxes_with_masks():
    image, target = _sample()
    im2, t2 = T.hflip(image, target)
    assert torch.equal(im2[:, :, 0], image[:, :, -1])
    assert torch.equal(t2["boxes"], masks_to_boxes(t2["masks"]))


def test_resize_shorter_side_and_max_size():
    image, target = _sample()
    im2, t2 = T.resize(image, target, 120, max_size=1000)
    assert im2.shape[-2:] == (120, 180) and t2["masks"].shape[-2:] == (120, 180)
    assert torch.allclose(t2["boxes"], masks_to_boxes(t2["masks"]), atol=1)
    assert t2["size"].tolist() == [120, 180]


def test_crop_drops_emptied_objects_with_masks():
    image, target = _sample()
    im2, t2 = T.crop(image, target, top=25, left=50, height=35, width=40)
    assert im2.shape[-2:] == (35, 40)
    assert t2["labels"].tolist() == [2]
    assert t2["masks"].shape == (1, 35, 40)
    assert torch.equal(t2["boxes"], masks_to_boxes(t2["masks"]))


def test_train_pipeline_consistent_and_seeded():
    tf = T.train_transforms(scales=[48, 64], max_size=128, crop_resize=[50, 60], crop_min=30, crop_max=50)
    for seed in range(12):
        image, target = _sample()
        im, t = tf(image, target, np.random.default_rng(seed))
        h, w = im.shape[-2:]
        assert t["masks"].shape[-2:] == (h, w) and t["size"].tolist() == [h, w]
        assert min(h, w) in (48, 64) and max(h, w) <= 128
        n = len(t["labels"])
        assert t["boxes"].shape == (n, 4) and t["masks"].shape[0] == n and t["iscrowd"].shape == (n,)
        assert t["masks"].flatten(1).any(1).all()
        xyxy = box_cxcywh_to_xyxy(t["boxes"]) * torch.tensor([w, h, w, h])
        assert torch.allclose(xyxy, masks_to_boxes(t["masks"]), atol=1e-4)
        im_again, t_again = tf(*_sample_like(image, target), np.random.default_rng(seed))
        assert torch.equal(im, im_again) and torch.equal(t["masks"], t_again["masks"])


def _sample_like(image, target):
    return image.clone(), {k: v.clone() for k, v in target.items()}


def test_eval_pipeline_and_normalize():
    from panoptic_detr.data.preprocess import IMAGENET_MEAN, IMAGENET_STD

    image, target = _sample()
    im, t = T.eval_transforms(30, 100)(image, target)
    assert im.shape[-2:] == (30, 45) and t["masks"].shape[-2:] == (30, 45)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = (T.resize(image, None, 30)[0] / 255 - mean) / std
    assert (im - expected).abs().max() < 0.05  # PIL's bilinear vs torch's antialiased one
    assert (t["boxes"] >= 0).all() and (t["boxes"] <= 1).all()


def test_train_resize_truncates_as_detr():
    """The training resize uses DETR's own (truncating) size rule, as evaluation does."""
    image = torch.zeros(3, 600, 800)
    assert T.resize(image, None, 800, 1333)[0].shape[-2:] == (800, 1066)
