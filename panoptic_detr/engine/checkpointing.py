"""Training checkpoints: complete state for exact resumption, written atomically.

A training checkpoint is a `.pth` dict that is also a model checkpoint (`model`, `config`
= ModelConfig dict, `categories`), so `load_model` and `--init` accept it, plus:
`format` ("panoptic-detr-train"), `train_config`, `optimizer`, `scheduler`, `scaler`,
`epoch` / `step_in_epoch` (where to continue), `global_step`, `rng` (one entry per
process: python, numpy, torch CPU and CUDA generator states), `sampler`, `best`.

Only plain containers and tensors are stored, so it loads with `weights_only=True`.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from panoptic_detr.errors import CheckpointError
from panoptic_detr.utils.io import atomic_path

FORMAT = "panoptic-detr-train"
# The files of a training run's out dir: the latest training checkpoint (for resuming), the
# trained model and the model with the best PQ (model checkpoints, for load_model).
CHECKPOINT = "checkpoint.pth"
FINAL = "model_final.pth"
BEST = "model_best.pth"
REQUIRED = ("model", "optimizer", "epoch", "step_in_epoch", "global_step")
# What a run writes through utils.io.atomic_path (temporaries `.<name>.<random>.tmp` beside them).
RUN_FILES = (CHECKPOINT, FINAL, BEST, "checkpoint_epoch*.pth", "metrics.jsonl", "train_config.yaml")


def remove_stale_temporaries(out_dir: str | Path) -> list[tuple[str, int]]:
    """Delete the temporaries that a run killed while writing one of its files left in
    `out_dir` (a checkpoint's is as large as the checkpoint); returns (name, bytes) of each.
    Call it before the run writes anything (rank 0 only)."""
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.is_dir():
        return removed
    for name in RUN_FILES:
        for tmp in sorted(out_dir.glob(f".{name}.*.tmp")):
            if tmp.is_file() and not tmp.is_symlink():
                size = tmp.stat().st_size
                tmp.unlink()
                removed.append((tmp.name, size))
    return removed


def capture_rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves half a file."""
    state = dict(state)
    state.setdefault("format", FORMAT)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint_file(path: str | Path) -> dict:
    """Any `.pth` as a dict (weights only), with one-line errors for bad files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    with open(path, "rb") as f:
        magic = f.read(4)
    is_zip = magic == b"PK\x03\x04"
    if not is_zip and magic[:1] != b"\x80":
        raise CheckpointError(f"{path}: not a checkpoint (not a PyTorch file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights only" in msg.lower() or "unsupported global" in str(e).lower():
            raise CheckpointError(f"{path}: holds pickled Python objects; refusing to load it (weights only)") from None
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({msg[:200]})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError... for damaged files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {msg[:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, expected a dict)")
    return obj


def load_training_checkpoint(path: str | Path) -> dict:
    ck = read_checkpoint_file(path)
    missing = [k for k in REQUIRED if k not in ck]
    if missing:
        if "model" in ck:
            raise CheckpointError(
                f"{path}: a model checkpoint without training state (no {', '.join(missing)}); use --init to start from it"
            )
        raise CheckpointError(f"{path}: not a panoptic-detr training checkpoint (no {', '.join(missing)})")
    return ck
