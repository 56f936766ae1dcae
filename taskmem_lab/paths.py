"""Where things live on disk: the runs root and the response cache."""

from __future__ import annotations

import os
from pathlib import Path


def runs_root() -> Path:
    """Default output root (`runs/` in the working directory, or `TASKMEM_RUNS`)."""
    return Path(os.environ.get("TASKMEM_RUNS", "runs"))


def cache_path() -> Path:
    """SQLite response cache (`TASKMEM_CACHE`, else `~/.cache/taskmem_lab/responses.sqlite`)."""
    explicit = os.environ.get("TASKMEM_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "taskmem_lab" / "responses.sqlite"
