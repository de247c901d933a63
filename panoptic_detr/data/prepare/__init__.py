"""`prepare`: build one COCO-panoptic dataset from annotated things and panoptic stuff.

Inputs (any mix): COCO instances exports of things (`--things`, CVAT "COCO 1.0" files or
folders of per-class exports, see `formats.coco_instances`), labelme folders
(`--labelme`), COCO-panoptic sets (`--coco-panoptic JSON PNG_DIR IMAGE_DIR`), and a class
map (`data.class_map`) that names the dataset's classes and folds every input name into
one of them. Output (`out/`), readable by the COCO panopticapi::

    images/{train,val}/<name>             the images (copied; EXIF-rotated ones re-encoded upright)
    panoptic/{train,val}/<stem>.png       RGB-encoded segment ids (id = R + 256 G + 256^2 B; 0 = VOID)
    annotations/panoptic_{train,val}.json segments_info: id, category_id, iscrowd, bbox, area (from the PNG)
    annotations/instances_{train,val}.json  thing segments as COCO instances (RLE masks), for box/mask AP
    categories.json                       the class map's categories (ids 1..C, see data.class_map)
    dataset.yaml                          what was built from what (inputs, options, counts)
    prepare-report.txt                    warnings and skipped items (only when there are any)

How each image's id map is made:
1. Stuff. Custom images (things only: `--things`, `--labelme`) take their stuff from the
   teacher (the `teacher` callable given to `prepare`; the CLI builds it from
   `--stuff-from CKPT`), from the true
   stuff (`--stuff-truth JSON PNG_DIR`, matched by file name), or nothing (VOID). With both
   teacher and truth, the teacher labels the train split and the truth the val split (an
   honest val score). COCO-panoptic images keep their own segments. Every segment's
   category name goes through the class map; segments that land on a stuff class are kept
   and merged (one segment per stuff class and image); segments that land on a thing class
   are kept as instances for COCO-panoptic inputs, dropped (VOID) for teacher/truth stuff;
   unknown names become VOID (with a warning).
2. Annotated objects are painted over the stuff, in their file order: first annotations
   whose class is stuff (e.g. COCO things folded into `misc`), then things. Things always
   win over stuff; among overlapping things the later annotation wins (for CVAT exports
   annotated front-to-back this is the usual z-order; a thing hidden entirely is dropped
   with a warning). Crowd annotations (`iscrowd: 1`) become crowd segments, except the
   RLE masks of CVAT exports, which CVAT always marks crowd (`crowd` option, see
   `formats.coco_instances`). labelme's `__ignore__` regions are painted VOID and its
   `_background_` shapes show the stuff again, in file order among the things.
3. Everything else is VOID (0).

Image ids are 1..N over the whole dataset in file-name order. The train/val split is
deterministic for (inputs, seed, val ratio) and stratified: every thing class with at
least 2 images has one in val, then val is filled towards `val_ratio` keeping per-class
proportions (images without things count as one more class) and at least one train
image per class. `val_ratio=1.0` puts every image in val (an evaluation-only set); an
empty split that the ratio did not ask for is a warning.

Bad input: every problem is one line naming the file and the item (every image is
decoded once while validating, so a truncated file is reported as a missing one is). By default the first
problem stops the run (exit 2 at the CLI) before anything is written; `check=True` lists
every problem and writes nothing; `skip_bad=True` drops the bad images (whole images, so
no unlabelled object is left in a kept one) and lists them in `prepare-report.txt`. The
output is built under a temporary name and renamed at the end (`utils.io.atomic_dir`).

The stages, one module each: `read` (inputs by kind, `READERS`) -> `validate` (class map,
geometry, duplicates; no pixels) -> `split` -> `stuff` (own / truth / teacher layer) and
`paint` (annotated objects over it) -> `write` (the files); `pipeline.prepare` runs them
with a `PrepareOptions` (`options`), in `workers` processes (`parallel`); a teacher with
`batch` is asked a window of images at a time (`teach`: on a GPU, or sharded under torchrun
by `commands/prepare.py`).
"""

from panoptic_detr.data.prepare.options import PrepareOptions, PrepareSummary, Teacher
from panoptic_detr.data.prepare.pipeline import prepare
from panoptic_detr.data.prepare.read import READERS
from panoptic_detr.data.prepare.split import stratified_split
from panoptic_detr.data.prepare.stuff import MASK_FILL

__all__ = ["prepare", "PrepareOptions", "PrepareSummary", "stratified_split", "Teacher", "MASK_FILL", "READERS"]
