"""The run directory's bookkeeping: the names of its files, the lock that keeps one process
in it at a time, ``status.json`` (running, finished, stopped or failed, and at which step)
and the listing of the runs in a folder."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from selfsup import config as config_module
from selfsup.config import ConfigError
from selfsup.files import write_atomic
from selfsup.train import checkpoint

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped_files.txt"
STATUS_FILE = "status.json"
LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run directory (``.lock``, released when the process ends, even
    by SIGKILL), held while a process trains or evaluates in it, so that two never write
    the same run."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = (self.run_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise ConfigError(f"{self.run_dir} is in use by another selfsup process (pid {holder}); "
                              "wait for it to end or choose another run directory") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    """``status.json``: ``state`` (running, finished, stopped, failed) with the step and the
    reason, written atomically so that a reader never sees half of it."""
    status = {"state": state, **fields, "pid": os.getpid(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(run_dir / STATUS_FILE, json.dumps(status, indent=2))


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's ``status.json``; a run still marked running whose process is gone is
    reported ``interrupted`` (killed, or its machine went down)."""
    try:
        status = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {"state": "finished" if (run_dir / SUMMARY_FILE).is_file() else "unknown"}
    if status.get("state") == "running" and not _alive(status.get("pid")):
        status["state"] = "interrupted"
    return status


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def last_step(run_dir: Path) -> int | None:
    """The step of the run's newest checkpoint (None when there is none to read)."""
    state = checkpoint.latest_state(run_dir / "checkpoints")
    return state.get("step") if state else None


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run directory below ``root`` (one level) with its status and headline figures."""
    rows = []
    for run_dir in sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file()) if root.is_dir() else []:
        status = read_status(run_dir)
        summary_path = run_dir / SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        config = config_module.load(run_dir / CONFIG_FILE)
        rows.append({
            "run": run_dir.name, "method": config.method["name"], "data": config.data.source,
            "state": status["state"], "step": status.get("step", last_step(run_dir)),
            "knn_top1": summary.get("knn_top1"), "reason": status.get("reason") or status.get("stopped_by"),
        })
    return rows
