import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from fake_prepared import write_prepared  # noqa: E402

from panoptic_detr.data import transforms as T  # noqa: E402
from panoptic_detr.data.dataset import PanopticDataset, collate_fn, sample_seed  # noqa: E402
from panoptic_detr.errors import DataError  # noqa: E402
from panoptic_detr.utils.box_ops import box_cxcywh_to_xyxy, masks_to_boxes  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prep"), n_train=3, n_val=1, size=(40, 56), n_things=2, crowd=True)


def test_reads_prepared_split_without_crowd(prepared):
    ds = PanopticDataset(prepared, "train")
    assert len(ds) == 3 and ds.num_classes == 5
    assert ds.categories.names() == ["box", "disc", "sky", "ground"]
    image, target = ds.load(0)
    assert image.shape == (3, 40, 56) and 0 <= image.min() and image.max() <= 255 and torch.equal(image, image.round())
    import json

    ann = json.loads((prepared / "annotations" / "panoptic_train.json").read_text())["annotations"]
    ann = [a for a in ann if a["file_name"] == ds.items[0][1]["file_name"]][0]
    crowd_ids = {s["id"] for s in ann["segments_info"] if s["iscrowd"]}
    assert crowd_ids and not crowd_ids & set(target["segment_ids"].tolist())
    assert len(target["labels"]) == len(ann["segments_info"]) - len(crowd_ids)
    assert target["iscrowd"].sum() == 0
    assert torch.equal(target["boxes"], masks_to_boxes(target["masks"]))
    assert target["orig_size"].tolist() == [40, 56]
    # masks do not overlap
    assert target["masks"].sum(0).max() <= 1


def test_transformed_item_normalised_boxes(prepared):
    ds = PanopticDataset(prepared, "train", transforms=T.train_transforms(scales=[32, 48], max_size=80, crop_resize=[40], crop_min=24, crop_max=40))
    key = (1, sample_seed(0, 0, 1))
    image, target = ds[key]
    image2, target2 = ds[key]
    assert torch.equal(image, image2) and torch.equal(target["boxes"], target2["boxes"])
    h, w = image.shape[-2:]
    xyxy = box_cxcywh_to_xyxy(target["boxes"]) * torch.tensor([w, h, w, h])
    assert torch.allclose(xyxy, masks_to_boxes(target["masks"]), atol=1e-4)
    assert target["size"].tolist() == [h, w]


def test_sample_seed_differs_by_epoch_and_index():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(5)}
    assert len(seeds) == 15 and all(0 <= s < 2**63 for s in seeds)


def test_collate_pads_with_mask():
    nt, targets = collate_fn([(torch.ones(3, 4, 5), {"a": 1}), (torch.ones(3, 6, 2), {"a": 2})])
    batch, mask = nt.tensors, nt.mask
    assert [t["a"] for t in targets] == [1, 2]
    assert batch.shape == (2, 3, 6, 5)
    assert mask[0, :4, :5].logical_not().all() and mask[0, 4:].all()
    assert mask[1, :, 2:].all() and batch[1, :, :, 2:].eq(0).all()


def test_missing_split_and_bad_category(prepared, tmp_path):
    with pytest.raises(DataError, match="panoptic_test.json"):
        PanopticDataset(prepared, "test")
    import json, shutil

    bad = tmp_path / "bad"
    shutil.copytree(prepared, bad)
    p = bad / "annotations" / "panoptic_val.json"
    d = json.loads(p.read_text())
    d["annotations"][0]["segments_info"][0]["category_id"] = 99
    p.write_text(json.dumps(d))
    with pytest.raises(DataError, match="unknown category_id 99"):
        PanopticDataset(bad, "val")
