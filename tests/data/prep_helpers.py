"""Helpers for the data tests: tiny inputs written on the fly, and dataset checks."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from panoptic_detr.data.formats.coco_panoptic import rgb2id


def write_image(path: Path, w: int, h: int, colour=(90, 120, 60), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = colour
    arr[:, : w // 2, 0] = 200  # not a flat image
    Image.fromarray(arr).save(path, format=fmt)
    return path


def write_export(folder: Path, images: list[dict], annotations: list[dict], categories: list[str],
                 json_name: str = "coco.json", image_dir: str = "images", make_images: bool = True) -> Path:
    """A CVAT-style COCO export: `folder/json_name` + `folder/image_dir/<file_name>`.

    images: dicts with id, file_name, width, height (extra keys kept).
    annotations: COCO annotation dicts; `category` (a name) is turned into category_id.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cats = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(categories)]
    ids = {n: i + 1 for i, n in enumerate(categories)}
    anns = []
    for k, a in enumerate(annotations, start=1):
        a = dict(a)
        if "category" in a:
            a["category_id"] = ids[a.pop("category")]
        a.setdefault("id", k)
        a.setdefault("iscrowd", 0)
        a.setdefault("attributes", {"occluded": False})
        anns.append(a)
    for im in images:
        if make_images:
            write_image(folder / image_dir / im["file_name"], im["width"], im["height"])
    data = {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {"description": ""},
            "categories": cats, "images": images, "annotations": anns}
    path = folder / json_name
    path.write_text(json.dumps(data))
    return path


def rect(x0, y0, x1, y1) -> list[float]:
    return [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]


def read_png_ids(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return rgb2id(np.asarray(im.convert("RGB")))


def check_prepared(out: Path) -> dict:
    """Every invariant of a prepared dataset; returns {split: panoptic json}."""
    from pycocotools.coco import COCO

    out = Path(out)
    cats = json.loads((out / "categories.json").read_text())
    cat_ids = [c["id"] for c in cats]
    assert cat_ids == list(range(1, len(cats) + 1)), "category ids must be 1..C"
    isthing = {c["id"]: bool(c["isthing"]) for c in cats}
    assert (out / "dataset.yaml").is_file()
    result = {}
    all_image_ids = set()
    for split in ("train", "val"):
        pan = json.loads((out / "annotations" / f"panoptic_{split}.json").read_text())
        assert [c["id"] for c in pan["categories"]] == cat_ids
        images = {im["id"]: im for im in pan["images"]}
        assert not (set(images) & all_image_ids), "image ids must be unique across splits"
        all_image_ids |= set(images)
        thing_segments = {}
        for ann in pan["annotations"]:
            im = images[ann["image_id"]]
            img_path = out / "images" / split / im["file_name"]
            with Image.open(img_path) as pil:
                assert pil.size == (im["width"], im["height"])
            ids = read_png_ids(out / "panoptic" / split / ann["file_name"])
            assert ids.shape == (im["height"], im["width"])
            segs = ann["segments_info"]
            present = set(np.unique(ids).tolist()) - {0}
            assert present == {s["id"] for s in segs}, f"{ann['file_name']}: PNG ids != segments_info"
            for s in segs:
                m = ids == s["id"]
                assert s["area"] == int(m.sum()), "area must equal the pixel count"
                ys, xs = np.nonzero(m)
                x, y, w, h = s["bbox"]
                assert x <= xs.min() and y <= ys.min() and x + w >= xs.max() + 1 and y + h >= ys.max() + 1, "bbox must enclose"
                assert [x, y, w, h] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                assert s["category_id"] in isthing
                if isthing[s["category_id"]]:
                    thing_segments[(ann["image_id"], s["area"], tuple(s["bbox"]))] = s
        # instances JSON: exactly the thing segments, round-tripping through pycocotools
        inst_path = out / "annotations" / f"instances_{split}.json"
        coco = COCO(str(inst_path))
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) == len(thing_segments)
        for a in anns:
            key = (a["image_id"], a["area"], tuple(a["bbox"]))
            assert key in thing_segments
            assert thing_segments[key]["category_id"] == a["category_id"]
            assert int(coco.annToMask(a).sum()) == a["area"]
        if anns:
            res = coco.loadRes([dict(a, score=1.0) for a in anns if not a["iscrowd"]] or [dict(anns[0], score=1.0)])
            assert len(res.getAnnIds()) >= 1
        result[split] = pan
    return result


def pq_against(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path, categories: list[dict]) -> dict:
    """A small PQ (panopticapi's rules: IoU > 0.5 matches, VOID and crowd regions ignored in
    false positives) per category and averaged; enough to check a dataset against itself."""
    gt = json.loads(Path(gt_json).read_text())
    pred = json.loads(Path(pred_json).read_text())
    pred_by_name = {a["file_name"]: a for a in pred["annotations"]}
    stats = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    for g in gt["annotations"]:
        p = pred_by_name[g["file_name"]]
        G = read_png_ids(Path(gt_dir) / g["file_name"])
        P = read_png_ids(Path(pred_dir) / p["file_name"])
        gsegs = {s["id"]: s for s in g["segments_info"]}
        psegs = {s["id"]: s for s in p["segments_info"]}
        key, cnt = np.unique(G.astype(np.int64) * (1 << 24) + P, return_counts=True)
        pairs = {(int(k >> 24), int(k & 0xFFFFFF)): int(c) for k, c in zip(key.tolist(), cnt.tolist())}
        garea = {k: s["area"] for k, s in gsegs.items()}
        parea = {k: s["area"] for k, s in psegs.items()}
        matched_g, matched_p = set(), set()
        for (gi, pi), inter in pairs.items():
            if gi == 0 or pi == 0 or gsegs[gi]["iscrowd"]:
                continue
            if gsegs[gi]["category_id"] != psegs[pi]["category_id"]:
                continue
            union = garea[gi] + parea[pi] - inter - pairs.get((0, pi), 0)
            iou = inter / union
            if iou > 0.5:
                st = stats[gsegs[gi]["category_id"]]
                st["tp"] += 1
                st["iou"] += iou
                matched_g.add(gi)
                matched_p.add(pi)
        for gi, s in gsegs.items():
            if gi not in matched_g and not s["iscrowd"]:
                stats[s["category_id"]]["fn"] += 1
        crowd = {s["category_id"]: gi for gi, s in gsegs.items() if s["iscrowd"]}
        for pi, s in psegs.items():
            if pi in matched_p:
                continue
            void = pairs.get((0, pi), 0)
            if s["category_id"] in crowd:
                void += pairs.get((crowd[s["category_id"]], pi), 0)
            if void / max(1, parea[pi]) > 0.5:
                continue
            stats[s["category_id"]]["fp"] += 1
    per = {}
    for cid, st in stats.items():
        denom = st["tp"] + 0.5 * st["fp"] + 0.5 * st["fn"]
        per[cid] = st["iou"] / denom if denom else 0.0
    pq = sum(per.values()) / len(per) if per else 0.0
    return {"pq": pq, "per_class": per, "n": len(per)}


def one_line_error(code, err, out: Path, *words):
    """`prepare` refused its input: exit 2, one `error:` line holding `words`, no traceback,
    no output folder and no partial one left beside it."""
    assert code == 2, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "partial output left"
