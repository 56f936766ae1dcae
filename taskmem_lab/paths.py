"""Where things live on disk: the runs root and the response cache; names confined to a root."""

from __future__ import annotations

import os
import re
from pathlib import Path

from taskmem_lab.errors import ConfigError

_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


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


def safe_name(value: object, what: str) -> str:
    """`value` if it is one harmless path component under an output root, else a `ConfigError`.

    Names that become folders or files (stream ids, tags, benchmark video ids) must not climb out
    of their root: no `/` or `\\`, not `.` or `..`, no control characters, at most 200 characters.
    """
    text = str(value)
    if not text or text in (".", "..") or len(text) > 200 or _UNSAFE.search(text):
        raise ConfigError(
            f"{what} {text!r} cannot be used as a folder name: it must be one path component "
            "(no '/' or '\\', not '.' or '..', no control characters, 1-200 characters)"
        )
    return text
