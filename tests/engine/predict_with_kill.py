"""`panoptic-detr predict` whose rank KILL_RANK dies by SIGKILL in the middle of writing
the line of its (KILL_AFTER + 1)-th image (a torn line, as a real kill can leave), for the
resume test:

    KILL_RANK=1 KILL_AFTER=2 python tests/engine/predict_with_kill.py [predict arguments]
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    from panoptic_detr.cli import main as cli_main
    from panoptic_detr.commands import _predict_output as po

    rank, after = int(os.environ.get("KILL_RANK", 0)), int(os.environ["KILL_AFTER"])
    real = po.PredictionsFolder.add
    count = [0]

    def add(self, index, *args, **kwargs):
        if int(os.environ.get("RANK", 0)) == rank and count[0] == after:
            self.part.write('{"index": %d, "image": {"id"' % index)  # torn: no newline
            self.part.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1
        return real(self, index, *args, **kwargs)

    po.PredictionsFolder.add = add
    return cli_main(["predict", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
