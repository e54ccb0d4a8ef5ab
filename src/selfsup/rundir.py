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


# The lock files this process holds. A forked child (a DataLoader worker) closes its copies,
# so that the lock goes with this process: killed, it is free at once, not when the last
# orphaned worker notices.
_HELD_LOCKS: set = set()


def _release_in_child() -> None:
    for file in _HELD_LOCKS:
        file.close()
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_release_in_child)


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
        _HELD_LOCKS.add(self._file)
        return self

    def __exit__(self, *exc) -> None:
        _HELD_LOCKS.discard(self._file)
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


# The columns of the listing of runs: (row key, header). Every column can be sorted and filtered by.
RUN_COLUMNS = (
    ("run", "run"), ("method", "method"), ("data", "data"), ("budget", "budget"), ("state", "state"), ("step", "step"),
    ("knn_top1", "kNN"), ("fewshot_10", "10-shot"), ("energy_auc", "energy AUC"), ("collapsed", "collapsed"), ("reason", "why"),
)
# Other names a user may give a column (compared lower case, without spaces, hyphens or underscores).
_COLUMN_ALIASES = {"knn": "knn_top1", "10shot": "fewshot_10", "fewshot": "fewshot_10", "auc": "energy_auc",
                   "energy": "energy_auc", "status": "state", "collapse": "collapsed", "name": "run"}


def column_key(name: str) -> str:
    """The row key of the column a user names: a key (``knn_top1``), a header (``10-shot``,
    ``energy AUC``) or a short name (``knn``, ``auc``), in any case."""
    wanted = _squash(name)
    for key, header in RUN_COLUMNS:
        if wanted in (_squash(key), _squash(header)):
            return key
    if wanted in _COLUMN_ALIASES:
        return _COLUMN_ALIASES[wanted]
    raise ConfigError(f"no column {name!r} in the listing of runs; choose from {', '.join(_squash(h) for _, h in RUN_COLUMNS)}")


def _squash(name: str) -> str:
    return "".join(c for c in name.lower() if c not in " -_")


def list_runs(root: Path, sort: str | None = None, where: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every run directory below ``root`` (one level: a folder with a ``config.yaml``), one
    row each with the keys of :data:`RUN_COLUMNS`: what ran (method, data, budget: the
    ``train.budget`` and/or epochs), how far it got (state, step, and why it stopped or
    failed) and how good it is (kNN and 10-shot top-1, energy AUC, collapsed ``yes``/``no``);
    None where a run has no such value (not evaluated yet, or its file is unreadable).

    ``sort`` names a column (:func:`column_key`): numbers largest first, text in alphabetical
    order, missing values last; ties keep the order of the run names. ``where`` keeps the
    rows whose columns equal the given text exactly (``{"method": "simclr", "state":
    "finished"}``; a missing value reads ``-``)."""
    run_dirs = sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file()) if root.is_dir() else []
    rows = [_run_row(run_dir) for run_dir in run_dirs]
    for name, value in (where or {}).items():
        key = column_key(name)
        rows = [row for row in rows if _as_text(row[key]) == value]
    if sort is not None:
        rows = _sorted_by(rows, column_key(sort))
    return rows


def parse_where(conditions: list[str]) -> dict[str, str]:
    """``["method=simclr", "state=finished"]`` as ``{"method": "simclr", "state": "finished"}``
    (the filter of :func:`list_runs`; columns checked there)."""
    where = {}
    for condition in conditions:
        column, sep, value = condition.partition("=")
        if not sep or not column.strip():
            raise ConfigError(f"filter {condition!r} is not column=value (e.g. method=simclr, state=finished)")
        where[column.strip()] = value
    return where


# Reasons longer than this are cut in the printed listing (status.json keeps them whole).
_LISTED_REASON_CHARS = 40


def format_runs(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`list_runs` as the table ``selfsup runs`` prints: one line per run,
    accuracies in percent, the energy AUC to three decimals, ``-`` where a value is missing."""
    from selfsup.report import format_table

    def cell(key: str, value: Any) -> Any:
        if value is None:
            return None
        if key in ("knn_top1", "fewshot_10"):
            return f"{100 * value:.1f}%"
        if key == "energy_auc":
            return f"{value:.3f}"
        if key == "reason" and len(value) > _LISTED_REASON_CHARS:
            return value[: _LISTED_REASON_CHARS - 3] + "..."
        return value

    keys = [key for key, _ in RUN_COLUMNS]
    left = tuple(i for i, key in enumerate(keys) if key in ("run", "method", "data", "budget", "state", "collapsed", "reason"))
    return format_table([header for _, header in RUN_COLUMNS], [[cell(key, row[key]) for key in keys] for row in rows], left=left)


def _run_row(run_dir: Path) -> dict[str, Any]:
    status = read_status(run_dir)
    row: dict[str, Any] = {key: None for key, _ in RUN_COLUMNS}
    problems = []
    try:
        config = config_module.load(run_dir / CONFIG_FILE)
        row.update(method=config.method.get("name"), data=config.data.source, budget=_budget(config.train.epochs, config.train.budget))
    except ConfigError as error:  # one damaged run must not hide the others
        problems.append(str(error))
    try:
        summary_path = run_dir / SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if not isinstance(summary, dict):
            raise ValueError(f"a JSON {type(summary).__name__}, not an object")
    except (OSError, ValueError) as error:
        summary = {}
        problems.append(f"{SUMMARY_FILE} is unreadable: {error}")
    collapse = summary.get("collapse") or {}
    row.update(
        run=run_dir.name, state=status["state"], step=status["step"] if status.get("step") is not None else last_step(run_dir),
        knn_top1=summary.get("knn_top1"), fewshot_10=(summary.get("fewshot") or {}).get("10"), energy_auc=summary.get("energy_auc"),
        collapsed=None if "collapsed" not in collapse else ("yes" if collapse["collapsed"] else "no"),
        reason="; ".join(filter(None, [_first_line(status.get("reason") or status.get("stopped_by")), *problems])) or None,
    )
    return row


def _first_line(text: str | None) -> str | None:
    """A reason fit for one line of the listing (an exception's message can run to many; the
    whole of it stays in ``status.json``)."""
    lines = str(text or "").strip().splitlines()
    return lines[0].strip() if lines else None


def _budget(epochs: int | None, budget: str | None) -> str | None:
    """What bounds the training: ``100 epochs``, ``15m``, or both (whichever ends it first)."""
    parts = [f"{epochs} epoch{'s' if epochs != 1 else ''}" if epochs is not None else None, budget]
    return ", ".join(part for part in parts if part) or None


def _as_text(value: Any) -> str:
    return "-" if value is None else str(value)


def _sorted_by(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Numbers largest first, then text from a to z, then the rows without a value."""
    def order(row: dict[str, Any]) -> tuple:
        value = row[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, -value, "")
        if value is None:
            return (2, 0, "")
        return (1, 0, str(value).lower())

    return sorted(rows, key=order)
