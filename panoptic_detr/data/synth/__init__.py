"""Synthetic construction-site scenes, written in the raw forms users have (CLI `synth`).

A scene: sky (gradient, clouds) over ground (dirt, gravel or sand, sometimes a road,
grass or a puddle), often a brick or concrete wall, a building and trees on the horizon;
in front, a few thing instances standing on the ground, drawn back to front so that they
occlude each other (every kept instance stays at least 45% visible). Each image has one
"primary" class (its export folder) with 1-4 instances, sometimes one instance of
another class. All drawing is vectorised numpy on the instance's window.

`classes="demo"`: aac_blocks, rcc_hume_pipes, water_tank, fire_extinguishers,
hollow_concrete_blocks (construction materials; class map preset `demo`).
`classes="base"`: crate, barrel, cone, ball, vehicle (generic objects for the base model;
preset `base`). Both presets share the stuff groups sky, ground, wall, building, plant,
water (+ misc).

Modules: `noise` (textures), `stuff` (layout and painting of the stuff), `shapes`,
`demo_things`, `base_things` (thing painters), `classes` (class sets), `scene`
(`render_scene`), `export` (`synth`, the writer).

Output of `synth(out, n)`::

    out/things/<folder>/coco.json           CVAT-style "COCO 1.0" export of one class folder:
    out/things/<folder>/images/img_NNN.png  image and annotation ids restart at 1 per folder,
                                            polygons (some instances as brush masks: RLE,
                                            compressed or not, `iscrowd: 1` as CVAT writes
                                            them), float bbox/area, `attributes`; the
                                            water_tank / vehicle folders carry an alias name
    out/stuff/panoptic.json, stuff/panoptic/*.png   the true stuff as COCO-panoptic with COCO
                                            category ids and names (images named by their
                                            path under things/), for `prepare --stuff-truth`
    out/truth/panoptic.json, truth/panoptic/*.png, truth/categories.json
                                            the full truth in the class map's id space, named as
                                            `prepare` names the images (`<class>_img_NNN.png`)
    out/class-map.yaml, out/synth.yaml      the class map to prepare with, and what was drawn

Deterministic: image i depends only on (seed, i, classes, size), not on the image count.
"""

from panoptic_detr.data.synth.classes import BASE_CLASSES, CLASS_SETS, DEMO_CLASSES
from panoptic_detr.data.synth.export import FOLDER_NAMES, synth
from panoptic_detr.data.synth.scene import Instance, Scene, render_scene
from panoptic_detr.data.synth.stuff import STUFF_NAMES

__all__ = ["synth", "render_scene", "Scene", "Instance", "DEMO_CLASSES", "BASE_CLASSES", "CLASS_SETS", "FOLDER_NAMES",
           "STUFF_NAMES"]
