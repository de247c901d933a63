"""`make base-model`: rebuild the shipped base model from nothing.

The base model plays the role the official COCO checkpoint plays for real users: it
labels the stuff of custom images (the teacher of `prepare --stuff-from`) and is the
starting point of fine-tuning. It is the `tiny` architecture trained from scratch on
synthetic scenes of the *base* class set (the demo's stuff groups plus generic things
that differ from the demo's construction materials), with the same commands a user runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from panoptic_detr.apps.demo import BASE_MODEL, EVAL_DEDUP, EVAL_SHORT_SIDE, EVAL_THRESHOLD, RESOURCES, Demo, DemoConfig, peak_memory_mb
from panoptic_detr.data.prepared import PreparedDataset
from panoptic_detr.errors import PanopticDetrError


@dataclass
class BaseModelConfig:
    out: Path = Path("runs/base-model")
    images: int = 1000
    size: str = "256x320"
    seed: int = 1
    epochs: int = 18
    export: Path = BASE_MODEL
    train_args: list[str] = field(default_factory=list)


def build_base_model(cfg: BaseModelConfig) -> dict:
    out = Path(cfg.out)
    runner = Demo(DemoConfig(out=out))  # only its stage runner and timing are used
    raw, dataset, train_dir, eval_dir = out / "raw", out / "dataset", out / "train", out / "eval"
    t0 = time.perf_counter()
    runner._run(
        "synth",
        ["synth", raw, "--images", cfg.images, "--seed", cfg.seed, "--classes", "base", "--size", cfg.size,
         "--overwrite"],
        done=raw / "DONE",
    )
    (raw / "DONE").touch()
    runner._run(
        "prepare",
        ["prepare", "--class-map", RESOURCES / "base-class-map.yaml", "--out", dataset, "--things", raw / "things",
         "--stuff-truth", raw / "stuff" / "panoptic.json", raw / "stuff" / "panoptic", "--seed", cfg.seed,
         "--overwrite"],
        done=PreparedDataset(dataset).dataset_yaml,
    )
    model = train_dir / "model_final.pth"
    runner._run(
        "train",
        ["train", "--data", dataset, "--out", train_dir, "--config", "tiny-base", "--epochs", cfg.epochs,
         "--seed", cfg.seed, *cfg.train_args],
        done=model,
    )
    runner._run("plot", ["plot", train_dir], done=None)
    runner._run(
        "evaluate", ["evaluate", model, dataset, "--split", "val", "--out", eval_dir, "--short-side", EVAL_SHORT_SIDE,
                     "--threshold", EVAL_THRESHOLD, "--dedup", EVAL_DEDUP],
        done=eval_dir / "metrics.json",
    )
    export_fp16(model, Path(cfg.export))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    summary = {
        "stages": [s.__dict__ for s in runner.stages],
        "total_seconds": time.perf_counter() - t0,
        "peak_memory_mb": peak_memory_mb(),
        "export": str(cfg.export),
        "export_bytes": Path(cfg.export).stat().st_size,
        "metrics": metrics,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    pan = metrics["panoptic"]
    print(
        f"base model: {cfg.export} ({summary['export_bytes'] / 1e6:.1f} MB), "
        f"PQ {100 * pan['All']['pq']:.1f} (things {100 * pan['Things']['pq']:.1f}, "
        f"stuff {100 * pan['Stuff']['pq']:.1f}), {summary['total_seconds'] / 60:.0f} min"
    )
    return summary


def export_fp16(checkpoint: Path, target: Path) -> None:
    """Write the model of a training result as fp16 safetensors with its config, categories and
    inference settings (the recipe's, chosen on its val split: MODEL_CARD.md)."""
    from panoptic_detr import load_model
    from panoptic_detr.model.checkpoint import save_model
    from panoptic_detr.model.inference_defaults import InferenceDefaults

    if not checkpoint.exists():
        raise PanopticDetrError(f"{checkpoint}: no trained model to export")
    model = load_model(checkpoint)
    inference = InferenceDefaults(threshold=EVAL_THRESHOLD, dedup=EVAL_DEDUP, short_side=EVAL_SHORT_SIDE,
                                  max_size=1333, geometry="aligned")
    save_model(target, model, categories=model.categories, half=True, inference=inference)
