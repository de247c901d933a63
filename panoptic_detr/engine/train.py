"""`train(TrainConfig)`: DETR panoptic training, single process or under `torchrun`.

Stages: `boxes` trains the detection model (DETR) on things and stuff; `masks` freezes all
of DETR and trains `bbox_attention` + `mask_head`; `joint` trains everything.

Exact resumption: the data order of an epoch is a permutation drawn from (seed, epoch),
each sample's augmentation is seeded from (seed, epoch, index), and checkpoints (every
epoch, every `checkpoint_every` steps, at the end) hold the model, optimizer, schedule,
scaler, position and every process's RNG states. A run killed at any point and resumed
from its last checkpoint (same out dir; automatic) ends with bit-identical weights (on CPU;
cuDNN autotuning makes CUDA runs non-deterministic).

Outputs in `out_dir`: `checkpoint.pth` (latest, for resuming), `model_best.pth` (best PQ),
`model_final.pth` (the trained model, for `load_model`/evaluate/predict), `metrics.jsonl`,
`train_config.yaml`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from panoptic_detr.data import transforms as T
from panoptic_detr.data.dataset import PanopticDataset, collate_fn
from panoptic_detr.engine import distributed as D
from panoptic_detr.engine.checkpointing import (
    capture_rng_state,
    load_training_checkpoint,
    read_checkpoint_file,
    restore_rng_state,
    save_checkpoint,
)
from panoptic_detr.engine.criterion import SetCriterion, build_weight_dict
from panoptic_detr.engine.matcher import HungarianMatcher, NonFiniteError
from panoptic_detr.engine.metrics_log import Averager, MetricsLog
from panoptic_detr.engine.sampler import EpochBatchSampler
from panoptic_detr.engine.train_config import TrainConfig
from panoptic_detr.errors import CheckpointError, ConfigError, DataError, PanopticDetrError
from panoptic_detr.utils.io import write_text

CHECKPOINT = "checkpoint.pth"
FINAL = "model_final.pth"
BEST = "model_best.pth"
# Module groups for per-group gradient clipping (names after an optional "detr." prefix).
GROUPS = ("backbone", "transformer", "class_embed", "bbox_embed", "query_embed", "input_proj", "bbox_attention", "mask_head")
LOGGED = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "class_error", "cardinality_error")


class TrainingDiverged(PanopticDetrError):
    """The loss (or the gradients) became NaN or infinite."""


# ----------------------------------------------------------------------------------------
# Set-up helpers
# ----------------------------------------------------------------------------------------
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


def group_of(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "detr":
        parts = parts[1:]
    return parts[0] if parts[0] in GROUPS else "other"


def is_backbone(name: str) -> bool:
    return group_of(name) == "backbone"


def set_trainable(model: nn.Module, stage: str, lr_backbone: float, freeze_stem: bool) -> None:
    """requires_grad per stage: masks trains bbox_attention + mask_head only."""
    for name, p in model.named_parameters():
        if stage == "masks":
            trainable = group_of(name) in ("bbox_attention", "mask_head")
        elif is_backbone(name):
            in_late = any(f".{l}." in name for l in ("layer2", "layer3", "layer4"))
            trainable = lr_backbone > 0 and (in_late or not freeze_stem)
        else:
            trainable = True
        p.requires_grad_(trainable)


def param_groups(model: nn.Module, lr: float, lr_backbone: float, weight_decay: float,
                 lr_mult: dict[str, float] | None = None) -> list[dict]:
    """AdamW groups: "main" at `lr`, "backbone" at `lr_backbone`, and one group per module
    group named in `lr_mult` at `lr x multiplier`."""
    lr_mult = dict(lr_mult or {})
    unknown = sorted(set(lr_mult) - set(GROUPS))
    if unknown:
        raise ConfigError(f"optim.lr_mult: unknown module group {unknown[0]!r} (known: {', '.join(GROUPS)})")
    named: dict[str, list] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = group_of(n)
        key = "backbone" if group == "backbone" else (group if group in lr_mult else "main")
        named.setdefault(key, []).append(p)
    if not named:
        raise ConfigError("no trainable parameters (check stage and optim.lr_backbone)")
    groups = [{"params": named.pop("main", []), "lr": lr, "weight_decay": weight_decay, "name": "main"}]
    if "backbone" in named:
        groups.append({"params": named.pop("backbone"), "lr": lr_backbone, "weight_decay": weight_decay,
                       "name": "backbone"})
    for key in sorted(named):
        groups.append({"params": named[key], "lr": lr * lr_mult[key], "weight_decay": weight_decay, "name": key})
    return [g for g in groups if g["params"]]


def group_lr(name: str | None, o) -> float:
    """The configured (pre-schedule) lr of the optimizer group called `name`."""
    if name == "backbone":
        return o.lr_backbone
    return o.lr * dict(o.lr_mult or {}).get(name, 1.0)


def clip_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    out: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out.setdefault(group_of(name), []).append(p)
    return out


def make_adamw(groups: list[dict], o) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all tensors: ~3x faster on CPU) where torch supports it."""
    kwargs = dict(lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


class LrSchedule:
    """Linear warm-up then step decay (x factor from epoch `lr_drop`) or cosine to 0.

    Sets each optimizer group's lr to `initial_lr x factor(step, epoch)`; it has no state
    of its own beyond the last step/epoch (saved for the record).
    """

    def __init__(self, optimizer, cfg, total_steps: int):
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.last = (0, 0)

    def factor(self, step: int, epoch: int) -> float:
        c = self.cfg
        f = 1.0
        if c.warmup_steps > 0 and step < c.warmup_steps:
            f *= c.warmup_factor + (1 - c.warmup_factor) * step / c.warmup_steps
        if c.schedule == "step":
            if epoch >= c.lr_drop:
                f *= c.lr_drop_factor
        else:
            progress = min(1.0, step / self.total_steps)
            f *= 0.5 * (1 + math.cos(math.pi * progress))
        return f

    def set(self, step: int, epoch: int) -> None:
        f = self.factor(step, epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        self.last = (step, epoch)

    def state_dict(self) -> dict:
        return {"last_step": self.last[0], "last_epoch": self.last[1], "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.last = (int(state.get("last_step", 0)), int(state.get("last_epoch", 0)))


class TrainStep(nn.Module):
    """The model plus matching, in one forward (what DDP wraps).

    Panoptic models decode masks for the matched queries only (the loss ignores the others,
    so gradients are those of the full forward, at a fraction of the cost).
    """

    def __init__(self, model: nn.Module, matcher: HungarianMatcher):
        super().__init__()
        self.model = model
        self.matcher = matcher

    def forward(self, samples, targets):
        has_masks = hasattr(self.model, "masks_for_queries")
        out = self.model(samples, with_masks=False) if has_masks else self.model(samples)
        ctx = out.pop("mask_context", None)
        main = {k: v for k, v in out.items() if k != "aux_outputs"}
        indices = self.matcher(main, targets)
        if has_masks:
            device = out["pred_logits"].device
            bi = torch.cat([torch.full_like(s, i) for i, (s, _) in enumerate(indices)]).to(device)
            qi = torch.cat([s for s, _ in indices]).to(device)
            if len(qi):
                out["matched_masks"] = self.model.masks_for_queries(ctx, bi, qi)
            else:  # no objects: an empty slice that still reaches the mask head (for DDP)
                zero = torch.zeros(1, dtype=torch.long, device=device)
                out["matched_masks"] = self.model.masks_for_queries(ctx, zero, zero)[:0]
        return out, indices


def targets_to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


def _debug_kill(step: int) -> None:
    """Test hook: SIGKILL this process when it is about to run step `step`."""
    at = os.environ.get("PANOPTIC_DETR_DEBUG_KILL_AT_STEP")
    if at is not None and int(at) == step and D.is_main():
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------------------
# Model initialisation from a checkpoint (--init)
# ----------------------------------------------------------------------------------------
def init_from_checkpoint(model: nn.Module, path: str, categories, log=print) -> None:
    """Load weights from any checkpoint the model loads, the class head adapted to `categories`.

    Official DETR files, Hugging Face DETR weights, `model_final.pth` / training checkpoints
    and `.safetensors` all work. A detection checkpoint initialises a panoptic model's `detr`
    (the mask head starts fresh); a panoptic checkpoint gives a detection model its DETR part.
    Class rows are carried over by category name where both sides name their categories.
    The architecture must match the train config's model (a clear error lists mismatches).
    """
    from panoptic_detr.data.categories import CategoryList
    from panoptic_detr.model import checkpoint as mck
    from panoptic_detr.model.hf_import import convert_hf_state_dict, is_hf_state_dict

    ck = mck.load_checkpoint(path)
    sd = ck["model"]
    if is_hf_state_dict(sd):
        sd = convert_hf_state_dict(sd)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    panoptic = hasattr(model, "mask_head")
    fresh: tuple[str, ...] = ()
    if panoptic and not mck.is_panoptic_state_dict(sd):
        sd = {f"detr.{k}": v for k, v in sd.items()}
        fresh = ("bbox_attention.", "mask_head.")
    elif not panoptic and mck.is_panoptic_state_dict(sd):
        sd = {k[len("detr."):]: v for k, v in sd.items() if k.startswith("detr.")}
    key = "detr.class_embed.weight" if panoptic else "class_embed.weight"
    if key not in sd:
        raise CheckpointError(f"{path}: not a DETR checkpoint (no {key})")
    src_classes = int(sd[key].shape[0]) - 1
    src_cats = None
    if ck.get("categories"):
        src_cats = CategoryList.from_json(ck["categories"], where=f"{path}: categories")
    elif src_classes in (91, 250):
        src_cats = mck._default_categories(src_classes)
    sd = mck.adapt_state_dict(sd, categories.num_classes, src_cats, categories)
    kept = 0
    if src_cats is not None:
        kept = sum(1 for c in categories if c.name in src_cats.by_name)
    try:
        mck.load_state_dict_checked(model, sd, strict=True, where=str(path), fresh_prefixes=fresh)
    except CheckpointError as e:
        raise CheckpointError(f"{e} (the train config's model must have the checkpoint's architecture)") from None
    log(
        f"init: weights from {path}; class head adapted {src_classes} -> {categories.num_classes} classes "
        f"({kept} carried over by name){'; mask head starts fresh' if fresh else ''}"
    )


# ----------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | bool | None = None, log_fn=None):
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

    def log(self, msg: str) -> None:
        if self.main:
            self._print(msg)

    # -- building ------------------------------------------------------------------------
    def _find_resume(self) -> dict | None:
        req = self.resume_request
        ckpt = self.out / CHECKPOINT
        if isinstance(req, str) and req not in ("auto", ""):
            return load_training_checkpoint(req)
        if ckpt.exists():
            return load_training_checkpoint(ckpt)
        if req:
            raise CheckpointError(f"{ckpt}: nothing to resume (no checkpoint in {self.out})")
        return None

    def build(self) -> None:
        cfg = self.cfg
        from panoptic_detr.model.build import build_model

        state = self._find_resume()
        self.resume_state = state
        d = cfg.data
        self.train_set = PanopticDataset(
            cfg.data_dir,
            d.train_split,
            T.train_transforms(d.scales, d.max_size, d.crop_resize, d.crop_min, d.crop_max, d.hflip),
        )
        self.categories = self.train_set.categories
        if len(self.train_set) == 0:
            raise DataError(f"{self.train_set.ann_path}: the '{d.train_split}' split has no images")
        masks = cfg.stage != "boxes"
        overrides = dict(cfg.model_overrides)
        overrides.update(num_classes=self.categories.num_classes, masks=masks, aux_loss=cfg.loss.aux_loss)
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = build_model(cfg.model, categories=self.categories, **overrides)
        if cfg.init and state is None:
            init_from_checkpoint(model, cfg.init, self.categories, log=self.log)
        set_trainable(model, cfg.stage, cfg.optim.lr_backbone, cfg.optim.freeze_backbone_stem)
        if cfg.channels_last:
            detr = getattr(model, "detr", model)
            detr.backbone[0].set_channels_last(True)
        model.to(self.device)
        self.model = model
        o = cfg.optim
        self.optimizer = make_adamw(param_groups(model, o.lr, o.lr_backbone, o.weight_decay, o.lr_mult), o)
        self.sampler = EpochBatchSampler(
            len(self.train_set), d.batch_size, self.rank, self.world, cfg.seed, shuffle=True, drop_last=d.drop_last
        )
        self.steps_per_epoch = len(self.sampler)
        self.schedule = LrSchedule(self.optimizer, o, cfg.epochs * self.steps_per_epoch)
        matcher = HungarianMatcher(cfg.loss.cost_class, cfg.loss.cost_bbox, cfg.loss.cost_giou)
        l = cfg.loss
        num_aux = (model.config.dec_layers - 1) if l.aux_loss else 0
        losses = ("labels", "boxes", "cardinality") + (("masks",) if masks else ())
        weights = build_weight_dict(l.ce, l.bbox, l.giou, l.mask, l.dice, num_aux=num_aux, masks=masks)
        if cfg.stage == "masks":
            # DETR is frozen: only the mask losses train; the others are logged (no aux re-matching)
            weights = {"loss_mask": l.mask, "loss_dice": l.dice}
            model.detr.aux_loss = False
        self.criterion = SetCriterion(
            self.categories.num_classes,
            matcher,
            weights,
            eos_coef=l.eos_coef,
            losses=losses,
            focal_alpha=l.focal_alpha,
            focal_gamma=l.focal_gamma,
        ).to(self.device)
        self.step_module = TrainStep(model, matcher)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = {"pq": None, "epoch": None}
        if state is not None:
            self._load_state(state)
        else:
            seed_everything(cfg.seed + self.rank)
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

    def _load_state(self, state: dict) -> None:
        cfg = self.cfg
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            msg = str(e).splitlines()[0]
            raise CheckpointError(
                f"{self.out / CHECKPOINT}: does not fit this run's model/optimizer ({msg}); use another --out or remove it"
            ) from None
        for g in self.optimizer.param_groups:  # the configured lr wins over the saved one
            g["initial_lr"] = group_lr(g.get("name"), cfg.optim)
        self.schedule.load_state_dict(state.get("scheduler") or {})
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.best = dict(state.get("best") or self.best)
        rng = state.get("rng") or []
        if len(rng) == self.world:
            restore_rng_state(rng[self.rank])
        else:
            self.log(f"resume: saved with {len(rng)} process(es), now {self.world}: RNG streams re-seeded")
            seed_everything(cfg.seed + self.rank + 1000 * self.global_step)
        saved = state.get("train_config") or {}
        for key in ("model", "stage", "seed"):
            if key in saved and saved[key] != getattr(cfg, key):
                self.log(f"resume: warning: {key} was {saved[key]!r}, now {getattr(cfg, key)!r}")
        if saved.get("data", {}).get("batch_size") not in (None, cfg.data.batch_size):
            self.log("resume: warning: batch size changed; data order differs from the interrupted run")
        self.metrics.truncate_after(self.global_step)
        self.log(f"resume: epoch {self.epoch + 1}, step {self.global_step} (from {self.out / CHECKPOINT})")

    # -- checkpoints -----------------------------------------------------------------------
    def _state(self) -> dict:
        rng = D.all_gather_object(capture_rng_state())
        return {
            "model": self.model.state_dict(),
            "config": self.model.config.to_dict(),
            "categories": self.categories.to_json(),
            "train_config": self.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "rng": rng,
            "sampler": self.sampler.state_dict(),
            "best": self.best,
            "world_size": self.world,
        }

    def save(self) -> None:
        state = self._state()  # collective: every process takes part
        if self.main:
            save_checkpoint(self.out / CHECKPOINT, state)
            if self.cfg.keep_epoch_checkpoints and self.step_in_epoch == 0:
                save_checkpoint(self.out / f"checkpoint_epoch{self.epoch:04d}.pth", state)
        D.barrier()

    def save_model_file(self, name: str, extra: dict | None = None) -> None:
        if not self.main:
            return
        from panoptic_detr.model.checkpoint import save_model

        save_model(self.out / name, self.model, categories=self.categories, extra=extra)

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

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self, samples, targets, epoch: int, it: int) -> dict:
        cfg = self.cfg
        samples = samples.to(self.device, non_blocking=True)
        targets = targets_to(targets, self.device)
        self.schedule.set(self.global_step, epoch)
        try:
            with self._autocast():
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
        norms = self._clip()
        if self.scaler is None and not all(math.isfinite(v) for v in norms.values()):
            raise self._diverged("non-finite gradients", epoch, it, logged)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        logged.update({f"grad_norm_{k}": v for k, v in norms.items()})
        return logged

    def _clip(self) -> dict[str, float]:
        o = self.cfg.optim
        groups = clip_groups(self.model)
        max_norm = o.clip_max_norm if o.clip_max_norm > 0 else float("inf")
        if o.clip_mode == "per_group":
            norms = {}
            for name, params in groups.items():
                norms[name] = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            return norms
        params = [p for ps in groups.values() for p in ps]
        return {"total": float(torch.nn.utils.clip_grad_norm_(params, max_norm))}

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.stage == "masks" and hasattr(self.model, "detr"):
            self.model.detr.eval()  # frozen: BatchNorm statistics and dropout fixed too

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_due(self, epoch: int, last: bool) -> bool:
        e = self.cfg.eval.every
        if e < 0:
            return False
        return last or (e > 0 and (epoch + 1) % e == 0)

    @torch.no_grad()
    def val_losses(self) -> dict[str, float]:
        cfg, d = self.cfg, self.cfg.data
        try:
            ds = PanopticDataset(cfg.data_dir, d.val_split, T.eval_transforms(d.eval_size, d.eval_max_size), categories=self.categories)
        except PanopticDetrError as e:
            self.log(f"eval: no val losses ({e})")
            return {}
        n = len(ds) if cfg.eval.max_images <= 0 else min(len(ds), cfg.eval.max_images)
        if n == 0:
            return {}
        if n < len(ds):
            ds = torch.utils.data.Subset(ds, list(range(n)))
        sampler = EpochBatchSampler(n, cfg.eval.batch_size, self.rank, self.world, shuffle=False, drop_last=False, augment_seeds=False)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=0, collate_fn=collate_fn)
        avg = Averager()
        self.model.eval()
        for samples, targets in loader:
            samples, targets = samples.to(self.device), targets_to(targets, self.device)
            with self._autocast():
                outputs, indices = self.step_module(samples, targets)
            losses = self.criterion(outputs, targets, indices=indices)
            vals = {k: v.detach() for k, v in losses.items() if k in LOGGED}
            vals["loss"] = self.criterion.weighted_total(losses).detach()
            avg.update({k: float(v) for k, v in vals.items()})
        means = {k: torch.tensor(v, device=self.device) for k, v in avg.means().items()}
        return {f"val_{k}": float(v) for k, v in D.reduce_dict(means).items()}

    def evaluate(self, epoch: int) -> dict:
        cfg = self.cfg
        rng = capture_rng_state()  # evaluation must not shift the training RNG streams
        record: dict = {"kind": "eval", "epoch": epoch + 1, "step": self.global_step}
        if cfg.eval.loss:
            record.update(self.val_losses())
        if cfg.eval.pq and hasattr(self.model, "mask_head"):
            pq = None
            if self.main:
                pq = self._pq()
            pq = D.broadcast_object(pq)
            if pq:
                record.update(pq)
        restore_rng_state(rng)
        self._set_train_mode()
        if self.main and len(record) > 3:
            self.metrics.write(record)
            shown = {k: v for k, v in record.items() if k in ("val_loss", "pq", "pq_things", "pq_stuff")}
            self.log("eval: " + ", ".join(f"{k} {100 * v if k.startswith('pq') else v:.3f}" for k, v in shown.items()))
        return record

    def _pq(self) -> dict | None:
        try:
            from panoptic_detr.evaluation.evaluate import evaluate_model
        except ImportError:
            return None
        import inspect

        cfg = self.cfg
        kwargs = dict(split=cfg.data.val_split, out_dir=None, batch_size=cfg.eval.batch_size,
                      threshold=cfg.eval.threshold, device=str(self.device), progress=False)
        params = inspect.signature(evaluate_model).parameters
        if "short_side" in params:
            kwargs["short_side"] = cfg.data.eval_size
        if "max_size" in params:
            kwargs["max_size"] = cfg.data.eval_max_size
        if cfg.eval.dedup is not None:
            kwargs["dedup"] = cfg.eval.dedup
        if "max_images" in params and cfg.eval.max_images > 0:
            kwargs["max_images"] = cfg.eval.max_images
        val_dir = Path(cfg.data_dir) / "annotations" / f"panoptic_{cfg.data.val_split}.json"
        if not val_dir.exists():
            return None
        self.model.eval()
        self.model.categories = self.categories
        try:
            metrics = evaluate_model(self.model, cfg.data_dir, **kwargs)
        except PanopticDetrError as e:
            self.log(f"eval: PQ skipped ({e})")
            return None
        except Exception as e:  # an evaluation bug must not end a long training run
            self.log(f"eval: PQ failed, training continues ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
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

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        self.build()
        from tqdm import tqdm

        done_steps = cfg.max_steps > 0 and self.global_step >= cfg.max_steps
        if self.epoch >= cfg.epochs or done_steps:
            self.log(f"train: already complete ({self.global_step} steps); nothing to do")
            if not (self.out / FINAL).exists():
                self.save_model_file(FINAL, {"epochs": self.epoch, "steps": self.global_step})
            return {"epoch": self.epoch, "global_step": self.global_step, "best": self.best}
        last_logged: dict = {}
        stop = False
        for epoch in range(self.epoch, cfg.epochs):
            self.epoch = epoch
            start = self.step_in_epoch
            self.sampler.set_epoch(epoch, start)
            self._set_train_mode()
            window, epoch_avg = Averager(), Averager()
            t_window = t_epoch = time.perf_counter()
            bar = tqdm(
                total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not (cfg.progress and self.main), dynamic_ncols=True, leave=True, file=sys.stderr,
            )
            it = start
            for it, (samples, targets) in enumerate(self.loader, start=start):
                _debug_kill(self.global_step + 1)
                n_img = len(targets) * self.world
                logged = self.train_step(samples, targets, epoch, it)
                self.global_step += 1
                self.step_in_epoch = it + 1
                logged["lr"] = self.optimizer.param_groups[0]["lr"]
                window.update(logged, n_img)
                epoch_avg.update(logged, n_img)
                last_logged = logged
                now = time.perf_counter()
                bar.update(1)
                bar.set_postfix(loss=f"{logged['loss']:.3f}", img_s=f"{window.images / max(now - t_window, 1e-9):.1f}", refresh=False)
                if self.global_step % cfg.log_every == 0:
                    rec = {"kind": "train", "epoch": epoch + 1, "step": self.global_step, **window.means(),
                           "images_per_s": window.images / max(now - t_window, 1e-9), "time": time.time()}
                    self.metrics.write(rec)
                    window.reset()
                    t_window = now
                if cfg.max_steps > 0 and self.global_step >= cfg.max_steps:
                    stop = True
                    break
                if cfg.checkpoint_every > 0 and self.global_step % cfg.checkpoint_every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    self.save()
            bar.close()
            epoch_done = self.step_in_epoch >= self.steps_per_epoch
            if epoch_avg.count:
                dt = time.perf_counter() - t_epoch
                self.metrics.write({"kind": "epoch", "epoch": epoch + 1, "step": self.global_step, **epoch_avg.means(),
                                    "images_per_s": epoch_avg.images / max(dt, 1e-9), "epoch_time": dt, "time": time.time()})
            last = stop or epoch == cfg.epochs - 1
            if epoch_done:
                self.epoch, self.step_in_epoch = epoch + 1, 0
            if epoch_done or stop:
                if self._eval_due(epoch, last):
                    rec = self.evaluate(epoch)
                    pq = rec.get("pq")
                    if pq is not None and (self.best.get("pq") is None or pq > self.best["pq"]):
                        self.best = {"pq": pq, "epoch": epoch + 1, "step": self.global_step}
                        self.save_model_file(BEST, {"pq": pq, "epoch": epoch + 1, "step": self.global_step})
                if last or not epoch_done or (epoch + 1) % max(1, cfg.checkpoint_epochs) == 0:
                    self.save()
            if stop:
                break
        self.save_model_file(FINAL, {"epochs": self.epoch, "steps": self.global_step, "best": self.best})
        if os.environ.get("PANOPTIC_DETR_DEBUG_RANKS"):  # test hook: per-process summary
            checksum = sum(float(p.detach().double().sum()) for p in self.model.parameters())
            print(f"[rank {self.rank}/{self.world}] step {self.global_step} loss {last_logged.get('loss')!r} "
                  f"checksum {checksum!r}", file=sys.stderr, flush=True)
        D.barrier()
        if self.main:
            self.metrics.write({"kind": "final", "epoch": self.epoch, "step": self.global_step, "best_pq": self.best.get("pq"), "time": time.time()})
            best = f", best PQ {100 * self.best['pq']:.1f} at epoch {self.best['epoch']} ({self.out / BEST})" if self.best.get("pq") is not None else ""
            self.log(f"train: done, {self.global_step} steps; model: {self.out / FINAL}{best}")
        return {"epoch": self.epoch, "global_step": self.global_step, "best": self.best, "last": last_logged}


def train(cfg: TrainConfig, resume: str | bool | None = None, log_fn=None) -> dict:
    """Train per `cfg`; returns a summary (epoch, global_step, best, last step's logged values)."""
    trainer = Trainer(cfg, resume=resume, log_fn=log_fn)
    try:
        return trainer.run()
    finally:
        D.cleanup()


__all__ = ["train", "Trainer", "TrainingDiverged", "TrainStep", "LrSchedule", "init_from_checkpoint", "read_checkpoint_file"]
