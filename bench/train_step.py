"""Seconds per training step: DETR-R50 detection model, batch 2 of 512x512, 5 objects each, CPU.

The step is the trainer's: forward (TrainStep: model + Hungarian matching), SetCriterion
with auxiliary losses, backward, gradient clipping at 0.1, AdamW (two lr groups) step.
Reference: the official DETR code takes about 2.0 s per such step on the project's 2-core
CPU machines.

    python bench/train_step.py [--steps 5] [--threads N] [--channels-last] [--unfolded] [--compare]
                               [--torch-dropout] [--official] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def make_batch(batch: int, size: int, objects: int, num_classes: int, seed: int = 0):
    from panoptic_detr.model.nested_tensor import nested_tensor_from_tensor_list

    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(3, size, size, generator=g) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        cxcy = torch.rand(objects, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(objects, 2, generator=g) * 0.3 + 0.05
        targets.append({
            "labels": torch.randint(1, num_classes, (objects,), generator=g),
            "boxes": torch.cat([cxcy, wh], 1),
        })
    return nested_tensor_from_tensor_list(images), targets


def _loadavg():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--objects", type=int, default=5)
    ap.add_argument("--model", default="r50")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels-last", action="store_true", help="backbone in channels_last memory format")
    ap.add_argument("--unfolded", action="store_true",
                    help="also time, interleaved, the same step with the frozen batch norms as separate passes "
                         "over the activations (the official DETR backbone), as a same-load reference")
    ap.add_argument("--compare", action="store_true",
                    help="also time, interleaved, the same step with the official trainer's optimizer "
                         "(torch's default AdamW: a per-tensor loop on CPU), as a same-load reference")
    ap.add_argument("--torch-dropout", action="store_true",
                    help="also time, interleaved, the same step with torch's F.dropout and nn.MultiheadAttention "
                         "(the official code's) instead of the cheap CPU dropout mask")
    ap.add_argument("--official", action="store_true",
                    help="also time, interleaved, the step with all of the official code's choices at once: "
                         "separate frozen BN passes, torch's dropout and attention, default AdamW")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # what the CLI does: keep freed tensor memory on the heap (no page faults per step)
        from panoptic_detr.utils.malloc import tune_malloc

        tune_malloc()
    except ImportError:
        pass

    from panoptic_detr.engine.criterion import SetCriterion, build_weight_dict
    from panoptic_detr.engine.matcher import HungarianMatcher
    from panoptic_detr.engine.optim import make_adamw, param_groups
    from panoptic_detr.engine.train_step import TrainStep
    from panoptic_detr.engine.train_config import OptimConfig
    from panoptic_detr.model.build import build_model

    torch.manual_seed(0)
    model = build_model(args.model).train()
    if args.channels_last:
        getattr(model, "detr", model).backbone[0].set_channels_last(True)
    cfg = model.config
    o = OptimConfig()
    optimizer = make_adamw(param_groups(model, o.lr, o.lr_backbone, o.weight_decay), o)
    matcher = HungarianMatcher(1, 5, 2)
    criterion = SetCriterion(cfg.num_classes, matcher, build_weight_dict(num_aux=cfg.dec_layers - 1),
                             eos_coef=0.1, losses=("labels", "boxes", "cardinality"))
    step_module = TrainStep(model, matcher)
    samples, targets = make_batch(args.batch, args.size, args.objects, cfg.num_classes)
    params = [p for p in model.parameters() if p.requires_grad]

    from panoptic_detr.model.build import set_speed_options

    # Variants timed interleaved with ours, so that all see the same machine load.
    # name -> (optimizer, batch norms folded into the convs[, the cheap dropout mask])
    variants = {"ours": (optimizer, True, True)}
    if args.compare:
        variants["official optimizer (default AdamW)"] = (torch.optim.AdamW(
            param_groups(model, o.lr, o.lr_backbone, o.weight_decay), lr=o.lr, weight_decay=o.weight_decay), True, True)
    if args.unfolded:
        variants["frozen BN as separate passes (official backbone)"] = (optimizer, False, True)
    if args.torch_dropout:
        variants["torch's dropout and attention (official)"] = (optimizer, True, False)
    if args.official:
        variants["all of the official choices"] = (torch.optim.AdamW(
            param_groups(model, o.lr, o.lr_backbone, o.weight_decay), lr=o.lr, weight_decay=o.weight_decay), False, False)

    def step(opt):
        outputs, indices = step_module(samples, targets)
        losses = criterion(outputs, targets, indices=indices)
        loss = criterion.weighted_total(losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()
        return float(loss.detach())

    times = {name: ([], []) for name in variants}

    def timed(name):
        opt, fold, fast_dropout = variants[name]
        set_speed_options(model, fold_frozen_bn=fold, fast_dropout=fast_dropout)
        t, c = time.perf_counter(), time.process_time()
        step(opt)
        times[name][0].append(time.perf_counter() - t)
        times[name][1].append(time.process_time() - c)

    for _ in range(args.warmup):
        for name in variants:
            timed(name)
    times = {name: ([], []) for name in variants}
    for _ in range(args.steps):
        for name in variants:
            timed(name)
    wall, cpu = times["ours"]
    result = {
        "bench": "train_step",
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "objects": args.objects,
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "steps": [round(t, 3) for t in wall],
        # CPU seconds of this process per step (all threads): on a busy shared machine wall
        # time overstates the cost; with one thread cpu time is close to the idle wall time
        "cpu_median_s": statistics.median(cpu),
        "load_avg_1min": _loadavg(),
        "references": {name: {"median_s": statistics.median(w), "min_s": min(w), "cpu_median_s": statistics.median(c),
                              "ratio_to_ours": statistics.median(w) / statistics.median(wall)}
                       for name, (w, c) in times.items() if name != "ours"},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"train step ({args.model}, batch {args.batch} x {args.size}x{args.size}, {args.objects} objects, "
              f"{result['threads']} threads{', channels_last' if args.channels_last else ''}): "
              f"median {result['median_s']:.3f} s, min {result['min_s']:.3f} s over {args.steps} steps "
              f"(official DETR: ~2.0 s); CPU time {result['cpu_median_s']:.2f} s/step, load average {result['load_avg_1min']}")
        for name, r in result["references"].items():
            print(f"same step, {name}: median {r['median_s']:.3f} s, min {r['min_s']:.3f} s, "
                  f"CPU time {r['cpu_median_s']:.2f} s/step: {r['ratio_to_ours']:.2f}x ours")


if __name__ == "__main__":
    main()
