"""The output folder of `predict`, built in a staging folder that a killed run can resume.

    <out>/panoptic/<stem>.png      COCO-panoptic ids
    <out>/overlays/<stem>.jpg      with overlays
    <out>/predictions.jsonl        one line per image, input order: {"image": {...}, "annotation": {...}}
    <out>/predictions.json         COCO-panoptic results: images, annotations, categories

The folder is built as `.<out name>.partial` beside `--out` and renamed to `--out` when
complete. Each process (one, or each rank of a torchrun group) appends one line per image
to its own `parts/rank-<r>.jsonl` as soon as the image's PNG (and overlay) is written,
so memory stays flat whatever the number of images, and a line means "done". `--resume`
continues a staging folder: `run.json` there must describe the same inputs and settings;
the images that have a line are skipped (a torn last line of a killed process is
dropped, and its image done again). At the end the lines are merged in input order into
`predictions.jsonl` and `predictions.json`, streamed: one offset per image is held.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from panoptic_detr.errors import PanopticDetrError

__all__ = ["staging_path", "PredictionsFolder", "open_staging", "done_indices", "assemble", "finish"]

PARTS = "parts"
RUN_JSON = "run.json"
_PARTIAL_HINT = "pass --resume to continue it, or --overwrite to start over"


def staging_path(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def run_description(entries: list[tuple[str, str, object]], predictor, overlays: bool) -> dict:
    """What a staging folder was started with: the inputs (path, stem, image id, hashed),
    the inference settings and categories, overlays or not."""
    h = hashlib.sha256()
    for path, stem, image_id in entries:
        h.update(json.dumps([path, stem, image_id]).encode() + b"\n")
    cats = predictor.categories.to_json() if hasattr(predictor.categories, "to_json") else predictor.categories
    inference = getattr(predictor, "inference", None)
    return {"images": len(entries), "inputs_sha256": h.hexdigest(), "overlays": bool(overlays),
            "inference": repr(inference) if inference is not None else None,
            "categories_sha256": hashlib.sha256(json.dumps(cats, sort_keys=True).encode()).hexdigest()}


def open_staging(out: Path, described: dict, resume: bool, overwrite: bool, log) -> Path:
    """The staging folder of `out`, created or (with `resume`) checked and repaired; rank 0
    only. Raises a one-line error for an existing `out` without `overwrite`, and for a
    staging folder left by a killed run that is neither resumed nor overwritten."""
    from panoptic_detr.utils.io import write_json

    out = Path(out)
    if out.exists() and not overwrite:
        raise PanopticDetrError(f"{out}: output exists; pass --overwrite to replace it")
    staging = staging_path(out)
    if staging.exists() and not resume:
        if not overwrite:
            raise PanopticDetrError(f"{staging}: the partial output of an interrupted run; {_PARTIAL_HINT}")
        log(f"removing the partial output of an interrupted run ({staging}): --overwrite without --resume")
        shutil.rmtree(staging)
    if staging.exists():
        before = _read_run(staging)
        if before != described:
            diff = [k for k in described if before.get(k) != described[k]] or ["the run description"]
            raise PanopticDetrError(f"{staging}: started with other {', '.join(diff)} than this run; "
                                    "run it as before, or delete the folder to start over")
        for part in sorted((staging / PARTS).glob("rank-*.jsonl")):
            _drop_torn_tail(part)
        for tmp in [*staging.glob("panoptic/.*.tmp"), *staging.glob("overlays/.*.tmp")]:
            tmp.unlink()  # files a killed process was writing (`atomic_path`)
        return staging
    (staging / PARTS).mkdir(parents=True)
    write_json(staging / RUN_JSON, described)
    return staging


def _read_run(staging: Path) -> dict:
    try:
        return json.loads((staging / RUN_JSON).read_text())
    except (OSError, ValueError):
        raise PanopticDetrError(f"{staging}: no readable {RUN_JSON}; delete the folder to start over") from None


def _drop_torn_tail(part: Path) -> None:
    """Cut a last line that a killed process left without its newline."""
    data = part.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(part, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _lines(part: Path):
    """(byte offset, record) of every complete line of a part file."""
    with open(part, "rb") as f:
        offset = 0
        for line in f:
            if line.endswith(b"\n"):
                try:
                    yield offset, json.loads(line)
                except ValueError:
                    pass
            offset += len(line)


def done_indices(staging: Path) -> set[int]:
    """The input indices that have a line in some part file."""
    return {int(rec["index"]) for part in sorted((staging / PARTS).glob("rank-*.jsonl")) for _, rec in _lines(part)}


class PredictionsFolder:
    """Writes `panoptic/<stem>.png`, `overlays/<stem>.jpg` and one line per image to this
    process's part file (after the files: a line means the image is done)."""

    def __init__(self, out_dir: Path, categories, overlays: bool, rank: int = 0):
        self.out_dir, self.categories, self.overlays = Path(out_dir), categories, overlays
        (self.out_dir / "panoptic").mkdir(parents=True, exist_ok=True)
        if overlays:
            (self.out_dir / "overlays").mkdir(parents=True, exist_ok=True)
        (self.out_dir / PARTS).mkdir(parents=True, exist_ok=True)
        self.part = open(self.out_dir / PARTS / f"rank-{rank}.jsonl", "a")

    def add(self, index: int, path: Path, stem: str, image_id, image, original_size: tuple[int, int], out) -> None:
        from panoptic_detr.data.formats.coco_panoptic import segments_json, write_id_png
        from panoptic_detr.utils.io import atomic_path
        from panoptic_detr.viz.overlay import overlay, save_jpeg

        png_name = f"{stem}.png"
        with atomic_path(self.out_dir / "panoptic" / png_name) as tmp:
            write_id_png(tmp, out.id_map_numpy())
        if self.overlays:
            vis = overlay(image, out.id_map, out.segments_info, self.categories)
            save_jpeg(self.out_dir / "overlays" / f"{stem}.jpg", vis)  # atomic too
        H, W = original_size
        image_id = stem if image_id is None else image_id  # a prepared split's own id when it has one
        record = {"index": index,
                  "image": {"id": image_id, "file_name": path.name, "path": str(path), "height": H, "width": W},
                  "annotation": {"image_id": image_id, "file_name": png_name,
                                 "segments_info": segments_json(out.segments_info)}}
        self.part.write(json.dumps(record) + "\n")
        self.part.flush()

    def close(self) -> None:
        self.part.close()


def assemble(staging: Path, categories) -> int:
    """`predictions.jsonl` and `predictions.json` from the part files, in input order,
    streamed (one offset per image in memory); the parts and run.json are removed.
    Returns the number of images."""
    parts = sorted((staging / PARTS).glob("rank-*.jsonl"))
    index, part_no, offset = [], [], []
    for k, part in enumerate(parts):
        for off, rec in _lines(part):
            index.append(int(rec["index"]))
            part_no.append(k)
            offset.append(off)
    order = np.argsort(np.asarray(index, dtype=np.int64), kind="stable")
    idx = np.asarray(index, dtype=np.int64)[order]
    if len(idx) != len(np.unique(idx)):
        raise PanopticDetrError(f"{staging}: an image has two results (a part file was edited?); delete it to start over")
    cats = categories.to_json() if hasattr(categories, "to_json") else categories
    files = [open(p, "rb") for p in parts]
    try:
        def records():
            for i in order:
                f = files[part_no[i]]
                f.seek(offset[i])
                yield json.loads(f.readline())

        _write_streamed(staging, records, cats)
    finally:
        for f in files:
            f.close()
    shutil.rmtree(staging / PARTS)
    (staging / RUN_JSON).unlink()
    return len(idx)


def _write_streamed(staging: Path, records, cats) -> None:
    """predictions.jsonl, then predictions.json (as `json.dump` writes the whole dict), each
    through `atomic_path`, reading the records once per list."""
    from panoptic_detr.utils.io import atomic_path

    with atomic_path(staging / "predictions.jsonl") as tmp, open(tmp, "w") as f:
        for rec in records():
            f.write(json.dumps({"image": rec["image"], "annotation": rec["annotation"]}) + "\n")
    with atomic_path(staging / "predictions.json") as tmp, open(tmp, "w") as f:
        for key, start in (("image", '{"images": ['), ("annotation", '], "annotations": [')):
            f.write(start)
            for n, rec in enumerate(records()):
                f.write((", " if n else "") + json.dumps(rec[key]))
        f.write('], "categories": ' + json.dumps(cats) + "}")


def finish(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename the complete staging folder to `out` (an existing `out` replaced only now)."""
    from panoptic_detr.utils.io import replace_dir

    out = Path(out)
    if out.exists() and not overwrite:
        raise PanopticDetrError(f"{out}: output exists; pass --overwrite to replace it")
    replace_dir(staging, out)
