"""The two synth class sets and, per thing class, its painter and size factor."""

from __future__ import annotations

from panoptic_detr.data.synth.base_things import make_ball, make_barrel, make_cone, make_crate, make_vehicle
from panoptic_detr.data.synth.demo_things import make_aac, make_extinguisher, make_hollow, make_pipe, make_tank

DEMO_CLASSES = ("aac_blocks", "rcc_hume_pipes", "water_tank", "fire_extinguishers", "hollow_concrete_blocks")
BASE_CLASSES = ("crate", "barrel", "cone", "ball", "vehicle")
CLASS_SETS = {"demo": DEMO_CLASSES, "base": BASE_CLASSES}

# class -> (make_<class>(rng, cx, yb, s) -> ThingShape, factor on the perspective size s)
THING_MAKERS = {
    "aac_blocks": (make_aac, 0.85),
    "hollow_concrete_blocks": (make_hollow, 0.85),
    "rcc_hume_pipes": (make_pipe, 0.9),
    "water_tank": (make_tank, 1.0),
    "fire_extinguishers": (make_extinguisher, 0.7),
    "crate": (make_crate, 0.8),
    "barrel": (make_barrel, 0.95),
    "cone": (make_cone, 0.7),
    "ball": (make_ball, 0.8),
    "vehicle": (make_vehicle, 0.9),
}
