"""Where things live on disk: the runs root, the response cache, the source checkout;
names confined to a root (`safe_name`).

Notebooks and `taskmem reproduce` resolve repository paths (`benchmarks/...`, `notebooks/`,
`figures/`) through `repo_path` and their own inputs through `input_path`, never through the
kernel's working directory: a notebook opened from `notebooks/` in JupyterLab, or an executed copy
re-run where it lies, finds the same files as a run from the repository root.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def default_tag(model_spec: str) -> str:
    """A directory-safe tag from a model spec (`openai:gpt-4o#high` -> `openai_gpt-4o_high`)."""
    return slug(model_spec, "model")


# The fields that say a file is unchanged without reading it: a digest or a probed length
# recorded beside them is trusted while all three still match (a copy, an edit in place, a
# rewrite with the mtime set back, or a replacement by rename each change at least one of them).
STAMP_FIELDS = ("size", "mtime_ns", "inode")

_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_stamp(path: str | Path) -> dict[str, int]:
    """A file's `size`, `mtime_ns` and `inode` (see `STAMP_FIELDS`), from one `stat`."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def stamp_matches(path: str | Path, recorded: Mapping[str, Any]) -> bool:
    """Whether `recorded` holds every stamp field and they all equal the file's current ones."""
    try:
        now = file_stamp(path)
    except OSError:
        return False
    return all(type(recorded.get(k)) is int and recorded.get(k) == now[k] for k in STAMP_FIELDS)


def _digest_key(path: str | Path, stamp: Mapping[str, int]) -> tuple[str, int, int, int]:
    # abspath, not resolve: no syscall per path component (a week has 5,000 files); a file
    # reached through two links is only hashed twice
    return (os.path.abspath(path), stamp["size"], stamp["mtime_ns"], stamp["inode"])


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (never the whole file in memory); remembered per process
    by (path, size, mtime_ns, inode), and seeded from stored runs by `remember_sha256`, so a
    file is read again only when one of them changes."""
    key = _digest_key(path, file_stamp(path))
    if key not in _DIGESTS:
        _DIGESTS[key] = _read_sha256(path, chunk)
    return _DIGESTS[key]


def _read_sha256(path: str | Path, chunk: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def remember_sha256(path: str | Path, recorded: Mapping[str, Any]) -> bool:
    """Take `recorded["sha256"]` as the file's digest if its stamp (`STAMP_FIELDS`) still
    matches the file; returns whether it did. A record without a stamp (an older manifest) or
    with a stale one is ignored, and the file is hashed when next asked."""
    digest = recorded.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or not stamp_matches(path, recorded):
        return False
    _DIGESTS[_digest_key(path, {k: int(recorded[k]) for k in STAMP_FIELDS})] = digest
    return True


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


def repo_root() -> Path | None:
    """The source checkout holding this package (None for an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def repo_path(relative: str | Path) -> Path:
    """A path inside the source checkout (`benchmarks/paper_results.csv`); absolute paths pass.

    Raises ConfigError when the package is not a source checkout, since the notebooks, the
    benchmark samples and the paper's table ship only with the repository.
    """
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    root = repo_root()
    if root is None:
        raise ConfigError(
            f"{relative} lives in the taskmem_lab repository, and this installation is not a "
            "source checkout: clone the repository and install it with `pip install -e .`"
        )
    return root / path


def input_path(path: str | Path, what: str) -> Path:
    """An existing input file or folder, absolute: as given (absolute, or relative to the working
    directory), else relative to the repository root. A missing one is an error naming it."""
    given = Path(path).expanduser()
    candidates = [given]
    root = repo_root()
    if not given.is_absolute() and root is not None:
        candidates.append(root / given)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = " or ".join(str(c.absolute()) for c in candidates)
    raise ConfigError(f"{what} not found: {path} (looked for {tried})")


def output_path(path: str | Path) -> Path:
    """An output folder, absolute: relative paths are taken against the repository root in a
    source checkout (so a notebook run from `notebooks/` writes to `<repo>/runs`, never inside
    `notebooks/`), else against the working directory."""
    given = Path(path).expanduser()
    if given.is_absolute():
        return given
    root = repo_root()
    return (root / given) if root is not None else given.resolve()
