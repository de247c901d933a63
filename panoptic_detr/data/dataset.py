"""A torch Dataset over one split of a prepared dataset (see docs/DESIGN.md for the layout).

`PanopticDataset(root, split, transforms)[i]` -> `(image [3, H, W] float, target)` where
target holds, per non-crowd segment, `labels` (int64 category id = class index), `boxes`
(cx, cy, w, h normalised, derived from the mask), `masks` (bool [N, H, W]), `iscrowd`
(zeros), `area`, `segment_ids`, plus `image_id`, `orig_size`, `size` ((h, w) tensors)
and `unannotated` (int64: the thing category ids not annotated exhaustively in the image,
`data.annotated`; empty for a fully annotated image).

An item key may be an index or `(index, seed)`: the seed feeds the transforms' random
generator, so augmentations are reproducible per (epoch, sample) for exact resumption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from panoptic_detr.data.annotated import unannotated_things
from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.formats.coco_panoptic import read_id_png
from panoptic_detr.data.image_io import load_image
from panoptic_detr.data.prepared import PreparedDataset
from panoptic_detr.errors import DataError
from panoptic_detr.utils.box_ops import masks_to_boxes
from panoptic_detr.utils.io import read_json


class PanopticDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
        categories: CategoryList | None = None,
    ):
        self.root = Path(root)
        self.split = split
        self.files = PreparedDataset(root).split(split).require()
        self.transforms = transforms
        ann_path = self.files.panoptic_json
        data = read_json(ann_path)
        if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
            raise DataError(f"{ann_path}: not a COCO panoptic JSON (needs 'images' and 'annotations')")
        self.ann_path = ann_path
        if categories is None:
            cat_path = PreparedDataset(root).categories_json
            if cat_path.exists():
                categories = CategoryList.load(cat_path)
            elif "categories" in data:
                categories = CategoryList.from_json(data["categories"], where=str(ann_path))
            else:
                raise DataError(f"{cat_path}: not found and {ann_path} has no categories")
        self.categories = categories
        self._thing_ids = [c.id for c in categories if c.isthing]
        images = {img["id"]: img for img in data["images"]}
        self.items: list[tuple[dict, dict]] = []
        for ann in data["annotations"]:
            img = images.get(ann.get("image_id"))
            if img is None:
                raise DataError(f"{ann_path}: annotation {ann.get('file_name')} names unknown image_id {ann.get('image_id')!r}")
            for seg in ann.get("segments_info", []):
                if seg.get("category_id") not in categories.by_id:
                    raise DataError(
                        f"{ann_path}: image {img['id']!r} segment {seg.get('id')} has unknown category_id {seg.get('category_id')!r}"
                    )
            self.items.append((img, ann))
        self.items.sort(key=lambda it: str(it[0].get("file_name")))

    def partially_annotated(self) -> int:
        """How many images leave some thing class unannotated (`data.annotated`)."""
        return sum(1 for img, _ in self.items if unannotated_things(img, self._thing_ids))

    @property
    def num_classes(self) -> int:
        return self.categories.num_classes

    def __len__(self) -> int:
        return len(self.items)

    def image_path(self, index: int) -> Path:
        return self.files.images_dir / self.items[index][0]["file_name"]

    def load(self, index: int) -> tuple[Tensor, dict]:
        """The untransformed image (float [3, H, W], pixel values 0..255) and target (xyxy pixel boxes)."""
        img_info, ann = self.items[index]
        img_path = self.image_path(index)
        png_path = self.files.panoptic_dir / ann["file_name"]
        image = load_image(img_path)
        ids = read_id_png(png_path, f"{png_path} (image {img_info['id']!r})")
        h, w = image.shape[:2]
        if ids.shape != (h, w):
            raise DataError(f"{png_path}: size {ids.shape[1]}x{ids.shape[0]} differs from image {img_path.name} ({w}x{h})")
        segs = [s for s in ann.get("segments_info", []) if not s.get("iscrowd", 0)]
        seg_ids = np.array([s["id"] for s in segs], dtype=np.int64)
        masks = torch.from_numpy(ids[None] == seg_ids[:, None, None]) if len(segs) else torch.zeros((0, h, w), dtype=torch.bool)
        labels = torch.tensor([s["category_id"] for s in segs], dtype=torch.int64)
        keep = masks.flatten(1).any(1)
        target = {
            "labels": labels[keep],
            "masks": masks[keep],
            "segment_ids": torch.from_numpy(seg_ids)[keep],
            "iscrowd": torch.zeros(int(keep.sum()), dtype=torch.int64),
        }
        target["boxes"] = masks_to_boxes(target["masks"])
        target["area"] = target["masks"].flatten(1).sum(1).float()
        image_id = img_info["id"]
        target["image_id"] = torch.tensor(image_id if isinstance(image_id, int) else index)
        target["orig_size"] = torch.tensor([h, w])
        target["size"] = torch.tensor([h, w])
        target["unannotated"] = torch.tensor(unannotated_things(img_info, self._thing_ids), dtype=torch.int64)
        arr = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return arr.float(), target

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = (key if isinstance(key, (tuple, list)) else (key, None))
        image, target = self.load(int(index))
        if self.transforms is not None:
            rng = np.random.default_rng(seed)
            image, target = self.transforms(image, target, rng)
        return image, target


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the augmentation of sample `index` in `epoch`."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def collate_fn(batch):
    """[(image, target)] -> (NestedTensor padded to the batch's largest H and W, list of targets)."""
    from panoptic_detr.model.nested_tensor import nested_tensor_from_tensor_list

    images, targets = zip(*batch)
    return nested_tensor_from_tensor_list(list(images)), list(targets)
