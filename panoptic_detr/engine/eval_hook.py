"""The evaluation hook: validation losses and PQ during training, and the best model.

Every `eval.every` epochs and at the end of the run (`eval.every` 0: at the end only, -1:
never): the losses on the validation split (all processes share the images), and the
panoptic quality of an `engine.predict.Predictor` of the model (`evaluation.evaluate`;
under torchrun every process predicts its shard of the split and rank 0 scores them all).
The model with the best PQ so far is written to `model_best.pth`. Evaluation draws no
random numbers from the training streams and leaves the model in its training mode.
"""

from __future__ import annotations

import torch

from panoptic_detr.data import transforms as T
from panoptic_detr.data.dataset import PanopticDataset, collate_fn
from panoptic_detr.data.prepared import PreparedDataset
from panoptic_detr.engine import distributed as D
from panoptic_detr.engine.checkpointing import BEST, capture_rng_state, restore_rng_state
from panoptic_detr.engine.criterion import LOGGED
from panoptic_detr.engine.hooks import Hook
from panoptic_detr.engine.metrics_log import Averager
from panoptic_detr.engine.sampler import EpochBatchSampler
from panoptic_detr.engine.train_step import targets_to
from panoptic_detr.errors import PanopticDetrError


class EvalHook(Hook):
    def after_epoch(self, trainer) -> None:
        if not (trainer.epoch_done or trainer.stop) or not self.due(trainer):
            return
        record = self.evaluate(trainer)
        pq, best = record.get("pq"), trainer.best
        if pq is not None and (best.get("pq") is None or pq > best["pq"]):
            epoch = trainer.current_epoch + 1
            trainer.best = {"pq": pq, "epoch": epoch, "step": trainer.global_step}
            trainer.save_model_file(BEST, {"pq": pq, "epoch": epoch, "step": trainer.global_step})

    def due(self, trainer) -> bool:
        e = trainer.cfg.eval.every
        if e < 0:
            return False
        return trainer.last_epoch or (e > 0 and (trainer.current_epoch + 1) % e == 0)

    def evaluate(self, trainer) -> dict:
        """Run the evaluation; writes and returns the "eval" record."""
        cfg = trainer.cfg
        rng = capture_rng_state()  # evaluation must not shift the training RNG streams
        record: dict = {"kind": "eval", "epoch": trainer.current_epoch + 1, "step": trainer.global_step}
        if cfg.eval.loss:
            record.update(self.val_losses(trainer))
        if cfg.eval.pq and hasattr(trainer.model, "mask_head"):
            pq = self.pq(trainer)  # every process predicts its shard of the split, rank 0 scores
            pq = D.broadcast_object(pq)
            if pq:
                record.update(pq)
        restore_rng_state(rng)
        trainer.set_train_mode()
        if trainer.main and len(record) > 3:
            trainer.metrics.write(record)
            shown = {k: v for k, v in record.items() if k in ("val_loss", "pq", "pq_things", "pq_stuff")}
            trainer.log("eval: " + ", ".join(f"{k} {100 * v if k.startswith('pq') else v:.3f}" for k, v in shown.items()))
        return record

    @torch.no_grad()
    def val_losses(self, trainer) -> dict[str, float]:
        """The training losses on the validation split (eval transforms: the Predictor's sizes),
        averaged over batches and processes, keys prefixed `val_`."""
        cfg, d = trainer.cfg, trainer.cfg.data
        try:
            ds = PanopticDataset(cfg.data_dir, d.val_split, T.eval_transforms(d.eval_size, d.eval_max_size),
                                 categories=trainer.categories)
        except PanopticDetrError as e:
            trainer.log(f"eval: no val losses ({e})")
            return {}
        n = len(ds) if cfg.eval.max_images <= 0 else min(len(ds), cfg.eval.max_images)
        if n == 0:
            return {}
        if n < len(ds):
            ds = torch.utils.data.Subset(ds, list(range(n)))
        sampler = EpochBatchSampler(n, cfg.eval.batch_size, trainer.rank, trainer.world, shuffle=False,
                                    drop_last=False, augment_seeds=False)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=0, collate_fn=collate_fn)
        avg = Averager()
        trainer.model.eval()
        for samples, targets in loader:
            samples, targets = samples.to(trainer.device), targets_to(targets, trainer.device)
            with trainer.autocast():
                outputs, indices = trainer.step_module(samples, targets)
            losses = trainer.criterion(outputs, targets, indices=indices)
            vals = {k: v.detach() for k, v in losses.items() if k in LOGGED}
            vals["loss"] = trainer.criterion.weighted_total(losses).detach()
            avg.update({k: float(v) for k, v in vals.items()})
        means = {k: torch.tensor(v, device=trainer.device) for k, v in avg.means().items()}
        return {f"val_{k}": float(v) for k, v in D.reduce_dict(means).items()}

    def pq(self, trainer) -> dict | None:
        """PQ (and box AP when evaluation reports it) of the model on the validation split;
        None when the split is missing or evaluation fails."""
        from panoptic_detr.engine.predict import Predictor
        from panoptic_detr.engine.sharding import Shard
        from panoptic_detr.evaluation.evaluate import evaluate_model

        cfg = trainer.cfg
        if not PreparedDataset(cfg.data_dir).split(cfg.data.val_split).exists():
            return None
        trainer.model.categories = trainer.categories
        try:
            # the Predictor works on a copy of the model (batch norms folded): the model is untouched
            predictor = Predictor(trainer.model, device=trainer.device, threshold=cfg.eval.threshold,
                                  batch_size=cfg.eval.batch_size, short_side=cfg.data.eval_size,
                                  max_size=cfg.data.eval_max_size, dedup=cfg.eval.dedup,
                                  geometry=cfg.eval.geometry)
            metrics = evaluate_model(predictor, cfg.data_dir, split=cfg.data.val_split, out_dir=None,
                                     batch_size=cfg.eval.batch_size, progress=False,
                                     max_images=cfg.eval.max_images if cfg.eval.max_images > 0 else None,
                                     shard=Shard(trainer.rank, trainer.world))
        except PanopticDetrError as e:
            trainer.log(f"eval: PQ skipped ({e})")
            return None
        except Exception as e:  # an evaluation bug must not end a long training run
            trainer.log(f"eval: PQ failed, training continues ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            return None
        if metrics is None:  # not rank 0: rank 0 has the metrics (broadcast by the caller)
            return None
        pan = metrics.get("panoptic", {})
        out = {
            "pq": pan.get("All", {}).get("pq"),
            "sq": pan.get("All", {}).get("sq"),
            "rq": pan.get("All", {}).get("rq"),
            "pq_things": pan.get("Things", {}).get("pq"),
            "pq_stuff": pan.get("Stuff", {}).get("pq"),
        }
        bbox = metrics.get("bbox")
        if isinstance(bbox, dict) and "AP" in bbox:
            out["bbox_ap"] = bbox["AP"]
        return {k: v for k, v in out.items() if v is not None}


__all__ = ["EvalHook"]
