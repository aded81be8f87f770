"""Where berth keeps what outlives a run (venv, mkosi caches, logs, probe verdicts)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$BERTH_CACHE, else $XDG_CACHE_HOME/berth, else ~/.cache/berth (as the Makefile sets it)."""
    base = os.environ.get("BERTH_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    ) / "berth"
    return Path(base)
