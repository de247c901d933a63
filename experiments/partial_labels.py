"""The partial-labels experiment (README, "Partial labels"): the demo's recipe on
`synth --partial-labels` data, trained once with the standard loss and once with
`loss.partial_labels`, both scored on the FULL synthetic truth of the val images.

    .venv/bin/python experiments/partial_labels.py --out runs/partial-exp [--epochs 10]

Stages already done are reused (each stage's output is its marker). Prints, per run, PQ /
PQ things / PQ stuff on the full truth, the federated PQ on the partial val labels, and
the recall of the val objects that the exports left unlabelled (the secondary objects:
things of another class than their image's folder), per class. Two trainings of the
demo's recipe: ~8 min each on a quiet 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from panoptic_detr.apps.demo import BASE_MODEL  # noqa: E402
from panoptic_detr.cli import main  # noqa: E402
from panoptic_detr.data.formats.coco_panoptic import read_id_png  # noqa: E402

RUNS = {"standard": [], "partial": ["--set", "loss.partial_labels=true"]}


def run(argv: list, done: Path) -> None:
    if done.exists():
        print(f"[exp] done already: {done}")
        return
    argv = [str(a) for a in argv]
    print("[exp] panoptic-detr " + " ".join(argv), flush=True)
    if main(argv) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")


def secondary_recall(dataset: Path, truth: Path, predictions: Path) -> dict:
    """Per class: (matched, total) over the val objects of another class than their image's
    folder (the ones a partial export leaves unlabelled); matched = a predicted segment of
    the same class with IoU > 0.5 (PQ's rule)."""
    split = json.loads((dataset / "annotations" / "panoptic_val.json").read_text())
    cats = {c["id"]: c["name"] for c in split["categories"]}
    ids = {c["name"]: c["id"] for c in split["categories"]}
    things = {c["id"] for c in split["categories"] if c["isthing"]}
    tjson = json.loads((truth / "panoptic.json").read_text())
    t_by_stem = {Path(a["file_name"]).stem: a for a in tjson["annotations"]}
    preds = {Path(a["file_name"]).stem: a for a in json.loads((predictions / "predictions.json").read_text())["annotations"]}
    hit, total = Counter(), Counter()
    for im in split["images"]:
        stem = Path(im["file_name"]).stem
        folder_class = ids[stem.split("_img_")[0]]
        t = t_by_stem[stem]
        tmap = read_id_png(truth / "panoptic" / t["file_name"])
        pann = preds[stem]
        pmap = read_id_png(predictions / "predictions" / pann["file_name"])
        for seg in t["segments_info"]:
            c = seg["category_id"]
            if c not in things or c == folder_class:
                continue
            total[cats[c]] += 1
            gt = tmap == seg["id"]
            for p in pann["segments_info"]:
                if p["category_id"] != c:
                    continue
                pm = pmap == p["id"]
                inter = int(np.logical_and(gt, pm).sum())
                if inter and inter / int(np.logical_or(gt, pm).sum()) > 0.5:
                    hit[cats[c]] += 1
                    break
    return {name: (hit[name], total[name]) for name in sorted(total)}


def main_(args) -> None:
    out = Path(args.out)
    raw, ds = out / "raw", out / "dataset"
    run(["synth", raw, "--images", args.images, "--seed", 0, "--classes", "demo", "--size", "256x320",
         "--partial-labels", "--quiet"], raw / "synth.yaml")
    run(["prepare", "--class-map", raw / "class-map.yaml", "--out", ds, "--things", raw / "things",
         "--stuff-truth", raw / "stuff" / "panoptic.json", raw / "stuff" / "panoptic", "--seed", 0,
         "--stuff-from", BASE_MODEL, "--teacher-short-side", 256, "--quiet"], ds / "dataset.yaml")
    rows = {}
    for name, extra in RUNS.items():
        train = out / f"train-{name}"
        run(["train", "--data", ds, "--out", train, "--config", "tiny", "--stage", "joint", "--epochs", args.epochs,
             "--seed", 0, "--init", BASE_MODEL, *extra], train / "model_final.pth")
        ev = out / f"eval-truth-{name}"
        run(["evaluate", train / "model_final.pth", ds, "--split", "val", "--ground-truth", raw / "truth" / "panoptic.json",
             raw / "truth" / "panoptic", "--out", ev, "--no-progress", "--no-per-class"], ev / "metrics.json")
        fed = out / f"eval-partial-{name}"
        run(["evaluate", train / "model_final.pth", ds, "--split", "val", "--federated", "--out", fed, "--no-progress",
             "--no-per-class"], fed / "metrics.json")
        rows[name] = (json.loads((ev / "metrics.json").read_text()), json.loads((fed / "metrics.json").read_text()),
                      secondary_recall(ds, raw / "truth", ev))
    print("\non the full truth (val):      PQ  things   stuff | on the partial val labels: PQ  federated PQ things")
    for name, (truth_m, fed_m, _) in rows.items():
        p, f = truth_m["panoptic"], fed_m
        print(f"{name:<22} {100 * p['All']['pq']:9.1f} {100 * p['Things']['pq']:7.1f} {100 * p['Stuff']['pq']:7.1f} | "
              f"{100 * f['panoptic']['All']['pq']:27.1f} {100 * f['panoptic_federated']['Things']['pq']:10.1f}")
    print("\nrecall of the val objects the exports left unlabelled (full truth), per class:")
    for name, (_, _, rec) in rows.items():
        cells = ", ".join(f"{c} {h}/{n}" for c, (h, n) in rec.items())
        hits = sum(h for h, _ in rec.values())
        n = sum(n for _, n in rec.values())
        print(f"  {name:<10} {hits}/{n} ({100 * hits / max(n, 1):.0f}%): {cells}")
    print("\nper-class recall on the full truth (TP / (TP + FN)), things:")
    for name, (truth_m, _, _) in rows.items():
        pc = truth_m["panoptic"]["per_class"]
        cats = [c["name"] for c in truth_m["panoptic"]["per_category"] if c["isthing"]]
        print(f"  {name:<10} " + ", ".join(f"{c} {100 * pc[c]['tp'] / max(1, pc[c]['tp'] + pc[c]['fn']):.0f}%"
                                            for c in cats))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/partial-exp")
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=10)
    main_(ap.parse_args())
