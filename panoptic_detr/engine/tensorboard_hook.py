"""TensorBoard event files next to `metrics.jsonl` (`tensorboard --logdir runs/`).

`TensorBoardHook` follows `metrics.jsonl` (the records of `MetricsHook` and `EvalHook`,
read as they are appended, so both files always agree) and writes every number of each
new record as a scalar at its `step` through `torch.utils.tensorboard.SummaryWriter`:
"train/<key>" (losses, `lr`, `images_per_s`), "epoch/<key>", "eval/<key>" (`val_loss`
and terms, `pq`, `sq`, `rq`, `pq_things`, `pq_stuff`, `bbox_ap`). After an evaluation it
adds the overlays of the first `images` validation images ("val/<file name>"). Rank 0
only; a no-op when the optional `tensorboard` package is missing
(`pip install -e ".[tensorboard]"`). A resumed run purges the events after its
checkpoint's step, as `metrics.jsonl` drops those records.
"""

from __future__ import annotations

import json
import math

from panoptic_detr.engine.hooks import Hook

__all__ = ["TensorBoardHook", "tensorboard_available", "record_scalars"]

_SKIP = {"kind", "epoch", "step", "time"}
_PREFIX = {"train": "train", "epoch": "epoch", "eval": "eval", "final": "final"}


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def record_scalars(record: dict) -> dict[str, float]:
    """{tag: value} of a metrics.jsonl record: its finite numbers but the bookkeeping keys."""
    prefix = _PREFIX.get(record.get("kind"), "other")
    out = {}
    for k, v in record.items():
        if k in _SKIP or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out[f"{prefix}/{k}"] = float(v)
    return out


class TensorBoardHook(Hook):
    def __init__(self, images: int = 3):
        self.images = images
        self.writer = None
        self.offset = 0

    def before_train(self, trainer) -> None:
        if not trainer.main or not tensorboard_available():
            return
        from torch.utils.tensorboard import SummaryWriter

        path = trainer.metrics.path
        self.offset = path.stat().st_size if path.exists() else 0  # earlier records: in earlier event files
        purge = trainer.global_step + 1 if trainer.global_step > 0 else None
        self.writer = SummaryWriter(log_dir=str(trainer.out), purge_step=purge)

    def _follow(self, trainer) -> list[dict]:
        """The complete records appended to metrics.jsonl since the last call."""
        path = trainer.metrics.path
        if self.writer is None or not path.exists() or path.stat().st_size <= self.offset:
            return []
        with open(path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        records = []
        for line in data[:end].splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        for rec in records:
            for tag, value in record_scalars(rec).items():
                self.writer.add_scalar(tag, value, int(rec.get("step", 0)))
        return records

    def after_step(self, trainer) -> None:
        self._follow(trainer)

    def after_epoch(self, trainer) -> None:
        records = self._follow(trainer)
        if self.images > 0 and any(r.get("kind") == "eval" and "pq" in r for r in records):
            self._overlays(trainer)
        if self.writer is not None:
            self.writer.flush()

    def after_train(self, trainer) -> None:
        self._follow(trainer)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _overlays(self, trainer) -> None:
        """The first validation images, predicted by the model now, as overlays."""
        from panoptic_detr.data.image_io import load_image
        from panoptic_detr.data.prepared import PreparedDataset
        from panoptic_detr.engine.checkpointing import capture_rng_state, restore_rng_state
        from panoptic_detr.engine.predict import Predictor
        from panoptic_detr.errors import PanopticDetrError
        from panoptic_detr.viz.overlay import overlay

        cfg = trainer.cfg
        files = PreparedDataset(cfg.data_dir).split(cfg.data.val_split)
        if not files.images_dir.is_dir():
            return
        paths = sorted(p for p in files.images_dir.iterdir() if p.is_file())[: self.images]
        rng = capture_rng_state()
        trainer.model.categories = trainer.categories  # as the eval hook does
        try:
            predictor = Predictor(trainer.model, device=trainer.device, threshold=cfg.eval.threshold,
                                  short_side=cfg.data.eval_size, max_size=cfg.data.eval_max_size,
                                  dedup=cfg.eval.dedup, geometry=cfg.eval.geometry)
            for path in paths:
                image = load_image(path)
                out = predictor(image)
                vis = overlay(image, out.id_map, out.segments_info, predictor.categories)
                self.writer.add_image(f"val/{path.name}", vis, trainer.global_step, dataformats="HWC")
        except PanopticDetrError as e:
            trainer.log(f"tensorboard: no overlays ({e})")
        finally:
            restore_rng_state(rng)
            trainer.set_train_mode()
