from panoptic_detr.data.categories import CategoryList, coco_panoptic_categories


def test_coco_panoptic_categories():
    cats = coco_panoptic_categories()
    assert len(cats) == 133
    assert len(cats.thing_ids) == 80 and len(cats.stuff_ids) == 53
    assert cats.num_classes == 201
    assert cats.by_name["person"].id == 1 and cats.by_name["person"].isthing
    table = cats.isthing_table()
    assert table[1] and not table[0] and not table[cats.by_name["sky-other-merged"].id]


def test_roundtrip_json():
    cats = coco_panoptic_categories()
    again = CategoryList.from_json(cats.to_json())
    assert [c.to_json() for c in again] == cats.to_json()
