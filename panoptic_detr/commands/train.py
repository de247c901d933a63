"""`panoptic-detr train`: train DETR (boxes, masks or joint) on a prepared dataset."""

from __future__ import annotations

import argparse

HELP = "train DETR on a prepared dataset (resumes automatically; works under torchrun)"

EPILOG = """\
examples:
  panoptic-detr train --data data/site --out runs/site --config tiny --init base.safetensors
  panoptic-detr train --data data/site --out runs/boxes --config r50-panoptic --stage boxes --init detr-r50.pth
  panoptic-detr train --data data/site --out runs/masks --config r50-panoptic --stage masks --init runs/boxes/model_final.pth
  torchrun --nproc_per_node 8 -m panoptic_detr train --data coco --out runs/coco --config r50-panoptic
Re-running the same command on the same --out continues from its last checkpoint.
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--data", required=True, help="prepared dataset folder (from `panoptic-detr prepare`)")
    p.add_argument("--out", required=True, help="output folder: checkpoints, metrics.jsonl, model_final.pth")
    p.add_argument("--config", default="r50-panoptic", help="train preset (r50-panoptic, r50, tiny) or a YAML file")
    p.add_argument("--stage", choices=("boxes", "masks", "joint"), help="boxes: detection; masks: frozen DETR, train the mask head; joint: all")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint (official, HF, ours); the class head is adapted")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from OUT/checkpoint.pth (an error if there is none) or from CKPT")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in total")
    p.add_argument("--batch-size", type=int, help="images per process per step")
    p.add_argument("--workers", type=int, help="data loading processes per training process")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"), help="mixed precision on CUDA (default auto)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="CPU threads for torch in each process")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (for bit-identical CUDA runs; slower; CPU runs are already)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=5e-5 --set data.scales=[256,288]")


def build_config(args):
    from panoptic_detr.engine.train_config import load_train_config, parse_overrides

    overrides = parse_overrides(args.overrides)
    overrides["data_dir"] = str(args.data)
    overrides["out_dir"] = str(args.out)
    for key, value in (("stage", args.stage), ("init", args.init), ("epochs", args.epochs),
                       ("max_steps", args.max_steps), ("device", args.device), ("seed", args.seed), ("amp", args.amp)):
        if value is not None:
            overrides[key] = str(value) if key == "init" else value
    data = overrides.setdefault("data", {})
    if args.batch_size is not None:
        data["batch_size"] = args.batch_size
    if args.workers is not None:
        data["workers"] = args.workers
    if args.no_progress:
        overrides["progress"] = False
    if getattr(args, "deterministic", False):
        overrides["deterministic"] = True
    return load_train_config(args.config, overrides)


def run(args) -> int:
    from panoptic_detr.engine.train import train

    cfg = build_config(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train(cfg, resume=args.resume)
    return 0
