"""Stage 1, read: every input, by its kind, into `SourceImage`s (no pixels decoded).

`READERS` maps an input kind to its reader, `reader(spec, class_map, options) -> (images,
problems, warnings, description)`; the description (or None when nothing could be read)
goes to dataset.yaml's `inputs`. A new input format is one more entry.
"""

from __future__ import annotations

from typing import Callable

from panoptic_detr.data.class_map import IGNORE, ClassMap
from panoptic_detr.data.formats.coco_instances import read_things
from panoptic_detr.data.formats.common import SourceImage
from panoptic_detr.data.formats.labelme import read_labelme_dir
from panoptic_detr.data.formats.panoptic_sources import read_panoptic_sources
from panoptic_detr.data.prepare.options import PrepareOptions
from panoptic_detr.errors import PanopticDetrError

__all__ = ["READERS", "read_inputs"]

Reader = Callable[[object, ClassMap, PrepareOptions], "tuple[list[SourceImage], list[str], list[str], dict | None]"]


def _read_coco_instances(path, cmap: ClassMap, options: PrepareOptions):
    warns: list[str] = []
    imgs, probs = read_things(path, cmap, crowd=options.crowd, warnings=warns)
    desc = {"kind": "coco-instances", "path": str(path), "images": len(imgs)}
    if warns:
        desc["crowd"] = options.crowd
    return imgs, probs, warns, desc


def _read_labelme(path, cmap: ClassMap, options: PrepareOptions):
    imgs, probs = read_labelme_dir(path)
    desc = {"kind": "labelme", "path": str(path), "images": len(imgs)}
    if options.labelme_per_folder:  # `<class folder>/<file>.json`: only the folder's class is annotated
        for im in imgs:
            parts = im.relpath.split("/")
            cls = cmap.resolve(parts[0], folder=True) if len(parts) > 1 else None
            im.annotated = [cls] if isinstance(cls, str) and cls != IGNORE else None
        desc["annotated"] = "per class folder"
    return imgs, probs, [], desc


def _read_coco_panoptic(spec, cmap: ClassMap, options: PrepareOptions):
    js, png_dir, img_dir = spec
    try:
        imgs = read_panoptic_sources(js, png_dir, img_dir)
    except PanopticDetrError as e:
        return [], [str(e)], [], None
    desc = {"kind": "coco-panoptic", "path": str(js), "png_dir": str(png_dir), "image_dir": str(img_dir),
            "images": len(imgs)}
    return imgs, [], [], desc


READERS: dict[str, Reader] = {
    "coco-instances": _read_coco_instances,  # --things: CVAT "COCO 1.0" files or folders
    "labelme": _read_labelme,  # --labelme folders
    "coco-panoptic": _read_coco_panoptic,  # --coco-panoptic JSON PNG_DIR IMAGE_DIR
}


def read_inputs(options: PrepareOptions, cmap: ClassMap
                ) -> tuple[list[SourceImage], list[str], list[str], list[dict]]:
    """(images, problems, warnings, input descriptions) of every input, in the order of the options."""
    inputs = [("coco-instances", options.things), ("labelme", options.labelme),
              ("coco-panoptic", options.panoptic_inputs())]
    sources: list[SourceImage] = []
    problems: list[str] = []
    warnings: list[str] = []
    described: list[dict] = []
    for kind, specs in inputs:
        for spec in specs:
            imgs, probs, warns, desc = READERS[kind](spec, cmap, options)
            sources += imgs
            problems += probs
            warnings += warns
            if desc is not None:
                described.append(desc)
    return sources, problems, warnings, described
