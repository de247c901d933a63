import pytest

from panoptic_detr.data.class_map import IGNORE, ClassMap
from panoptic_detr.errors import ConfigError


def test_construction_preset_ids_and_folding():
    cm = ClassMap.load("construction")
    cats = cm.categories()
    assert len(cats) == 64 and len(cats.thing_ids) == 48
    assert [c.id for c in cats] == list(range(1, 65))
    # things first in map order, then stuff groups in map order (misc first there)
    assert cats[0].name == "aac_blocks" and cats[47].name == "wood_primer"
    assert cats.by_name["misc"].id == 49 and not cats.by_name["misc"].isthing
    assert cats.by_name["wall"].id == 63 and cats.by_name["rawmaterial"].id == 64
    assert cm.misc == "misc"
    assert cm.resolve("person") == "misc" and cm.resolve("car") == "misc"
    assert cm.resolve("gravel") == "ground" and cm.resolve("wall-brick") == "wall"
    assert cm.resolve("sky-other-merged") == "sky"
    assert cm.resolve("concrete_pump_(50%)", folder=True) == "concrete_pump"
    assert cm.resolve("structural_steel_-_channel") == "structural_steel_channel"
    assert cm.resolve("Dump Truck - Tipper Truck") == "dump_truck_tipper_truck"
    assert cm.resolve("no-such-thing") is None
    # stable: loading twice gives the same id space
    assert ClassMap.load("construction").categories().to_json() == cats.to_json()


def test_demo_and_base_share_stuff():
    demo, base = ClassMap.load("demo").categories(), ClassMap.load("base").categories()
    assert [c.name for c in demo if not c.isthing] == [c.name for c in base if not c.isthing]
    assert not set(demo.names()[:5]) & set(base.names()[:5])
    assert ClassMap.load("demo").resolve("water_tank_(sintex)", folder=True) == "water_tank"


def test_fold_lists_aliases_ignore():
    cm = ClassMap.from_dict(
        {
            "things": ["person", {"vehicle": ["car", "bus"]}],
            "stuff": {"sky": ["sky-other-merged"], "misc": ["all COCO thing classes"]},
            "aliases": {"Auto": "vehicle"},
            "ignore": ["unlabeled"],
        }
    )
    assert cm.categories().names() == ["person", "vehicle", "sky", "misc"]
    assert cm.resolve("person") == "person"  # a class wins over the misc fold
    assert cm.resolve("bus") == "vehicle" and cm.resolve("Auto") == "vehicle"
    assert cm.resolve("dog") == "misc"
    assert cm.resolve("unlabeled") == IGNORE
    assert ClassMap.from_dict(cm.to_dict()).categories().to_json() == cm.categories().to_json()


@pytest.mark.parametrize(
    "data, words",
    [
        ({"things": ["a", "a"]}, "twice"),
        ({"things": ["a"], "stuff": {"s": ["x"], "t": ["x"]}}, "both"),
        ({"things": ["a"], "aliases": {"b": "zzz"}}, "not a class"),
        ({"things": ["a"], "colours": 1}, "unknown key"),
        ({}, "no classes"),
    ],
)
def test_bad_class_maps(data, words):
    with pytest.raises(ConfigError, match=words):
        ClassMap.from_dict(data, source="cm.yaml")


def test_missing_class_map_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ClassMap.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("things: [a\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        ClassMap.load(bad)


def test_preset_name_wins_over_a_folder_of_the_same_name(tmp_path, monkeypatch):
    from panoptic_detr.data.class_map import ClassMap

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    assert ClassMap.load("base").categories().num_classes > 1
