"""What is computed once per data source and reused by later runs: the baselines'
evaluation, a corpus parsed from source files.

Raw pixels and the backbone at random initialisation score the same on the same data, view
and probes whatever the method learned, so measuring them again in every run only costs
time; the standard library's docstrings are the same until Python changes. Each is kept in
one JSON file per key under ``$SELFSUP_CACHE`` (default ``~/.cache/selfsup``), in a folder
per kind (:class:`BaselineCache`: ``baselines/``; :class:`CorpusCache`: ``corpora/``). The
key is a dict of everything the contents depend on (for baselines the modality says what:
``Modality.baseline_key``), with a hash of this package's source, so a change of code or
data gives a new file rather than a stale one. Files are JSON only, written atomically; one
that cannot be read is ignored and computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import selfsup
from selfsup.files import write_atomic

__all__ = ["BaselineCache", "CorpusCache", "cache_root", "code_digest"]


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of every Python file of the package (a version string stays the same while the
    code under it changes)."""
    digest = hashlib.sha256()
    package = Path(selfsup.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_root() -> Path:
    """``$SELFSUP_CACHE``, else ``~/.cache/selfsup``."""
    return Path(os.environ.get("SELFSUP_CACHE") or Path.home() / ".cache" / "selfsup").expanduser()


class _KeyedFile:
    """One JSON file ``{"key", "measured", <payload>}`` under ``folder``, named by a hash of the key."""

    folder: str
    payload: str

    def __init__(self, key: dict[str, Any], root: Path | None = None) -> None:
        self.key = {"code": code_digest(), **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.path = (root or cache_root()) / self.folder / f"{digest}.json"

    def _read(self) -> dict[str, Any] | None:
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("key") != json.loads(json.dumps(self.key, default=str)):
            return None
        return stored if isinstance(stored.get(self.payload), dict) else None

    def _write(self, payload: dict[str, Any]) -> None:
        written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        write_atomic(self.path, json.dumps({"key": self.key, "measured": written, self.payload: payload}, indent=2, default=str))


class BaselineCache(_KeyedFile):
    """The baselines' figures for one key (a JSON-able dict)."""

    folder, payload = "baselines", "baselines"

    def read(self) -> dict[str, Any] | None:
        """``{"baselines": ..., "measured": "<UTC time>"}``, or None when absent, unreadable
        or written for another key."""
        return self._read()

    def write(self, baselines: dict[str, Any]) -> None:
        self._write(baselines)


class CorpusCache(_KeyedFile):
    """A corpus for one key: the fields of a ``TextCorpus`` as JSON."""

    folder, payload = "corpora", "corpus"

    def read(self) -> dict[str, Any] | None:
        """The stored corpus fields, or None when absent, unreadable or written for another key."""
        stored = self._read()
        return stored["corpus"] if stored is not None else None

    def write(self, corpus: dict[str, Any]) -> None:
        self._write(corpus)
