"""`panoptic-detr predict`: panoptic PNGs, a results JSON and overlays for images.

`predict_paths(predictor, inputs, out_dir)` is the command's work, usable from Python:
a COCO-panoptic PNG per image, one results JSON and an overlay JPEG per image,
unreadable files reported and skipped.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

HELP = "predict panoptic maps for images (files, folders, globs) with a checkpoint"


def configure(p):
    from panoptic_detr.commands import add_dedup_argument

    p.add_argument("checkpoint", type=Path, help="model checkpoint (.pth or .safetensors)")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="output folder (panoptic/, overlays/, predictions.json)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--threshold", type=float, default=0.85, help="score a query needs to make a segment (default 0.85)")
    add_dedup_argument(p)
    p.add_argument("--short-side", type=int, default=800, help="resize the short image side to this (default 800)")
    p.add_argument("--max-size", type=int, default=1333, help="longest image side after resizing (default 1333)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay JPEGs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from panoptic_detr.commands import build_predictor

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    predictor = build_predictor(args.checkpoint, args)
    report = predict_paths(predictor, args.images, args.out, overlays=not args.no_overlay, progress=not args.quiet)
    if not report.written and not report.failed:
        from panoptic_detr.errors import PanopticDetrError

        raise PanopticDetrError("no images to predict")
    print(
        f"{len(report.written)} image(s) predicted into {args.out}"
        + (f"; {len(report.failed)} skipped" if report.failed else ""),
        file=sys.stderr,
    )
    return 1 if report.failed else 0


@dataclass
class PredictReport:
    written: list[str] = field(default_factory=list)  # image paths predicted
    failed: list[str] = field(default_factory=list)  # one message per failure


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = path.stem or "image"
    name, n = stem, 1
    while name in used:
        name = f"{stem}_{n}"
        n += 1
    used.add(name)
    return name


class PredictionsFolder:
    """Writes `panoptic/<stem>.png`, `overlays/<stem>.jpg` and, at the end, `predictions.json`."""

    def __init__(self, out_dir: Path, categories, overlays: bool):
        self.out_dir, self.categories, self.overlays = Path(out_dir), categories, overlays
        self.used: set[str] = set()
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        (self.out_dir / "panoptic").mkdir(parents=True, exist_ok=True)
        if overlays:
            (self.out_dir / "overlays").mkdir(parents=True, exist_ok=True)

    def add(self, path: Path, image, original_size: tuple[int, int], out) -> None:
        from panoptic_detr.data.formats.coco_panoptic import segments_json, write_id_png
        from panoptic_detr.utils.io import atomic_path
        from panoptic_detr.viz.overlay import overlay, save_jpeg

        stem = _unique_stem(path, self.used)
        png_name = f"{stem}.png"
        with atomic_path(self.out_dir / "panoptic" / png_name) as tmp:
            write_id_png(tmp, out.id_map_numpy())
        if self.overlays:
            vis = overlay(image, out.id_map, out.segments_info, self.categories)
            save_jpeg(self.out_dir / "overlays" / f"{stem}.jpg", vis)
        H, W = original_size
        self.images.append({"id": stem, "file_name": path.name, "path": str(path), "height": H, "width": W})
        self.annotations.append({"image_id": stem, "file_name": png_name, "segments_info": segments_json(out.segments_info)})

    def finish(self) -> None:
        from panoptic_detr.utils.io import write_json

        write_json(self.out_dir / "predictions.json",
                   {"images": self.images, "annotations": self.annotations, "categories": self.categories.to_json()})


def predict_paths(
    predictor,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    overlays: bool = True,
    progress: bool = True,
    log=None,
) -> PredictReport:
    """Predict every image named by `inputs` (files, folders, globs) into `out_dir`.

    Writes `panoptic/<stem>.png` (COCO-panoptic ids), `predictions.json` (COCO-panoptic
    results: `annotations` with `image_id`, `file_name`, `segments_info`; plus `images`
    and `categories`) and, with `overlays`, `overlays/<stem>.jpg`. Unreadable files are
    reported through `log` (one line each) and skipped. Images are read and predicted
    `predictor.batch_size` at a time.
    """
    from tqdm import tqdm

    from panoptic_detr.data.image_io import find_images, load_image
    from panoptic_detr.errors import PanopticDetrError

    paths, problems = find_images(inputs)
    report = PredictReport()
    say = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    for msg in problems:
        report.failed.append(msg)
        say(f"skipped: {msg}")
    if not paths:
        return report
    folder = PredictionsFolder(Path(out_dir), predictor.categories, overlays)
    with tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        pending: list[tuple] = []  # (path, image or None, tensor, original size)
        for i, path in enumerate(paths):
            try:
                image = load_image(path)
                tensor, size = predictor.preprocess(image)
            except PanopticDetrError as e:
                report.failed.append(str(e))
                say(f"skipped: {e}")
                bar.update(1)
            else:
                pending.append((path, image if overlays else None, tensor, size))
            if pending and (len(pending) >= predictor.batch_size or i == len(paths) - 1):
                outs = predictor.predict_tensors([p[2] for p in pending], [p[3] for p in pending])
                for (p, image, _, size), out in zip(pending, outs):
                    folder.add(p, image, size, out)
                    report.written.append(str(p))
                    bar.update(1)
                pending = []
    folder.finish()
    return report
