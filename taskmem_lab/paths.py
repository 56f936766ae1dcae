"""Where things live on disk: the runs root and the response cache; names confined to a root."""

from __future__ import annotations

import hashlib
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


def slug(text: str, fallback: str = "x") -> str:
    """A directory-safe name: runs of characters other than `A-Za-z0-9._-` become one `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or fallback


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (never the whole file in memory); remembered per process
    by (path, size, mtime) so the perception and memory stages hash a video once."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


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
