"""The Trainer: builds a run from a TrainConfig and runs the loop; hooks do the rest.

`Trainer.build` makes the datasets, the model (optionally initialised from a checkpoint:
`init_from_checkpoint`), optimizer, schedule, loss and data loader, and resumes from the
last checkpoint. `Trainer.run` is the loop of optimizer steps; checkpoints, evaluation and
metrics are hooks (`engine.hooks`) called around it.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
import yaml
from torch import nn

from panoptic_detr.data import transforms as T
from panoptic_detr.data.dataset import PanopticDataset, collate_fn
from panoptic_detr.engine import distributed as D
from panoptic_detr.engine.checkpointing import CHECKPOINT, FINAL, remove_stale_temporaries
from panoptic_detr.engine.criterion import LOGGED, SetCriterion, build_weight_dict
from panoptic_detr.engine.eval_hook import EvalHook
from panoptic_detr.engine.hooks import CheckpointHook, Hook, MetricsHook
from panoptic_detr.engine.matcher import HungarianMatcher, NonFiniteError
from panoptic_detr.engine.metrics_log import MetricsLog
from panoptic_detr.engine.optim import LrSchedule, clip_gradients, make_adamw, param_groups, set_trainable
from panoptic_detr.engine.sampler import EpochBatchSampler
from panoptic_detr.engine.tensorboard_hook import TensorBoardHook
from panoptic_detr.engine.train_config import TrainConfig
from panoptic_detr.engine.train_step import TrainStep, targets_to
from panoptic_detr.errors import CheckpointError, ConfigError, DataError, PanopticDetrError
from panoptic_detr.utils.io import write_text


class TrainingDiverged(PanopticDetrError):
    """The loss (or the gradients) became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' requested but CUDA is not available")
    return dev


def amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler). Mixed precision on CUDA only."""
    if device.type != "cuda" or amp == "none":
        return None, False
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.bfloat16, False) if amp == "bf16" else (torch.float16, True)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def init_from_checkpoint(model: nn.Module, path: str, categories, log=print, class_map=None) -> None:
    """Load weights from any checkpoint (or model name) the model loads, the class head adapted
    to `categories` (`model.checkpoint.load_weights`: official DETR, Hugging Face, ours,
    `.safetensors`; detection weights initialise a panoptic model's DETR part, the mask head
    starts fresh). With the dataset's `class_map`, each new class-head row starts from the
    checkpoint classes the map folds into it (`ClassMap.head_sources`), else by name.
    The architecture must match the train config's model (a clear error lists mismatches)."""
    from panoptic_detr.model.checkpoint import load_checkpoint, load_weights

    sources = class_map.head_sources if class_map is not None else None
    ckpt = load_checkpoint(path)  # a model name is downloaded here (its errors say what to do)
    try:
        report = load_weights(model, ckpt, categories=categories, strict=True, where=str(path), class_sources=sources)
    except CheckpointError as e:
        raise CheckpointError(f"{e} (the train config's model must have the checkpoint's architecture)") from None
    if class_map is not None and report.source_categories is not None:
        for name, wanted in class_map.init_from.items():
            unknown = [w for w in wanted if w not in report.source_categories.by_name]
            if unknown:
                log(f"warning: {class_map.source}: {name}: init_from {', '.join(unknown)} is not a class of {path}")
    if report.adapted:
        head = f"class head adapted {report.source_classes} -> {report.target_classes} classes ({_head_origin(report, class_map)})"
    else:
        head = f"class head kept ({report.target_classes} classes)"
    log(f"init: weights from {path}; {head}{'; mask head starts fresh' if report.fresh else ''}")


def _head_origin(report, class_map) -> str:
    """'1 by name, 16 from 2-9 checkpoint classes (85 rows), ..., 47 fresh' for the init log."""
    rows = report.row_sources
    by_name = sum(1 for n, src in rows.items() if src == [n])
    init_from = {n for n in rows if class_map is not None and n in class_map.init_from}
    one = sum(1 for n, src in rows.items() if len(src) == 1 and src != [n] and n not in init_from)
    groups = {n: src for n, src in rows.items() if len(src) > 1 and n not in init_from}
    parts = [f"{by_name} carried over by name"]
    if init_from:
        parts.append(f"{len(init_from)} by init_from")
    if one:
        parts.append(f"{one} from one folded class")
    if groups:
        parts.append(f"{len(groups)} from their members' rows ({sum(map(len, groups.values()))} rows"
                     + (f"; {class_map.misc}: {len(groups[class_map.misc])}" if class_map and class_map.misc in groups else "")
                     + ")")
    fresh = report.target_classes - len(rows) - 1  # index 0 is unused
    parts.append(f"{fresh} fresh")
    return ", ".join(parts)


def dataset_class_map(data_dir):
    """The class map a prepared dataset was built with (from its dataset.yaml), else None."""
    from panoptic_detr.data.class_map import ClassMap
    from panoptic_detr.data.prepared import PreparedDataset

    path = PreparedDataset(data_dir).dataset_yaml
    if not path.is_file():
        return None
    recorded = dict((yaml.safe_load(path.read_text()) or {}).get("class_map") or {})
    source = str(recorded.pop("source", path))
    return ClassMap.from_dict(recorded, source=f"{path}: class_map ({source})") if recorded else None


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | bool | None = None, log_fn=None,
                 hooks: list[Hook] | tuple[Hook, ...] = ()):
        self.cfg = cfg.validate()
        if not cfg.data_dir:
            raise ConfigError("data_dir: missing (--data)")
        if not cfg.out_dir:
            raise ConfigError("out_dir: missing (--out)")
        self.resume_request = resume
        self.device = resolve_device(cfg.device)
        self.rank, self.world, local_rank = D.init_distributed(self.device.type)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local_rank)
        self.main = self.rank == 0
        self.out = Path(cfg.out_dir)
        self._print = log_fn or print
        self.amp_dtype, use_scaler = amp_settings(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        self.metrics = MetricsLog(self.out / "metrics.jsonl", enabled=self.main)
        self.checkpointer = CheckpointHook()
        self.metrics_hook = MetricsHook()
        # TensorBoardHook: event files next to metrics.jsonl when `tensorboard` is installed
        self.hooks: list[Hook] = [self.metrics_hook, EvalHook(), self.checkpointer, TensorBoardHook(), *hooks]
        self.last_logged: dict = {}
        self.stop = self.epoch_done = self.last_epoch = False

    def log(self, msg: str) -> None:
        if self.main:
            self._print(msg)

    def seed_rng(self, offset: int = 0) -> None:
        """Seed python, numpy and torch: a stream per process."""
        seed_everything(self.cfg.seed + self.rank + offset)

    def _call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)

    # -- building ------------------------------------------------------------------------
    def build(self) -> None:
        cfg, d = self.cfg, self.cfg.data
        if self.main:
            self._remove_stale_temporaries()
        state = self.checkpointer.find_resume(self, self.resume_request)
        self.train_set = PanopticDataset(
            cfg.data_dir,
            d.train_split,
            T.train_transforms(d.scales, d.max_size, d.crop_resize, d.crop_min, d.crop_max, d.hflip),
        )
        self.categories = self.train_set.categories
        if len(self.train_set) == 0:
            raise DataError(f"{self.train_set.ann_path}: the '{d.train_split}' split has no images")
        self.model = model = self._build_model(init=cfg.init and state is None)
        o = cfg.optim
        self.optimizer = make_adamw(param_groups(model, o.lr, o.lr_backbone, o.weight_decay, o.lr_mult), o)
        self.sampler = EpochBatchSampler(
            len(self.train_set), d.batch_size, self.rank, self.world, cfg.seed, shuffle=True, drop_last=d.drop_last
        )
        self.steps_per_epoch = len(self.sampler)
        self.schedule = LrSchedule(self.optimizer, o, cfg.epochs * self.steps_per_epoch)
        matcher = HungarianMatcher(cfg.loss.cost_class, cfg.loss.cost_bbox, cfg.loss.cost_giou)
        self.criterion = self._build_criterion(matcher).to(self.device)
        self.step_module = TrainStep(model, matcher)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = {"pq": None, "epoch": None}
        if state is not None:
            self.checkpointer.restore(self, state)
        else:
            self.seed_rng()
            dropped = self.metrics.truncate_after(0)  # records of a run killed before its first checkpoint
            if dropped:
                self.log(f"train: warning: {self.metrics.path}: {dropped} record(s) of a run without a checkpoint "
                         "dropped (training starts over)")
        if self.world > 1:
            ddp_kwargs = {"find_unused_parameters": cfg.find_unused_parameters}
            if self.device.type == "cuda":
                ddp_kwargs["device_ids"] = [self.device.index]
            self.ddp = nn.parallel.DistributedDataParallel(self.step_module, **ddp_kwargs)
        else:
            self.ddp = self.step_module
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            num_workers=d.workers,
            collate_fn=collate_fn,
            pin_memory=self.device.type == "cuda",
            persistent_workers=d.workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        )
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "train_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.log(
                f"train: {len(self.train_set)} images, {len(self.categories)} categories, stage {cfg.stage}, "
                f"{n_train / 1e6:.2f}M trainable parameters, {self.steps_per_epoch} steps/epoch x {self.world} process(es), "
                f"device {self.device}{', amp ' + str(self.amp_dtype).split('.')[-1] if self.amp_dtype else ''}"
            )
            partial = self.train_set.partially_annotated()
            if partial and not cfg.loss.partial_labels:
                self.log(f"train: note: {partial} image(s) leave thing classes unannotated (per-class exports); "
                         "--set loss.partial_labels=true keeps their unlabelled objects from training as 'no object'")

    def _remove_stale_temporaries(self) -> None:
        removed = remove_stale_temporaries(self.out)
        if removed:
            mb = sum(size for _, size in removed) / 1e6
            self.log(f"train: removed {len(removed)} temporary file(s) of an interrupted write ({mb:.1f} MB): "
                     + ", ".join(name for name, _ in removed))

    def is_complete(self) -> bool:
        """The run is over (`epoch`, `global_step`: where it continues)."""
        cfg = self.cfg
        return self.epoch >= cfg.epochs or (cfg.max_steps > 0 and self.global_step >= cfg.max_steps)

    def _build_model(self, init: bool) -> nn.Module:
        """The model of the config for the dataset's categories, on the device, its trainable
        parameters set by stage; initialised from `cfg.init` when `init`."""
        from panoptic_detr.model.build import build_model

        cfg = self.cfg
        overrides = dict(cfg.model_overrides)
        overrides.update(num_classes=self.categories.num_classes, masks=cfg.stage != "boxes", aux_loss=cfg.loss.aux_loss)
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = build_model(cfg.model, categories=self.categories, **overrides)
        if init:
            init_from_checkpoint(model, cfg.init, self.categories, log=self.log,
                                 class_map=dataset_class_map(cfg.data_dir))
        set_trainable(model, cfg.stage, cfg.optim.lr_backbone, cfg.optim.freeze_backbone_stem)
        if cfg.channels_last:
            detr = getattr(model, "detr", model)
            detr.backbone[0].set_channels_last(True)
        return model.to(self.device)

    def _build_criterion(self, matcher: HungarianMatcher) -> SetCriterion:
        cfg, l = self.cfg, self.cfg.loss
        masks = cfg.stage != "boxes"
        num_aux = (self.model.config.dec_layers - 1) if l.aux_loss else 0
        losses = ("labels", "boxes", "cardinality") + (("masks",) if masks else ())
        weights = build_weight_dict(l.ce, l.bbox, l.giou, l.mask, l.dice, num_aux=num_aux, masks=masks)
        if cfg.stage == "masks":
            # DETR is frozen: only the mask losses train; the others are logged (no aux re-matching)
            weights = {"loss_mask": l.mask, "loss_dice": l.dice}
            self.model.detr.aux_loss = False
        return SetCriterion(self.categories.num_classes, matcher, weights, eos_coef=l.eos_coef, losses=losses,
                            focal_alpha=l.focal_alpha, focal_gamma=l.focal_gamma, partial_labels=l.partial_labels)

    def save_model_file(self, name: str, extra: dict | None = None) -> None:
        """The model (weights, config, categories, and the inference settings of the eval config:
        `model.inference_defaults` once loaded) as `out/name`, for load_model (rank 0 writes)."""
        if not self.main:
            return
        from panoptic_detr.model.checkpoint import save_model

        save_model(self.out / name, self.model, categories=self.categories, extra=extra,
                   inference=self.cfg.inference_defaults())

    # -- one step ---------------------------------------------------------------------------
    def _diverged(self, what: str, epoch: int, it: int, terms: dict | None = None) -> TrainingDiverged:
        detail = ""
        if terms:
            detail = "; " + ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items() if k in LOGGED)
        last = self.out / CHECKPOINT
        saved = f"last good checkpoint: {last}" if last.exists() else "nothing was saved"
        return TrainingDiverged(
            f"{what} at step {self.global_step + 1} (epoch {epoch + 1}, iteration {it + 1}); "
            f"training stopped, {saved}{detail}. Try a lower optim.lr or stronger clipping"
        )

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self, samples, targets, epoch: int, it: int) -> dict:
        """One optimizer step; the logged values (loss terms, total, gradient norms), averaged
        over processes."""
        samples = samples.to(self.device, non_blocking=True)
        targets = targets_to(targets, self.device)
        self.schedule.set(self.global_step, epoch)
        try:
            with self.autocast():
                outputs, indices = self.ddp(samples, targets)
            losses = self.criterion(outputs, targets, indices=indices)
        except NonFiniteError:
            raise self._diverged("non-finite predictions (NaN/inf)", epoch, it) from None
        loss = self.criterion.weighted_total(losses)
        logged = {k: v.detach() for k, v in losses.items() if k in LOGGED}
        logged["loss"] = loss.detach()
        logged = {k: float(v) for k, v in D.reduce_dict(logged).items()}
        if not math.isfinite(logged["loss"]):
            raise self._diverged(f"loss is {logged['loss']}", epoch, it, logged)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norms = clip_gradients(self.model, self.cfg.optim)
        if self.scaler is None and not all(math.isfinite(v) for v in norms.values()):
            raise self._diverged("non-finite gradients", epoch, it, logged)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        logged.update({f"grad_norm_{k}": v for k, v in norms.items()})
        return logged

    def set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.stage == "masks" and hasattr(self.model, "detr"):
            self.model.detr.eval()  # frozen: BatchNorm statistics and dropout fixed too

    # -- the loop -----------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "best": self.best, "last": self.last_logged}

    def run(self) -> dict:
        cfg = self.cfg
        self.build()
        if self.is_complete():
            # what a kill after the last checkpoint left undone, as the uninterrupted run does it
            self.log(f"train: already complete ({self.global_step} steps); nothing to do")
            if not (self.out / FINAL).exists():
                self.save_model_file(FINAL, {"epochs": self.epoch, "steps": self.global_step, "best": self.best})
            if self.main and not self.metrics.has_final():
                self.metrics_hook.write_final(self)
            return {"epoch": self.epoch, "global_step": self.global_step, "best": self.best}
        self._call("before_train")
        for epoch in range(self.epoch, cfg.epochs):
            self.epoch = self.current_epoch = epoch
            start = self.step_in_epoch
            self.sampler.set_epoch(epoch, start)
            self.set_train_mode()
            self._call("before_epoch")
            for it, (samples, targets) in enumerate(self.loader, start=start):
                self._call("before_step")
                self.step_images = len(targets) * self.world
                logged = self.train_step(samples, targets, epoch, it)
                self.global_step += 1
                self.step_in_epoch = it + 1
                logged["lr"] = self.optimizer.param_groups[0]["lr"]
                self.last_logged = logged
                self.stop = cfg.max_steps > 0 and self.global_step >= cfg.max_steps
                self._call("after_step")
                if self.stop:
                    break
            self.epoch_done = self.step_in_epoch >= self.steps_per_epoch
            self.last_epoch = self.stop or epoch == cfg.epochs - 1
            if self.epoch_done:
                self.epoch, self.step_in_epoch = epoch + 1, 0
            self._call("after_epoch")
            if self.stop:
                break
        self.save_model_file(FINAL, {"epochs": self.epoch, "steps": self.global_step, "best": self.best})
        D.barrier()
        self._call("after_train")
        return self.summary()


__all__ = ["Trainer", "TrainingDiverged", "init_from_checkpoint", "resolve_device", "amp_settings", "seed_everything"]
