"""`train(TrainConfig)`: DETR panoptic training, single process or under `torchrun`.

Stages: `boxes` trains the detection model (DETR) on things and stuff; `masks` freezes all
of DETR and trains `bbox_attention` + `mask_head`; `joint` trains everything.

Exact resumption: the data order of an epoch is a permutation drawn from (seed, epoch),
each sample's augmentation is seeded from (seed, epoch, index), and checkpoints (every
epoch, every `checkpoint_every` steps, at the end) hold the model, optimizer, schedule,
scaler, position and every process's RNG states. A run killed at any point and resumed
from its last checkpoint (same out dir; automatic) ends with bit-identical weights and
metrics records (on CPU for a given thread count, whatever the load; on CUDA with
`deterministic: true`: `engine/determinism.py`).

Outputs in `out_dir`: `checkpoint.pth` (latest, for resuming), `model_best.pth` (best PQ),
`model_final.pth` (the trained model, for `load_model`/evaluate/predict), `metrics.jsonl`,
`train_config.yaml`.

The parts: `trainer` (building and the loop), `hooks` (metrics, checkpoints and resumption),
`eval_hook` (validation losses, PQ, best model), `optim` (parameter groups, schedule,
clipping), `train_step` (the forward with matching).
"""

from __future__ import annotations

from panoptic_detr.engine import distributed as D
from panoptic_detr.engine.checkpointing import read_checkpoint_file
from panoptic_detr.engine.determinism import deterministic_algorithms
from panoptic_detr.engine.hooks import Hook
from panoptic_detr.engine.optim import LrSchedule
from panoptic_detr.engine.train_config import TrainConfig
from panoptic_detr.engine.train_step import TrainStep
from panoptic_detr.engine.trainer import Trainer, TrainingDiverged, init_from_checkpoint


def train(cfg: TrainConfig, resume: str | bool | None = None, log_fn=None, hooks: list[Hook] | tuple[Hook, ...] = ()) -> dict:
    """Train per `cfg`; returns a summary (epoch, global_step, best, last step's logged values).

    resume: a checkpoint to continue from, True/"auto" for `out_dir/checkpoint.pth` (an error
    when missing); by default a run continues from that file when it exists.
    hooks: extra `engine.hooks.Hook`s, called after the trainer's own.
    """
    trainer = Trainer(cfg, resume=resume, log_fn=log_fn, hooks=hooks)
    try:
        with deterministic_algorithms(cfg.deterministic, trainer.device):  # engine/determinism.py
            return trainer.run()
    finally:
        D.cleanup()


__all__ = ["train", "Trainer", "TrainingDiverged", "TrainStep", "LrSchedule", "Hook", "init_from_checkpoint",
           "read_checkpoint_file"]
