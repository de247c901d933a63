"""`panoptic-detr plot RUN`: loss and PQ curves of a training run as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw the loss / PQ curves of a training run (its metrics.jsonl) to a PNG"

TERMS = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="training output folder (or its metrics.jsonl)")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN/curves.png)")


def plot_curves(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the curves of `run` (a folder with metrics.jsonl, or the file) to `out`; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from panoptic_detr.engine.metrics_log import read_metrics
    from panoptic_detr.errors import PanopticDetrError
    from panoptic_detr.utils.io import atomic_path

    run = Path(run)
    metrics_path = run if run.suffix == ".jsonl" else run / "metrics.jsonl"
    if not metrics_path.exists():
        raise PanopticDetrError(f"{metrics_path}: not found (is {run} a training output folder?)")
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not (train or epochs or evals):
        raise PanopticDetrError(f"{metrics_path}: no training records yet")
    out = Path(out) if out else (metrics_path.parent / "curves.png")

    has_pq = any(r.get("pq") is not None for r in evals)
    ncols = 3 if has_pq else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4), constrained_layout=True)
    ax = axes[0]
    src = train or epochs
    steps = [r["step"] for r in src]
    ax.plot(steps, [r.get("loss") for r in src], label="train loss", color="C0", lw=1.2)
    if epochs and train:
        ax.plot([r["step"] for r in epochs], [r.get("loss") for r in epochs], "o-", color="C0", ms=3, lw=0.8, alpha=0.6, label="train loss (epoch mean)")
    val = [r for r in evals if r.get("val_loss") is not None]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "s-", color="C3", ms=4, label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.set_title("total loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    positive = [v for r in src for v in [r.get("loss")] if v is not None]
    if positive and min(positive) > 0 and max(positive) / min(positive) > 20:
        ax.set_yscale("log")

    ax = axes[1]
    for i, term in enumerate(TERMS):
        vals = [(r["step"], r[term]) for r in src if r.get(term) is not None]
        if vals:
            ax.plot(*zip(*vals), label=term, color=f"C{i}", lw=1.0)
    ax.set_xlabel("step")
    ax.set_title("loss terms (unweighted)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    if has_pq:
        ax = axes[2]
        for key, label, color in (("pq", "PQ", "C0"), ("pq_things", "PQ things", "C1"), ("pq_stuff", "PQ stuff", "C2")):
            vals = [(r["epoch"], 100 * r[key]) for r in evals if r.get(key) is not None]
            if vals:
                ax.plot(*zip(*vals), "o-", label=label, color=color, ms=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("PQ (%)")
        ax.set_title("panoptic quality (val)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(str(metrics_path.parent.name), fontsize=10)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def run(args) -> int:
    path = plot_curves(args.run, args.out)
    print(path)
    return 0
