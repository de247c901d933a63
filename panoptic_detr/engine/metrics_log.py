"""`<out>/metrics.jsonl`: one JSON record per line, appended as training goes.

Records have a `kind`:
- `"train"` every `log_every` steps: `epoch`, `step` (global optimizer steps so far),
  `lr`, `loss` (weighted total) and every loss term / logged extra, averaged over the
  steps since the previous record and over processes, `images_per_s`, `time`;
- `"epoch"` at the end of each epoch: the same averages over the epoch, `epoch_time`;
- `"final"` at the end of the run: `epoch`, `step`, `best_pq`, `time`.

A resumed run drops the records after its checkpoint's step and continues the running
sums saved in it: a run killed at any moment and re-run writes the same records as an
uninterrupted one (timings aside: `images_per_s`, `epoch_time`, `time`).
- `"eval"` after an evaluation: `epoch`, `step`, `val_loss` (and terms prefixed `val_`),
  and with PQ: `pq`, `sq`, `rq`, `pq_things`, `pq_stuff` (fractions, as pq_compute) plus
  `bbox_ap` when evaluation reports it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

from panoptic_detr.utils.io import write_text


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLog:
    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({k: _clean(v) for k, v in record.items()})
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()

    def truncate_after(self, step: int, keep_final: bool = False) -> int:
        """Drop the records of steps after `step` (written before a crash, redone now), a torn
        last line, and the `final` record unless `keep_final` (the run continues: a new one
        comes at its end). Returns how many records were dropped; the file is rewritten
        (atomically) only when something goes."""
        if not self.enabled or not self.path.exists():
            return 0
        lines = [l for l in self.path.read_text().splitlines() if l.strip()]
        records = list(iter_metrics(self.path))
        kept = [r for r in records
                if int(r.get("step", 0)) <= step and (keep_final or r.get("kind") != "final")]
        if len(kept) < len(lines):
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return len(records) - len(kept)

    def has_final(self) -> bool:
        return self.enabled and any(r.get("kind") == "final" for r in iter_metrics(self.path))


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl (a torn last line is skipped)."""
    return list(iter_metrics(path))


def iter_metrics(path: str | Path) -> Iterator[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class Averager:
    """Running means of scalar values since the last `reset`; its running sums go into
    training checkpoints (`state_dict`), so a resumed run logs the same means."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.images = 0

    def update(self, values: dict[str, float], images: int = 0) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count, "images": self.images}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {str(k): float(v) for k, v in state["sums"].items()}
        self.count, self.images = int(state["count"]), int(state["images"])
