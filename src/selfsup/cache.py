"""Figures computed once per data source and reused by later runs: the baselines' evaluation.

Raw pixels and the backbone at random initialisation score the same on the same data, view
and probes whatever the method learned, so measuring them again in every run only costs
time. :class:`BaselineCache` keeps them in one JSON file per key, under ``$SELFSUP_CACHE``
(default ``~/.cache/selfsup``) in ``baselines/``. The key is a dict of everything the
figures depend on (the modality says what: ``Modality.baseline_key``), with a hash of this
package's source, so a change of code or data gives a new file rather than a stale figure.
Files are JSON only, written atomically; one that cannot be read is ignored and measured again.
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

__all__ = ["BaselineCache", "cache_root", "code_digest"]


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


class BaselineCache:
    """The baselines' figures for one key (a JSON-able dict)."""

    def __init__(self, key: dict[str, Any], root: Path | None = None) -> None:
        self.key = {"code": code_digest(), **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.path = (root or cache_root()) / "baselines" / f"{digest}.json"

    def read(self) -> dict[str, Any] | None:
        """``{"baselines": ..., "measured": "<UTC time>"}``, or None when absent, unreadable
        or written for another key."""
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("key") != json.loads(json.dumps(self.key, default=str)):
            return None
        return stored if isinstance(stored.get("baselines"), dict) else None

    def write(self, baselines: dict[str, Any]) -> None:
        measured = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        write_atomic(self.path, json.dumps({"key": self.key, "measured": measured, "baselines": baselines}, indent=2, default=str))
