"""Training hooks: the concerns of a run around the loop, each in one place.

The Trainer runs the loop; hooks are called at fixed points of it (detectron2's
TrainerBase/HookBase split). The trainer's own hooks come first, in this order: metrics
(and the progress bar), evaluation (and the best model), checkpoints; hooks passed to
`train(cfg, hooks=[...])` run after them.

What hooks read on the trainer: `cfg`, `model`, `main` (rank 0), `world`, `out`, `log`,
`metrics`, `global_step` (steps done), `current_epoch` (0-based epoch of the loop),
`epoch` / `step_in_epoch` (where a resumed run continues: the epoch is advanced once it is
complete), `steps_per_epoch`, `step_images` (images of the last step, all processes),
`last_logged` (the last step's values), `stop` (max_steps reached), `epoch_done`,
`last_epoch` (the run ends after this epoch), `best`.
"""

from __future__ import annotations

import sys
import time

from panoptic_detr.engine import distributed as D
from panoptic_detr.engine.checkpointing import (
    BEST,
    CHECKPOINT,
    FINAL,
    capture_rng_state,
    load_training_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from panoptic_detr.engine.metrics_log import Averager
from panoptic_detr.engine.optim import group_lr
from panoptic_detr.errors import CheckpointError


class Hook:
    """One concern of a training run; every method does nothing unless overridden."""

    def before_train(self, trainer) -> None:
        """After the trainer is built (and resumed), before the first step."""

    def before_epoch(self, trainer) -> None:
        """Before the first step of an epoch (or of its remainder, on resume)."""

    def before_step(self, trainer) -> None:
        """Before step `trainer.global_step + 1`."""

    def after_step(self, trainer) -> None:
        """After an optimizer step (`trainer.global_step` counts it)."""

    def after_epoch(self, trainer) -> None:
        """After an epoch, or after the step that reached max_steps (`trainer.stop`)."""

    def after_train(self, trainer) -> None:
        """After the final model is written and all processes are done training."""

    def state_dict(self) -> dict | None:
        """State that training checkpoints carry for this hook (plain containers), or None."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s value (on resume)."""


# ----------------------------------------------------------------------------------------
# Metrics and the progress bar
# ----------------------------------------------------------------------------------------
class MetricsHook(Hook):
    """`metrics.jsonl`: a "train" record every `log_every` steps (means since the previous
    one in the epoch), an "epoch" record per epoch, a "final" record; and the progress bar.
    The running sums are part of the checkpoints (`state_dict`): a run resumed mid-epoch
    writes the records of an uninterrupted one."""

    def __init__(self):
        self.window, self.epoch_avg = Averager(), Averager()

    def state_dict(self) -> dict:
        return {"window": self.window.state_dict(), "epoch": self.epoch_avg.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.window.load_state_dict(state["window"])
        self.epoch_avg.load_state_dict(state["epoch"])

    def before_epoch(self, trainer) -> None:
        from tqdm import tqdm

        cfg = trainer.cfg
        self.t_window = self.t_epoch = time.perf_counter()
        self.bar = tqdm(
            total=trainer.steps_per_epoch, initial=trainer.step_in_epoch,
            desc=f"epoch {trainer.current_epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and trainer.main), dynamic_ncols=True, leave=True, file=sys.stderr,
        )

    def after_step(self, trainer) -> None:
        logged = trainer.last_logged
        self.window.update(logged, trainer.step_images)
        self.epoch_avg.update(logged, trainer.step_images)
        now = time.perf_counter()
        rate = self.window.images / max(now - self.t_window, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logged['loss']:.3f}", img_s=f"{rate:.1f}", refresh=False)
        if trainer.global_step % trainer.cfg.log_every == 0:
            trainer.metrics.write({"kind": "train", "epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                                   **self.window.means(), "images_per_s": rate, "time": time.time()})
            self.window.reset()
            self.t_window = now

    def after_epoch(self, trainer) -> None:
        self.bar.close()
        if self.epoch_avg.count:
            dt = time.perf_counter() - self.t_epoch
            trainer.metrics.write({"kind": "epoch", "epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                                   **self.epoch_avg.means(), "images_per_s": self.epoch_avg.images / max(dt, 1e-9),
                                   "epoch_time": dt, "time": time.time()})
        # the next epoch starts afresh (and so does a checkpoint saved now)
        self.window.reset()
        self.epoch_avg.reset()

    def write_final(self, trainer) -> None:
        trainer.metrics.write({"kind": "final", "epoch": trainer.epoch, "step": trainer.global_step,
                               "best_pq": trainer.best.get("pq"), "time": time.time()})

    def after_train(self, trainer) -> None:
        if not trainer.main:
            return
        best = trainer.best
        self.write_final(trainer)
        shown = ""
        if best.get("pq") is not None:
            shown = f", best PQ {100 * best['pq']:.1f} at epoch {best['epoch']} ({trainer.out / BEST})"
        trainer.log(f"train: done, {trainer.global_step} steps; model: {trainer.out / FINAL}{shown}")


# ----------------------------------------------------------------------------------------
# Checkpoints and resumption
# ----------------------------------------------------------------------------------------
class CheckpointHook(Hook):
    """`checkpoint.pth`: the complete training state, every `checkpoint_every` steps (within
    an epoch), every `checkpoint_epochs` epochs and at the end (plus
    `checkpoint_epoch{N}.pth` per epoch with `keep_epoch_checkpoints`); and resumption from it.

    All processes take part in a save (their RNG states are gathered); rank 0 writes.
    """

    def find_resume(self, trainer, request: str | bool | None) -> dict | None:
        """The state to resume from: `request` names a checkpoint, else `out/checkpoint.pth`
        when it exists; `request` True (or "auto") without one is an error."""
        ckpt = trainer.out / CHECKPOINT
        if isinstance(request, str) and request not in ("auto", ""):
            return load_training_checkpoint(request)
        if ckpt.exists():
            return load_training_checkpoint(ckpt)
        if request:
            raise CheckpointError(f"{ckpt}: nothing to resume (no checkpoint in {trainer.out})")
        return None

    def restore(self, trainer, state: dict) -> None:
        """Put the trainer (model, optimizer, schedule, scaler, position, RNG) where `state` was."""
        cfg = trainer.cfg
        try:
            trainer.model.load_state_dict(state["model"])
            trainer.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            msg = str(e).splitlines()[0]
            raise CheckpointError(
                f"{trainer.out / CHECKPOINT}: does not fit this run's model/optimizer ({msg}); use another --out or remove it"
            ) from None
        for g in trainer.optimizer.param_groups:  # the configured lr wins over the saved one
            g["initial_lr"] = group_lr(g.get("name"), cfg.optim)
        trainer.schedule.load_state_dict(state.get("scheduler") or {})
        if trainer.scaler is not None and state.get("scaler"):
            trainer.scaler.load_state_dict(state["scaler"])
        trainer.epoch = int(state["epoch"])
        trainer.step_in_epoch = int(state["step_in_epoch"])
        trainer.global_step = int(state["global_step"])
        trainer.best = dict(state.get("best") or trainer.best)
        rng = state.get("rng") or []
        if len(rng) == trainer.world:
            restore_rng_state(rng[trainer.rank])
        else:
            trainer.log(f"resume: saved with {len(rng)} process(es), now {trainer.world}: RNG streams re-seeded")
            trainer.seed_rng(1000 * trainer.global_step)
        saved = state.get("train_config") or {}
        for key in ("model", "stage", "seed"):
            if key in saved and saved[key] != getattr(cfg, key):
                trainer.log(f"resume: warning: {key} was {saved[key]!r}, now {getattr(cfg, key)!r}")
        if saved.get("data", {}).get("batch_size") not in (None, cfg.data.batch_size):
            trainer.log("resume: warning: batch size changed; data order differs from the interrupted run")
        for hook in trainer.hooks:
            hook_state = (state.get("hooks") or {}).get(type(hook).__name__)
            if hook_state is not None:
                hook.load_state_dict(hook_state)
        # records after the checkpoint are redone; a finished run keeps its "final" record
        trainer.metrics.truncate_after(trainer.global_step, keep_final=trainer.is_complete())
        trainer.log(f"resume: epoch {trainer.epoch + 1}, step {trainer.global_step} (from {trainer.out / CHECKPOINT})")

    def state(self, trainer) -> dict:
        """The training checkpoint's content (collective: every process takes part)."""
        rng = D.all_gather_object(capture_rng_state())
        return {
            "model": trainer.model.state_dict(),
            "config": trainer.model.config.to_dict(),
            "categories": trainer.categories.to_json(),
            "train_config": trainer.cfg.to_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.schedule.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
            "epoch": trainer.epoch,
            "step_in_epoch": trainer.step_in_epoch,
            "global_step": trainer.global_step,
            "rng": rng,
            "sampler": trainer.sampler.state_dict(),
            "best": trainer.best,
            "world_size": trainer.world,
            "hooks": {type(h).__name__: s for h in trainer.hooks if (s := h.state_dict()) is not None},
        }

    def save(self, trainer) -> None:
        state = self.state(trainer)
        if trainer.main:
            save_checkpoint(trainer.out / CHECKPOINT, state)
            if trainer.cfg.keep_epoch_checkpoints and trainer.step_in_epoch == 0:
                save_checkpoint(trainer.out / f"checkpoint_epoch{trainer.epoch:04d}.pth", state)
        D.barrier()

    def after_step(self, trainer) -> None:
        every = trainer.cfg.checkpoint_every
        # not at the end of an epoch, nor when stopping: after_epoch saves then
        if every > 0 and trainer.global_step % every == 0 and not trainer.stop \
                and trainer.step_in_epoch < trainer.steps_per_epoch:
            self.save(trainer)

    def after_epoch(self, trainer) -> None:
        if not (trainer.epoch_done or trainer.stop):
            return
        every = max(1, trainer.cfg.checkpoint_epochs)
        if trainer.last_epoch or not trainer.epoch_done or (trainer.current_epoch + 1) % every == 0:
            self.save(trainer)


__all__ = ["Hook", "MetricsHook", "CheckpointHook"]
