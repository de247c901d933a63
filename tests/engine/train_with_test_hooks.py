"""`panoptic-detr train` with test hooks, for tests that run training in a subprocess.

    python tests/engine/train_with_test_hooks.py [train options] [--kill-at-step N] [--print-rank-checksum]

--kill-at-step N: rank 0 SIGKILLs its process as it is about to run step N (a crash at the
worst moment, for the exact-resumption test).
--print-rank-checksum: every process prints "[rank R/W] step S loss L checksum C" (its last
loss and the sum of its weights) to stderr at the end (for the torchrun test).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from panoptic_detr.engine.hooks import Hook


class KillAtStep(Hook):
    def __init__(self, step: int):
        self.step = step

    def before_step(self, trainer) -> None:
        if trainer.global_step + 1 == self.step and trainer.main:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


class PrintRankChecksum(Hook):
    def after_train(self, trainer) -> None:
        checksum = sum(float(p.detach().double().sum()) for p in trainer.model.parameters())
        print(f"[rank {trainer.rank}/{trainer.world}] step {trainer.global_step} "
              f"loss {trainer.last_logged.get('loss')!r} checksum {checksum!r}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from panoptic_detr.commands import train as command
    from panoptic_detr.engine.train import train
    from panoptic_detr.utils.malloc import tune_malloc

    parser = argparse.ArgumentParser()
    command.configure(parser)
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--print-rank-checksum", action="store_true")
    args = parser.parse_args(argv)
    hooks: list[Hook] = []
    if args.kill_at_step is not None:
        hooks.append(KillAtStep(args.kill_at_step))
    if args.print_rank_checksum:
        hooks.append(PrintRankChecksum())
    tune_malloc()  # as the CLI does
    cfg = command.build_config(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train(cfg, resume=args.resume, hooks=hooks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
