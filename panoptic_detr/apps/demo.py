"""The demo: the whole real workflow on synthetic construction scenes, stage by stage.

Each stage runs the same `panoptic-detr` command a user would type (printed before it
runs), so the demo doubles as a worked example. A stage whose output is complete is
skipped on a re-run (training resumes on its own) unless `fresh` is set.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from panoptic_detr.data.prepared import PreparedDataset
from panoptic_detr.errors import PanopticDetrError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
BASE_MODEL = WEIGHTS / "base-tiny.safetensors"
# The `tiny` recipe evaluates at short side 288 (its data.eval_size); the commands' default
# of 800 would upscale the 256-px scenes far beyond what the model was trained on.
EVAL_SHORT_SIDE = 288
# A query's score to make a segment. The official 0.85 suits a model trained for 500
# epochs; the tiny models, trained for minutes, are less sure of right answers (on the base
# model's own val split PQ is far higher at this threshold: see MODEL_CARD.md), and `tiny`'s
# train preset evaluates with it too.
EVAL_THRESHOLD = 0.4
# Duplicate suppression (`panoptic_inference`'s `dedup`): the tiny models often fire two or
# three queries on one object, and each fragment is a false positive. Chosen, with the
# threshold, on the base model's val split (MODEL_CARD.md), not on the demo's.
EVAL_DEDUP = 0.5
# The demo passes none of these to its commands: the checkpoints carry them
# (`model.inference_defaults`): the base model these values (`make base-model` writes them),
# the trained model its train config's eval settings (`tiny`: 0.4, 0.5, 288; max size 480,
# above the 360 px long side of the demo's scenes at 288).


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    images: int = 240
    size: str = "256x320"
    seed: int = 0
    # 10, not more: PQ 49.6 / 54.6 / 55.3 at epochs 5 / 10 / 12 of a 12-epoch run, and the
    # two epochs saved (~100 s) keep the whole demo inside 15 minutes on a slower machine
    epochs: int = 10
    train_config: str = "tiny"
    from_scratch: bool = False
    fresh: bool = False
    base_model: Path = BASE_MODEL
    threads: int | None = None
    extra_train_args: list[str] = field(default_factory=list)
    # per-class exports that label only their folder's class (`synth --partial-labels`), as
    # real exports are, trained with `loss.partial_labels` and scored on the full truth
    # (README, "Partial labels": PQ 52.0 on the full truth vs 52.4 with the standard loss)
    partial_labels: bool = True


@dataclass
class StageResult:
    name: str
    seconds: float
    skipped: bool
    command: str


class Demo:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.stages: list[StageResult] = []

    # Paths of each stage's output.
    @property
    def raw(self) -> Path:
        return self.out / "raw"

    @property
    def dataset(self) -> Path:
        return self.out / "dataset"

    @property
    def train_dir(self) -> Path:
        return self.out / "train"

    @property
    def model_path(self) -> Path:
        return self.train_dir / "model_final.pth"

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"

    @property
    def predict_dir(self) -> Path:
        return self.out / "predict"

    @property
    def explain_dir(self) -> Path:
        return self.out / "explain"

    def _run(self, name: str, argv: list[str], done: Path | None, allow_codes=(0,)) -> None:
        from panoptic_detr.cli import main as cli_main

        command = "panoptic-detr " + " ".join(str(a) for a in argv)
        if done is not None and done.exists() and not self.cfg.fresh:
            print(f"[demo] {name}: done already ({done}), skipped")
            self.stages.append(StageResult(name, 0.0, True, command))
            return
        print(f"\n[demo] {name}: {command}", flush=True)
        t0 = time.perf_counter()
        code = cli_main([str(a) for a in argv])
        seconds = time.perf_counter() - t0
        if code not in allow_codes:
            raise PanopticDetrError(f"demo stage '{name}' failed (exit code {code}): {command}")
        print(f"[demo] {name}: {seconds:.1f} s", flush=True)
        self.stages.append(StageResult(name, seconds, False, command))

    def _synth(self) -> None:
        """The scenes; a folder made with the other kind of exports needs `fresh`."""
        cfg = self.cfg
        labels = "partial-labels" if cfg.partial_labels else "full-labels"
        done = self.raw / "DONE"
        if done.exists() and not cfg.fresh and (done.read_text().strip() or "full-labels") != labels:
            raise PanopticDetrError(f"{self.out}: made with other exports than {labels}; add --fresh to start over")
        self._run(
            "synth",
            ["synth", self.raw, "--images", cfg.images, "--seed", cfg.seed, "--classes", "demo",
             "--size", cfg.size, "--overwrite"] + (["--partial-labels"] if cfg.partial_labels else []),
            done=done,
        )
        done.write_text(labels + "\n")

    def run(self) -> dict:
        cfg = self.cfg
        if cfg.fresh and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        use_base = not cfg.from_scratch
        if use_base and not Path(cfg.base_model).exists():
            raise PanopticDetrError(
                f"{cfg.base_model}: base model not found; run `make base-model` or pass --from-scratch"
            )
        t_start = time.perf_counter()

        self._synth()

        prepare = ["prepare", "--class-map", RESOURCES / "demo-class-map.yaml", "--out", self.dataset,
                   "--things", self.raw / "things",
                   "--stuff-truth", self.raw / "stuff" / "panoptic.json", self.raw / "stuff" / "panoptic",
                   "--seed", cfg.seed, "--overwrite"]
        if use_base:
            # the teacher sees the scenes at their own size; threshold and dedup are the base model's
            prepare += ["--stuff-from", cfg.base_model, "--teacher-short-side", cfg.size.split("x")[0]]
        self._run("prepare", prepare, done=PreparedDataset(self.dataset).dataset_yaml)

        train = ["train", "--data", self.dataset, "--out", self.train_dir, "--config", cfg.train_config,
                 "--stage", "joint", "--epochs", cfg.epochs, "--seed", cfg.seed]
        if use_base:
            train += ["--init", cfg.base_model]
        if cfg.partial_labels:
            train += ["--set", "loss.partial_labels=true"]
        train += list(cfg.extra_train_args)
        self._run("train", train, done=self.model_path)

        self._run(
            "plot", ["plot", self.train_dir], done=None,
        )
        self._run(
            "evaluate",
            ["evaluate", self.model_path, self.dataset, "--split", "val", "--out", self.eval_dir]
            # partial labels: scored on the full truth (every object labelled), not the exports
            + (["--ground-truth", self.raw / "truth" / "panoptic.json", self.raw / "truth" / "panoptic"]
               if cfg.partial_labels else []),
            done=self.eval_dir / "metrics.json",
        )
        val_images = PreparedDataset(self.dataset).split("val").images_dir
        self._run(
            "predict",
            ["predict", self.model_path, val_images, "--out", self.predict_dir, "--overwrite"],
            done=self.predict_dir / "predictions.json",
        )
        example = sorted(val_images.iterdir())[0]
        self._run(
            "explain",
            ["explain", self.model_path, example, "--out", self.explain_dir, "--overwrite"],
            done=self.explain_dir / "explorer.html",  # the report links it (older runs: explain again)
        )

        total = time.perf_counter() - t_start
        metrics = json.loads((self.eval_dir / "metrics.json").read_text())
        summary = {
            "started_from": "base model " + str(cfg.base_model) if use_base else "scratch",
            "stages": [s.__dict__ for s in self.stages],
            "total_seconds": total,
            "peak_memory_mb": peak_memory_mb(),
            "metrics": metrics,
        }
        from panoptic_detr.viz.report import write_report

        report = write_report(self.out, summary)
        print_summary(summary, report)
        return summary


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def print_summary(summary: dict, report: Path) -> None:
    print("\n[demo] stage times:")
    for s in summary["stages"]:
        took = "skipped" if s["skipped"] else f"{s['seconds']:7.1f} s"
        print(f"  {s['name']:<10} {took}")
    print(f"  {'total':<10} {summary['total_seconds']:7.1f} s   peak memory {summary['peak_memory_mb']:.0f} MB")
    pan = summary["metrics"]["panoptic"]
    print("\n          PQ     SQ     RQ      n")
    for k in ("All", "Things", "Stuff"):
        r = pan[k]
        print(f"{k:<8}{100 * r['pq']:6.1f} {100 * r['sq']:6.1f} {100 * r['rq']:6.1f} {r['n']:6d}")
    if "bbox" in summary["metrics"]:
        print(f"box AP {100 * summary['metrics']['bbox'].get('AP', 0):.1f}")
    print(f"\nreport: {report}")
    sys.stdout.flush()
