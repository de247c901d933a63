"""The demo's HTML report: metrics, curves, a gallery of predictions beside ground truth,
and the explain figures. Every image is a file under the run folder, linked relatively,
so the report opens offline and can be zipped with its folder."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from panoptic_detr.utils.io import write_text


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _metrics_table(panoptic: dict) -> str:
    rows = ["<tr><th></th><th>PQ</th><th>SQ</th><th>RQ</th><th>categories</th></tr>"]
    for k in ("All", "Things", "Stuff"):
        r = panoptic[k]
        rows.append(
            f"<tr><th>{k}</th><td>{_pct(r['pq'])}</td><td>{_pct(r['sq'])}</td>"
            f"<td>{_pct(r['rq'])}</td><td>{r['n']}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _pct(v) -> str:
    """A fraction as a percentage; "-" for COCO's -1 (an empty size bucket), None or NaN."""
    if v is None or not isinstance(v, (int, float)) or v != v or v < 0:
        return "-"
    return f"{100 * float(v):.1f}"


def _per_class_table(per_class: dict) -> str:
    """PQ per class; a class with no ground-truth segment in the split is listed as absent
    (its PQ is undefined, not 0), with its false positives if any."""
    rows = ["<tr><th>class</th><th>PQ</th><th>SQ</th><th>RQ</th><th>TP</th><th>FP</th><th>FN</th></tr>"]
    for name, r in per_class.items():
        if r["tp"] + r["fn"] == 0:
            fp = f", {r['fp']} false positive{'s' if r['fp'] != 1 else ''}" if r["fp"] else ""
            rows.append(f'<tr class="absent"><td>{html.escape(name)}</td>'
                        f'<td colspan="6">absent from the split{fp}</td></tr>')
            continue
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_pct(r['pq'])}</td><td>{_pct(r['sq'])}</td>"
            f"<td>{_pct(r['rq'])}</td><td>{r['tp']}</td><td>{r['fp']}</td><td>{r['fn']}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _ap_table(metrics: dict) -> str:
    parts = []
    for kind in ("bbox", "segm"):
        if kind in metrics:
            m = metrics[kind]
            cells = "".join(f"<td>{_pct(v)}</td>" for v in m.values())
            head = "".join(f"<th>{html.escape(k)}</th>" for k in m)
            parts.append(f"<h3>{kind} AP</h3><table><tr>{head}</tr><tr>{cells}</tr></table>")
    return "".join(parts)


def ground_truth_overlays(run: Path, limit: int = 8) -> list[tuple[Path, Path]]:
    """Render ground-truth overlays of val images; pair them with predicted overlays."""
    from panoptic_detr.data.categories import CategoryList
    from panoptic_detr.data.formats.coco_panoptic import read_id_png
    from panoptic_detr.data.prepared import PreparedDataset
    from panoptic_detr.viz.overlay import overlay

    val = PreparedDataset(run / "dataset").split("val")
    gt = json.loads(val.panoptic_json.read_text())
    cats = CategoryList.from_json(gt["categories"])
    images = {im["id"]: im for im in gt["images"]}
    out_dir = run / "report_files"
    out_dir.mkdir(exist_ok=True)
    pairs = []
    for ann in gt["annotations"][:limit]:
        im = images[ann["image_id"]]
        pred = run / "predict" / "overlays" / (Path(im["file_name"]).stem + ".jpg")
        if not pred.exists():
            continue
        image = np.asarray(Image.open(val.images_dir / im["file_name"]).convert("RGB"))
        ids = read_id_png(val.panoptic_dir / ann["file_name"])
        vis = overlay(image, ids, ann["segments_info"], cats)
        target = out_dir / (Path(im["file_name"]).stem + "_gt.jpg")
        Image.fromarray(vis).save(target, quality=90)
        pairs.append((target, pred))
    return pairs


def _explain_section(folder: Path, run: Path) -> str:
    """The explain figures with their titles, and the link to the interactive explorer."""
    from panoptic_detr.viz.explain_figures import FIGURES
    from panoptic_detr.viz.explorer import EXPLORER_FILE

    titles = {f: heading for f, heading, _ in FIGURES.values()}
    parts = []
    if (folder / EXPLORER_FILE).is_file():
        parts.append(f'<p class="lead"><a href="{_rel(folder / EXPLORER_FILE, run)}">Open the interactive explorer</a>: '
                     "click any pixel for the encoder's attention at any layer and head, any query for its "
                     "cross-attention, box, mask and mask-head maps, any segment for its query.</p>")
    for p in sorted(folder.glob("*.png")):
        title = titles.get(p.name, p.stem.replace("_", " "))
        parts.append(f'<figure><img src="{_rel(p, run)}" alt="{html.escape(title, quote=True)}">'
                     f"<figcaption>{html.escape(title)}</figcaption></figure>")
    return "".join(parts)


def _took(stage: dict) -> str:
    return "skipped (done)" if stage["skipped"] else f"{stage['seconds']:.1f} s"


def write_report(run: Path, summary: dict) -> Path:
    run = Path(run)
    metrics = summary["metrics"]
    pan = metrics["panoptic"]
    started = summary["started_from"]
    stage_rows = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{_took(s)}</td>"
        f"<td><code>{html.escape(s['command'])}</code></td></tr>"
        for s in summary["stages"]
    )
    curves = sorted((run / "train").glob("*.png"))
    curve_html = "".join(f'<img src="{_rel(p, run)}" alt="{p.stem}" style="max-width:48%">' for p in curves)
    gallery = "".join(
        f'<div class="pair"><figure><img src="{_rel(g, run)}" alt="ground truth"><figcaption>ground truth</figcaption></figure>'
        f'<figure><img src="{_rel(p, run)}" alt="prediction"><figcaption>prediction</figcaption></figure></div>'
        for g, p in ground_truth_overlays(run)
    )
    explain_html = _explain_section(run / "explain", run)
    origin = (
        f"This run started from the shipped base model (<code>{html.escape(started)}</code>), "
        "which labelled the stuff of the training images and initialised the model."
        if started != "scratch"
        else "This run trained from scratch (no base model): things are learnt far more slowly."
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>panoptic-detr demo report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
.pair {{ display: flex; gap: 8px; margin-bottom: 8px; }}
.pair figure {{ margin: 0; flex: 1; }}
figure {{ margin: 0 0 1em; }}
tr.absent td {{ color: #777; text-align: left; }}
.lead {{ font-size: 1.1em; font-weight: 600; }}
</style></head><body>
<h1>panoptic-detr demo</h1>
<p>{origin}</p>
<p>Total time {summary['total_seconds']:.0f} s, peak memory {summary['peak_memory_mb']:.0f} MB.</p>
<h2>Panoptic quality (val split)</h2>
{_metrics_table(pan)}
{_ap_table(metrics)}
<h3>Per class</h3>
{_per_class_table(pan.get('per_class', {}))}
<h2>Training curves</h2>
{curve_html}
<h2>Predictions beside ground truth</h2>
{gallery}
<h2>How the model sees an image</h2>
{explain_html}
<h2>Stages</h2>
<table><tr><th>stage</th><th>time</th><th>command</th></tr>{stage_rows}</table>
</body></html>
"""
    target = run / "report.html"
    write_text(target, page)
    return target
