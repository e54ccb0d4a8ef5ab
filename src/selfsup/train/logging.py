"""Run logging: metrics.jsonl, TensorBoard event files and console messages (rank 0 only)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from selfsup import distributed

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """Appends one JSON record per logged step to ``metrics.jsonl`` and mirrors scalars to
    TensorBoard. On resume from step s, records after s (written by the interrupted run,
    and about to be produced again) are dropped so the files read as one run."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.enabled = distributed.is_main_process()
        self.path = run_dir / METRICS_FILE
        self.writer = None
        if not self.enabled:
            return
        if resume_step is not None:
            _truncate_after(self.path, resume_step)
        from torch.utils.tensorboard import (
            SummaryWriter,  # imported here: it is slow to import
        )

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        self._file = self.path.open("a")

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, "time": round(time.time(), 3), **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def message(self, text: str) -> None:
        """A line for the person watching, written above the progress bar."""
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self.writer.close()


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
