"""`panoptic-detr predict`: panoptic PNGs, a results JSON and overlays for images.

`predict_paths(predictor, inputs, out_dir)` is the command's work, usable from Python:
a COCO-panoptic PNG per image, one results JSON (and the same as JSON lines) and an
overlay JPEG per image, unreadable files reported and skipped. Under torchrun each process
predicts a shard of the images; `--resume` continues a killed run (`_predict_output`).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from panoptic_detr.commands._predict_output import PredictionsFolder  # noqa: F401 (the output's writer)

HELP = "predict panoptic maps for images (files, folders, globs) with a checkpoint"


def configure(p):
    from panoptic_detr.commands import add_backend_argument, add_inference_arguments

    p.add_argument("checkpoint", type=Path,
                   help="model checkpoint (.pth or .safetensors); with --backend onnxruntime or openvino an "
                        "export folder")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="output folder (panoptic/, overlays/, predictions.json)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    add_inference_arguments(p)
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay JPEGs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder (once the new one is complete)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch, ONNX Runtime or OpenVINO (default: the library's choice)")
    add_backend_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its staging folder (.OUT.partial): the images done are skipped")
    p.add_argument("--workers", type=int, default=2,
                   help="processes decoding images while the model runs (default 2; 0: in this process)")


def run(args):
    from panoptic_detr.commands import build_predictor

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.out.exists() and not args.overwrite:  # before loading the model
        from panoptic_detr.errors import PanopticDetrError

        raise PanopticDetrError(f"{args.out}: output exists; pass --overwrite to replace it")
    from panoptic_detr.engine.sharding import torchrun_shard

    with torchrun_shard(args.device) as (shard, args.device):  # under torchrun: one shard per process
        predictor = build_predictor(args.checkpoint, args)
        report = predict_paths(predictor, args.images, args.out, overlays=not args.no_overlay,
                               progress=not args.quiet, overwrite=args.overwrite, resume=args.resume, shard=shard,
                               workers=args.workers)
    if not shard.main:
        return 1 if report.failed else 0
    if not report.written and not report.failed and not report.resumed:
        from panoptic_detr.errors import PanopticDetrError

        raise PanopticDetrError("no images to predict")
    if not report.written and not report.resumed:  # every input unreadable: nothing was created
        from panoptic_detr.errors import PanopticDetrError

        raise PanopticDetrError(f"no image could be predicted ({len(report.failed)} skipped); {args.out} not written")
    print(
        f"{len(report.written)} image(s) predicted into {args.out}"
        + (f" ({report.resumed} done before --resume)" if report.resumed else "")
        + (f" by {shard.world} processes" if shard.world > 1 else "")
        + (f"; {len(report.failed)} skipped" if report.failed else ""),
        file=sys.stderr,
    )
    return 1 if report.failed else 0


@dataclass
class PredictReport:
    written: list[str] = field(default_factory=list)  # image paths predicted (by this run)
    failed: list[str] = field(default_factory=list)  # one message per failure
    resumed: int = 0  # images done by the interrupted run that `resume` continued


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = path.stem or "image"
    name, n = stem, 1
    while name in used:
        name = f"{stem}_{n}"
        n += 1
    used.add(name)
    return name


def predict_paths(
    predictor,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    overlays: bool = True,
    progress: bool = True,
    log=None,
    overwrite: bool = False,
    resume: bool = False,
    shard=None,
    workers: int = 0,
) -> PredictReport:
    """Predict every image named by `inputs` (files, folders, globs) into `out_dir`.

    Writes `panoptic/<stem>.png` (COCO-panoptic ids), `predictions.json` (COCO-panoptic
    results: `annotations` with `image_id`, `file_name`, `segments_info`; plus `images`
    and `categories`), the same one line per image in `predictions.jsonl` and, with
    `overlays`, `overlays/<stem>.jpg`. Unreadable files are reported through `log` (one
    line each) and skipped. Images are decoded in `workers` processes
    (`engine.image_loader`) and predicted `predictor.batch_size` at a time. Images of a
    prepared split (`DATA/images/<split>/`) keep the split's image ids, so `evaluate
    --predictions` pairs them by id; others are named by file stem.

    The folder is built as `.<name>.partial` beside `out_dir` and renamed to it at the end
    (`commands._predict_output`): an existing `out_dir` is an error unless `overwrite`,
    and is replaced only by a complete result; when no image could be predicted nothing is
    created (a PanopticDetrError); a killed run leaves its staging folder, which `resume`
    continues (the images done are skipped). `shard` (`engine.sharding.Shard`, under
    torchrun): each process predicts every world-th image still to do; rank 0 assembles.
    """
    from panoptic_detr.commands import _predict_output as po
    from panoptic_detr.data.image_io import find_images
    from panoptic_detr.engine.sharding import Shard
    from panoptic_detr.errors import PanopticDetrError

    shard = shard or Shard.single()
    paths, problems = find_images(inputs)
    report = PredictReport(failed=list(problems))
    say = log or _tqdm_write
    for msg in problems if shard.main else ():
        say(f"skipped: {msg}")
    if not paths:
        return report
    split_ids, used = _SplitIds(), set()
    entries = [(str(p), _unique_stem(p, used), split_ids.image_id(p)) for p in paths]
    staging = po.staging_path(Path(out_dir))
    error = None
    if shard.main:
        try:
            po.open_staging(Path(out_dir), po.run_description(entries, predictor, overlays), resume, overwrite, say)
        except PanopticDetrError as e:
            error = e
    message = shard.broadcast(str(error) if error is not None else None)
    if error is not None:
        raise error
    if message is not None:
        raise PanopticDetrError(message)
    done = po.done_indices(staging)
    todo = [i for i in range(len(paths)) if i not in done]
    report.resumed = len(done)
    if done and shard.main:
        say(f"resuming {staging}: {len(done)} of {len(paths)} image(s) done, {len(todo)} to predict")
    folder = PredictionsFolder(staging, predictor.categories, overlays, shard.rank)
    try:
        written = _predict_into(folder, predictor, [todo[k] for k in shard.indices(len(todo))], entries, report,
                                say, overlays, progress and shard.main, workers)
    finally:
        folder.close()
    gathered = shard.gather((written, report.failed[len(problems):]))
    report.written = [p for _, p in sorted(w for part, _ in gathered for w in part)]
    report.failed = list(problems) + [f for _, failed in gathered for f in failed]
    if not report.written and not report.resumed:
        if shard.main:
            shutil.rmtree(staging, ignore_errors=True)
        raise PanopticDetrError(f"no image could be predicted ({len(report.failed)} skipped); {out_dir} not written")
    if shard.main:
        po.assemble(staging, predictor.categories)
        po.finish(staging, Path(out_dir), overwrite)
    shard.barrier()
    return report


def _tqdm_write(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _predict_into(folder, predictor, mine, entries, report, say, overlays, progress, workers) -> list:
    """Predict the images `mine` (indices into `entries`); [(index, path)] of those written."""
    from tqdm import tqdm

    from panoptic_detr.engine.image_loader import load_images

    device = getattr(predictor, "device", None)
    written: list[tuple[int, str]] = []
    with tqdm(total=len(mine), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        pending: list = []

        def flush() -> None:
            outs = predictor.predict_tensors([p.tensor for p in pending], [p.size for p in pending])
            for p, out in zip(pending, outs):
                _, stem, image_id = entries[p.index]
                folder.add(p.index, p.path, stem, image_id, p.image, p.size, out)
                written.append((p.index, str(p.path)))
                bar.update(1)
            pending.clear()

        items = [(i, Path(entries[i][0])) for i in mine]
        for loaded in load_images(items, predictor, workers, keep_images=overlays):
            if loaded.error is not None:
                report.failed.append(loaded.error)
                say(f"skipped: {loaded.error}")
                bar.update(1)
                continue
            if device is not None and hasattr(loaded.tensor, "to"):
                loaded.tensor = loaded.tensor.to(device)
            pending.append(loaded)
            if len(pending) >= predictor.batch_size:
                flush()
        if pending:
            flush()
    return written


class _SplitIds:
    """The image id of a file in a prepared split's images folder (`images/<split>/`, with
    `annotations/panoptic_<split>.json` beside it), else None; one JSON read per split."""

    def __init__(self):
        self.splits: dict[Path, dict[str, object] | None] = {}

    def image_id(self, path: Path):
        path = Path(path).resolve()
        for folder in list(path.parents)[:4]:
            ids = self._ids(folder)
            if ids is not None:
                return ids.get(path.relative_to(folder).as_posix())
        return None

    def _ids(self, folder: Path):
        if folder not in self.splits:
            self.splits[folder] = None
            if folder.parent.name == "images":
                from panoptic_detr.data.prepared import PreparedDataset
                from panoptic_detr.utils.io import read_json

                files = PreparedDataset(folder.parent.parent).split(folder.name)
                if files.panoptic_json.is_file():
                    data = read_json(files.panoptic_json)
                    self.splits[folder] = {str(im["file_name"]): im["id"] for im in data.get("images", [])
                                           if isinstance(im, dict) and "file_name" in im and "id" in im}
        return self.splits[folder]
