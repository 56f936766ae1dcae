"""Where things live on disk: the runs root and the response cache."""

from __future__ import annotations

import hashlib
import os
import re
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


def slug(text: str, fallback: str = "x") -> str:
    """A directory-safe name: runs of characters other than `A-Za-z0-9._-` become one `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or fallback


def default_tag(model_spec: str) -> str:
    """A directory-safe tag from a model spec (`openai:gpt-4o#high` -> `openai_gpt-4o_high`)."""
    return slug(model_spec, "model")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
