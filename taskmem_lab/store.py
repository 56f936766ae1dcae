"""Run directories: `runs/<video_id>/memory/<tag>/` with manifest, clip records and identities.

Floor 2. JSONL is written append + flush + fsync, one record per finished clip; everything else
is written to a temporary file and renamed over the target, so a killed process leaves either the
old or the new file, never half of one. A torn last JSONL line (a kill mid-write) is cut off when
the run is reopened.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from taskmem_lab.errors import StoreError
from taskmem_lab.schema import SCHEMA_VERSION, ClipRecord

MANIFEST = "manifest.json"
CLIPS = "clips.jsonl"
IDENTITIES = "identities.json"
# Manifest fields that must match for a run to be resumed rather than started anew.
IDENTITY_FIELDS = ("stream_id", "model", "params", "source", "prompts", "tasks", "perception")


def utc_now() -> str:
    """The current UTC time in ISO 8601 to the second, for manifests' `created` and `updated`."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of what wrote a run (taskmem_lab, Python, openai), recorded in its manifest."""
    import openai

    import taskmem_lab

    return {
        "taskmem_lab": taskmem_lab.__version__,
        "python": platform.python_version(),
        "openai": openai.__version__,
    }


def memory_dir(root: str | Path, video_id: str, tag: str) -> Path:
    return Path(root) / video_id / "memory" / tag


def perception_dir(root: str | Path, video_id: str, settings_hash: str) -> Path:
    return Path(root) / video_id / "perception" / settings_hash


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", fsync: bool = True) -> Iterator[IO[Any]]:
    """A temporary file beside `path` to write; on success it is flushed, fsynced (unless
    `fsync` is False) and renamed over `path`, on failure removed: a reader sees the old file or
    the new one, never half of one. `mode` is "w" (UTF-8 text) or "wb"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """`data` to `path` through `atomic_file`."""
    with atomic_file(path, "wb", fsync) as fh:
        fh.write(data)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """JSON (indented, UTF-8) to `path` through `atomic_file`."""
    with atomic_file(path) as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def cut_torn_tail(path: Path) -> None:
    """Drop an unterminated last line left by a process killed mid-write."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break  # torn tail: not a finished record
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise StoreError(f"{p}:{n} is not valid JSON: {exc}") from exc
    return rows


@dataclass
class RunDir:
    """One memory run on disk."""

    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def clips_path(self) -> Path:
        return self.path / CLIPS

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        if not self.exists():
            raise StoreError(f"not a run directory (no {MANIFEST}): {self.path}")
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def write_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, data)

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        data = {**self.manifest(), **changes}
        self.write_manifest(data)
        return data

    def records(self) -> list[ClipRecord]:
        """Every stored record, in write order (a retried clip appears more than once)."""
        return [ClipRecord.from_json(r) for r in read_jsonl(self.clips_path)]

    def clips(self) -> dict[int, ClipRecord]:
        """The latest record of each clip: an `ok` record wins over earlier failures."""
        latest: dict[int, ClipRecord] = {}
        for rec in self.records():
            if rec.ok or not latest.get(rec.clip, rec).ok:
                latest[rec.clip] = rec
        return dict(sorted(latest.items()))

    def finished(self) -> dict[int, ClipRecord]:
        return {k: r for k, r in self.clips().items() if r.ok}

    def append(self, record: ClipRecord) -> None:
        append_jsonl(self.clips_path, record.to_json())

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_json(self.path / name, data)


def open_run(path: str | Path, manifest: dict[str, Any]) -> RunDir:
    """Create a run, or reopen one made with the same inputs (resume); refuse a mismatch."""
    run = RunDir(Path(path))
    if run.exists():
        old = run.manifest()
        for key in IDENTITY_FIELDS:
            if old.get(key) != manifest.get(key):
                raise StoreError(
                    f"{run.path} already holds a run with a different {key!r}; "
                    "use another --tag, or delete the directory to start over"
                )
        cut_torn_tail(run.clips_path)
        run.update_manifest(status="running", updated=manifest.get("updated"))
        return run
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_manifest({"schema": SCHEMA_VERSION, **manifest, "status": "running"})
    return run
