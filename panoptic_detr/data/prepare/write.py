"""Stage 5, write: the prepared dataset's files (layout in `data.prepared.PreparedDataset`).

`DatasetWriter` writes each image, its panoptic PNG and its entries as it comes, then the
split JSONs and categories.json; `dataset_description` is dataset.yaml (what was built
from what) and `report_text` is prepare-report.txt (skipped images and warnings).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.formats.coco_instances import instances_json
from panoptic_detr.data.formats.coco_panoptic import panoptic_json, segments_from_id_map, write_id_png
from panoptic_detr.data.formats.common import encode_mask
from panoptic_detr.data.prepare.item import Item, stem, write_image
from panoptic_detr.data.prepare.options import PrepareOptions
from panoptic_detr.data.prepared import SPLITS, PreparedDataset
from panoptic_detr.utils.io import write_json, write_text

__all__ = ["DatasetWriter", "dataset_description", "write_description", "report_text", "REPORT_NAME"]

REPORT_NAME = "prepare-report.txt"  # written only when there are warnings or skipped images


class DatasetWriter:
    def __init__(self, root: Path, cats: CategoryList, compress_level: int = 1):
        self.dataset = PreparedDataset(root)
        self.cats = cats
        self.compress_level = compress_level
        for sp in SPLITS:
            self.dataset.split(sp).images_dir.mkdir(parents=True)
            self.dataset.split(sp).panoptic_dir.mkdir(parents=True)
        self.dataset.annotations_dir.mkdir()
        self.images: dict[str, list] = {sp: [] for sp in SPLITS}
        self.panoptic: dict[str, list] = {sp: [] for sp in SPLITS}
        self.instances: dict[str, list] = {sp: [] for sp in SPLITS}
        self.counts = {sp: 0 for sp in SPLITS}  # images per split
        self.seg_counts = {sp: 0 for sp in SPLITS}
        self.partial_counts = {sp: 0 for sp in SPLITS}  # images that leave a thing class unannotated
        self._n_things = sum(1 for c in cats if c.isthing)
        self.next_ann_id = 1  # instance ids run over both splits

    def add(self, it: Item, id_map: np.ndarray, segs: list[dict]) -> None:
        """Write the image and its PNG into its split; keep its JSON entries."""
        self.record(it, self.write_files(it, id_map, segs))

    def write_files(self, it: Item, id_map: np.ndarray, segs: list[dict]) -> tuple:
        """Write the image and its PNG; its JSON entries (image, panoptic annotation, thing
        instances without their ids). Changes nothing in the writer: a worker process of
        `parallel` runs it, the main process `record`s its entries in image order."""
        files = self.dataset.split(it.split)
        h, w = id_map.shape
        stats = segments_from_id_map(id_map)
        seg_infos = []
        for s in segs:
            st = stats.get(s["id"])
            if st is not None:  # a segment painted over entirely is left out
                seg_infos.append({"id": s["id"], "category_id": s["category_id"], "iscrowd": s["iscrowd"],
                                  "bbox": st["bbox"], "area": st["area"]})
        png_name = stem(it.name) + ".png"
        write_id_png(files.panoptic_dir / png_name, id_map, self.compress_level)
        write_image(it, files.images_dir / it.name)
        image = {"id": it.image_id, "file_name": it.name, "width": w, "height": h, **self.annotated_sets(it, seg_infos)}
        panoptic = {"image_id": it.image_id, "file_name": png_name, "segments_info": seg_infos}
        return image, panoptic, self._instances(it, id_map, seg_infos)

    def annotated_sets(self, it: Item, seg_infos: list[dict]) -> dict:
        """LVIS's federated annotation of one image: `annotated_category_ids` (every stuff
        class, and the thing classes whose every instance is labelled) and
        `not_exhaustive_category_ids` (thing classes with labelled instances but not
        annotated exhaustively). Readers of the JSONs take an image without them as
        fully annotated (`data.annotated`)."""
        things = [c.id for c in self.cats if c.isthing]
        annotated = set(things) if it.annotated is None else set(it.annotated)
        present = {s["category_id"] for s in seg_infos if self.cats.by_id[s["category_id"]].isthing}
        return {"annotated_category_ids": sorted(annotated | {c.id for c in self.cats if not c.isthing}),
                "not_exhaustive_category_ids": sorted(present - annotated)}

    def record(self, it: Item, entries: tuple) -> None:
        """Keep the JSON entries of `write_files` (instance ids run over both splits)."""
        image, panoptic, instances = entries
        self.images[it.split].append(image)
        self.panoptic[it.split].append(panoptic)
        for inst in instances:
            self.instances[it.split].append({"id": self.next_ann_id, **inst})
            self.next_ann_id += 1
        self.counts[it.split] += 1
        things_annotated = sum(1 for c in image["annotated_category_ids"] if self.cats.by_id[c].isthing)
        self.partial_counts[it.split] += int(things_annotated < self._n_things)
        self.seg_counts[it.split] += len(panoptic["segments_info"])

    def _instances(self, it: Item, id_map: np.ndarray, seg_infos: list[dict]) -> list[dict]:
        """The thing segments as COCO instances (RLE masks), for box and mask AP."""
        id_map_f = None
        out = []
        for s in seg_infos:
            if not self.cats.by_id[s["category_id"]].isthing:
                continue
            if id_map_f is None:
                id_map_f = np.asfortranarray(id_map)  # comparisons then stay Fortran-ordered
            out.append({
                "image_id": it.image_id, "category_id": s["category_id"],
                "segmentation": encode_mask(id_map_f == s["id"]), "area": s["area"], "bbox": s["bbox"],
                "iscrowd": s["iscrowd"],
            })
        return out

    def finish(self, cmap: ClassMap) -> None:
        """The split JSONs and categories.json."""
        cat_json = self.cats.to_json()
        thing_json = [c for c in cat_json if c["isthing"]]
        info = {"description": "prepared by panoptic-detr", "class_map": cmap.source}
        for sp in SPLITS:
            files = self.dataset.split(sp)
            write_json(files.panoptic_json, panoptic_json(self.images[sp], self.panoptic[sp], cat_json, info))
            write_json(files.instances_json, instances_json(self.images[sp], self.instances[sp], thing_json, info))
        write_json(self.dataset.categories_json, cat_json, indent=1)


def _stuff_rule(has_teacher: bool, has_truth: bool) -> str:
    if has_teacher and has_truth:
        return "teacher labels train, truth labels val"
    return "truth" if has_truth else ("teacher" if has_teacher else "none (VOID)")


def dataset_description(options: PrepareOptions, cmap: ClassMap, cats: CategoryList, inputs: list[dict],
                        has_teacher: bool, modes: Counter, writer: DatasetWriter, skipped: int, warnings: int) -> dict:
    """What dataset.yaml says: what was built from what, with which options, and the counts."""
    o = options
    return {
        "format": "coco-panoptic",
        "built_by": "panoptic-detr prepare",
        "class_map": {"source": cmap.source, **cmap.to_dict()},
        "categories": {
            "count": len(cats),
            "num_classes": cats.num_classes,
            "ids": "1..C: things in class-map order, then stuff groups in class-map order",
            "things": [c.name for c in cats if c.isthing],
            "stuff": [c.name for c in cats if not c.isthing],
        },
        "inputs": inputs,
        "stuff_of_custom_images": {
            "teacher": str(o.stuff_from) if o.stuff_from is not None else ("<callable>" if has_teacher else None),
            "teacher_mask_things": bool(o.teacher_mask_things),
            "truth": str(o.stuff_truth[0]) if o.stuff_truth else None,
            "rule": _stuff_rule(has_teacher, bool(o.stuff_truth)),
            "images_by_source": dict(sorted(modes.items())),
        },
        "painting": "stuff first, then annotations in file order; things win over stuff; the later of overlapping things wins",
        "split": {"seed": o.seed, "val_ratio": o.val_ratio, "train": writer.counts["train"], "val": writer.counts["val"],
                  "stratified_by": "thing classes"},
        "segments": writer.seg_counts,
        "partially_annotated_images": {
            **writer.partial_counts,
            "rule": "annotated_category_ids per image: per-class folders their class, a COCO file its categories, "
                    "labelme " + ("its class folder's class" if o.labelme_per_folder else "every class")
                    + "; stuff always",
        },
        "skipped": skipped,
        "warnings": warnings,
    }


def write_description(path: Path, described: dict) -> None:
    write_text(path, "# What this dataset was built from (panoptic-detr prepare)\n"
               + yaml.safe_dump(described, sort_keys=False, allow_unicode=True))


def report_text(problems: list[str], skipped: list[str], warnings: list[str]) -> str:
    """prepare-report.txt: the problems of the skipped images, their names, the warnings."""
    lines = [f"# prepare report: {len(skipped)} image(s) skipped, {len(warnings)} warning(s)"]
    if problems:
        lines += ["", "## problems (the images they name were skipped)"] + problems
        lines += ["", "## skipped images"] + sorted(set(skipped))
    if warnings:
        lines += ["", "## warnings"] + warnings
    return "\n".join(lines) + "\n"
