"""The synth writer: scenes as CVAT-style COCO exports per class folder, the true stuff as
COCO-panoptic (COCO ids), and the full truth in the class map's id space."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from panoptic_detr.data.categories import RESOURCES, coco_panoptic_categories
from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.formats.coco_panoptic import segments_from_id_map, write_id_png
from panoptic_detr.data.formats.common import encode_mask, polygon_area
from panoptic_detr.data.synth.classes import CLASS_SETS
from panoptic_detr.data.synth.scene import Scene, render_scene
from panoptic_detr.data.synth.stuff import STUFF_NAMES
from panoptic_detr.errors import DataError
from panoptic_detr.utils.io import atomic_dir

# export folders named differently from their class (a quirk of the real exports)
FOLDER_NAMES = {"water_tank": "water_tank_(sintex)", "vehicle": "vehicle_(car_truck)"}


def synth(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    classes: str = "demo",
    size: tuple[int, int] = (256, 320),
    overwrite: bool = False,
    progress: bool = True,
    rle_fraction: float = 0.2,
    partial_labels: bool = False,
) -> dict:
    """Write `num_images` synthetic scenes to `out_dir` (see the package docstring).
    Returns a summary dict (counts per class folder, instances, seconds).

    partial_labels: each folder's export labels only its own class, as real per-class
    exports do; the other things drawn in its scenes stay unlabelled there (the truth in
    `truth/` keeps every object). The summary's `unlabelled_per_class` counts them."""
    t0 = time.time()
    if classes not in CLASS_SETS:
        raise DataError(f"unknown synth class set '{classes}'; known: {', '.join(CLASS_SETS)}")
    if int(num_images) < 1:
        raise DataError(f"--images must be at least 1, got {num_images}")
    H, W = (int(v) for v in size)
    if H < 64 or W < 64:
        raise DataError(f"--size {H}x{W} is too small (at least 64x64)")
    names = CLASS_SETS[classes]
    writer = _ExportWriter(classes, (H, W), seed, rle_fraction, partial_labels)
    it = range(int(num_images))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth", unit="img", leave=False, dynamic_ncols=True)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writer.make_dirs(tmp)
        for i in it:
            primary = names[i % len(names)]
            writer.add(tmp, i, primary, render_scene(seed, i, names, (H, W), primary))
        writer.write_jsons(tmp)
        shutil.copyfile(RESOURCES / f"{classes}-class-map.yaml", tmp / "class-map.yaml")
        out = Path(out_dir)
        summary = {
            "images": int(num_images),
            "seed": int(seed),
            "classes": classes,
            "size": [H, W],
            "images_per_folder": {_folder(n): len(writer.exports[n]["images"]) for n in names},
            "instances_per_class": writer.n_inst,
            "partial_labels": bool(partial_labels),
            "unlabelled_per_class": writer.n_unlabelled,
            "prepare": (f"panoptic-detr prepare --class-map {out / 'class-map.yaml'} --things {out / 'things'} "
                        f"--stuff-truth {out / 'stuff' / 'panoptic.json'} {out / 'stuff' / 'panoptic'} --out DATASET"),
        }
        (tmp / "synth.yaml").write_text("# panoptic-detr synth: what was drawn\n" + yaml.safe_dump(summary, sort_keys=False))
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


def _folder(cls: str) -> str:
    return FOLDER_NAMES.get(cls, cls)


class _ExportWriter:
    """Collects the three outputs image by image (PNGs written at once, JSONs at the end)."""

    def __init__(self, classes: str, size: tuple[int, int], seed: int, rle_fraction: float,
                 partial_labels: bool = False):
        self.classes = classes
        self.partial_labels = partial_labels
        self.names = CLASS_SETS[classes]
        self.H, self.W = size
        self.rle_fraction = rle_fraction
        self.cmap = ClassMap.load(classes)
        self.cats = self.cmap.categories()
        coco = coco_panoptic_categories()
        self.coco_json = coco.to_json()
        self.stuff_coco_ids = [coco.by_name[n].id for n in STUFF_NAMES]
        self.stuff_target = [self.cats.by_name[self.cmap.resolve(n)].id for n in STUFF_NAMES]
        cvat_cats = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(self.names)]
        self.cvat_id = {n: i + 1 for i, n in enumerate(self.names)}
        self.rle_rng = np.random.default_rng([int(seed), 104729])
        self.exports = {n: {"licenses": [{"name": "", "id": 0, "url": ""}],
                            "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "",
                                     "year": ""},
                            "categories": cvat_cats, "images": [], "annotations": []} for n in self.names}
        self.stuff_images, self.stuff_anns, self.truth_images, self.truth_anns = [], [], [], []
        self.n_inst = {n: 0 for n in self.names}
        self.n_unlabelled = {n: 0 for n in self.names}  # instances left out of the exports (partial labels)

    def make_dirs(self, tmp: Path) -> None:
        for n in self.names:
            (tmp / "things" / _folder(n) / "images").mkdir(parents=True)
        (tmp / "stuff" / "panoptic").mkdir(parents=True)
        (tmp / "truth" / "panoptic").mkdir(parents=True)

    def add(self, tmp: Path, i: int, primary: str, scene: Scene) -> None:
        """Image i (0-based over all folders) with `primary` as its class folder."""
        folder = _folder(primary)
        exp = self.exports[primary]
        local_id = len(exp["images"]) + 1
        file_name = f"img_{local_id:03d}.png"
        Image.fromarray(scene.image).save(tmp / "things" / folder / "images" / file_name, format="PNG", compress_level=1)
        exp["images"].append({"id": local_id, "width": self.W, "height": self.H, "file_name": file_name, "license": 0,
                              "flickr_url": "", "coco_url": "", "date_captured": 0})
        for inst in scene.instances:
            self.n_inst[inst.cls] += 1
            ann = self._cvat_annotation(inst, len(exp["annotations"]) + 1, local_id)  # (same random draws either way)
            if self.partial_labels and inst.cls != primary:
                self.n_unlabelled[inst.cls] += 1
                continue  # drawn, in the truth, but not labelled in this class's export
            exp["annotations"].append(ann)
        rel = f"{folder}/images/{file_name}"
        out_name = f"{self.cmap.resolve(folder, folder=True)}_img_{local_id:03d}"
        present = np.flatnonzero(np.bincount(scene.stuff.ravel(), minlength=len(STUFF_NAMES)))
        self._add_stuff_truth(tmp, i, scene, present, rel, out_name)
        self._add_full_truth(tmp, i, scene, present, rel, out_name)

    def _cvat_annotation(self, inst, ann_id: int, image_id: int) -> dict:
        """Polygons, or (a random `rle_fraction`) a brush mask of what is visible as RLE,
        half of those uncompressed, marked `iscrowd: 1` as CVAT writes them
        (cvat-ai/cvat#7030): prepare reads them back as instances (`--crowd auto`)."""
        xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in inst.polygons])
        bbox = [float(xy[:, 0].min()), float(xy[:, 1].min()), float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))]
        ann = {"id": ann_id, "image_id": image_id, "category_id": self.cvat_id[inst.cls], "iscrowd": 0,
               "attributes": {"occluded": bool((inst.full & ~inst.visible).any())}}
        r = self.rle_rng.random()
        if r < self.rle_fraction:
            rle = encode_mask(inst.visible)
            if r < self.rle_fraction / 2:
                rle = {"size": [self.H, self.W], "counts": _uncompressed_counts(inst.visible)}
            ann["segmentation"] = rle
            ann["iscrowd"] = 1
            ann["area"] = float(inst.visible.sum())
        else:
            ann["segmentation"] = inst.polygons
            ann["area"] = float(sum(polygon_area(p) for p in inst.polygons))
        ann["bbox"] = bbox
        return ann

    def _add_stuff_truth(self, tmp: Path, i: int, scene: Scene, present, rel: str, out_name: str) -> None:
        """The true stuff (COCO ids), one segment per COCO category present."""
        seg_ids = np.zeros(len(STUFF_NAMES), np.int32)
        seg_ids[present] = np.arange(1, len(present) + 1)
        stuff_map = seg_ids[scene.stuff]
        stats = segments_from_id_map(stuff_map)
        segs = [{"id": int(seg_ids[k]), "category_id": self.stuff_coco_ids[k], "iscrowd": 0, "isthing": 0,
                 "bbox": stats[int(seg_ids[k])]["bbox"], "area": stats[int(seg_ids[k])]["area"]} for k in present]
        write_id_png(tmp / "stuff" / "panoptic" / f"{out_name}.png", stuff_map)
        self.stuff_images.append({"id": i + 1, "file_name": rel, "width": self.W, "height": self.H})
        self.stuff_anns.append({"image_id": i + 1, "file_name": f"{out_name}.png", "segments_info": segs})

    def _add_full_truth(self, tmp: Path, i: int, scene: Scene, present, rel: str, out_name: str) -> None:
        """The full truth in the class map's id space (what prepare must produce)."""
        group_ids: dict[int, int] = {}
        for k in present:
            group_ids.setdefault(self.stuff_target[k], len(group_ids) + 1)
        lut = np.zeros(len(STUFF_NAMES), np.int32)
        for k in present:
            lut[k] = group_ids[self.stuff_target[k]]
        truth = lut[scene.stuff]
        tsegs = [{"id": sid, "category_id": cid, "iscrowd": 0} for cid, sid in group_ids.items()]
        for inst in scene.instances:
            sid = len(tsegs) + 1
            truth[inst.visible] = sid
            tsegs.append({"id": sid, "category_id": self.cats.by_name[inst.cls].id, "iscrowd": 0})
        tstats = segments_from_id_map(truth)
        tsegs = [dict(s, **tstats[s["id"]]) for s in tsegs if s["id"] in tstats]
        write_id_png(tmp / "truth" / "panoptic" / f"{out_name}.png", truth)
        self.truth_images.append({"id": i + 1, "file_name": f"{out_name}.png", "source": rel, "width": self.W,
                                  "height": self.H})
        self.truth_anns.append({"image_id": i + 1, "file_name": f"{out_name}.png", "segments_info": tsegs})

    def write_jsons(self, tmp: Path) -> None:
        for n in self.names:
            with open(tmp / "things" / _folder(n) / "coco.json", "w") as f:
                json.dump(self.exports[n], f)
        with open(tmp / "stuff" / "panoptic.json", "w") as f:
            json.dump({"info": {"description": "panoptic-detr synth: true stuff (COCO-panoptic ids)"}, "licenses": [],
                       "images": self.stuff_images, "annotations": self.stuff_anns, "categories": self.coco_json}, f)
        with open(tmp / "truth" / "panoptic.json", "w") as f:
            json.dump({"info": {"description": f"panoptic-detr synth: full truth ({self.classes} class map ids)"},
                       "licenses": [], "images": self.truth_images, "annotations": self.truth_anns,
                       "categories": self.cats.to_json()}, f)
        with open(tmp / "truth" / "categories.json", "w") as f:
            json.dump(self.cats.to_json(), f, indent=1)


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return [int(r) for r in runs]
