"""Run directories: `runs/<video_id>/memory/<tag>/` with manifest, clip records and identities.

Floor 2. JSONL is written append + flush + fsync, one record per finished clip; everything else
is written to a temporary file and renamed over the target, so a killed process leaves either the
old or the new file, never half of one. A torn last JSONL line (a kill mid-write) is cut off when
the run is reopened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import platform
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from taskmem_lab.errors import LockedError, StoreError
from taskmem_lab.paths import remember_sha256, safe_name
from taskmem_lab.schema import SCHEMA_VERSION, ClipRecord

MANIFEST = "manifest.json"
CLIPS = "clips.jsonl"
IDENTITIES = "identities.json"
# Manifest fields that must match for a run to be resumed rather than started anew.
IDENTITY_FIELDS = ("stream_id", "model", "params", "source", "prompts", "tasks", "perception")
# Fields that name the model; `allow_model_change` lets a resumed run switch them (recorded).
MODEL_FIELDS = ("model", "endpoint")
LOCK_FILE = ".lock"
log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, RecursionError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


_UMASK_LOCK = threading.Lock()


def honour_umask(fd: int, mode: int = 0o666) -> None:
    """Give a file made by `tempfile.mkstemp` (always 0600) the mode a plain `open` would."""
    os.fchmod(fd, mode & ~current_umask())


def utc_now() -> str:
    """The current UTC time in ISO 8601 to the second, for manifests' `created` and `updated`."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of what wrote a run (taskmem_lab, Python, openai), recorded in its manifest.

    openai's comes from its installed metadata: importing the SDK costs seconds, and a resume
    that makes no call should not pay it."""
    from importlib import metadata

    import taskmem_lab

    try:
        openai_version = metadata.version("openai")
    except metadata.PackageNotFoundError:
        openai_version = "not installed"
    return {
        "taskmem_lab": taskmem_lab.__version__,
        "python": platform.python_version(),
        "openai": openai_version,
    }


class FolderLock:
    """An exclusive `fcntl.flock` on `<folder>/.lock`: one writer per run or perception folder.

    The file names the holder (pid, host, start time) so a refused process can say who holds it.
    The kernel drops the lock when its holder dies, however it dies, so a lock left by a killed
    process is simply taken over (and the take-over is logged); no pid guessing is involved.
    """

    def __init__(self, folder: str | Path, what: str = "run") -> None:
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / LOCK_FILE
        self._fh: Any = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> FolderLock:
        """Take the lock or raise `LockedError` naming the holder; never waits."""
        if self._fh is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        try:  # never through a link: the holder note would overwrite the link's target
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                refuse_links(self.folder, self.what)
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        fh = open(fd, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockedError(
                    f"{self.folder} is in use by another {self.what} ({_describe(holder)}); "
                    "wait for it to finish or stop it, then run again"
                ) from None
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        fh.seek(0)
        previous = fh.read().strip()
        if previous:
            log.warning(
                "%s: took over the lock of a process that ended without releasing it (%s)",
                self.folder,
                _describe(previous),
            )
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now()})
        )
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Clear the holder note and drop the lock (a clean exit leaves an empty lock file)."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
            fh.flush()
        fh.close()  # closing the descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(holder: str) -> str:
    try:
        data = json.loads(holder)
        return f"pid {data['pid']} on {data['host']}, started {data['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def locked(folder: str | Path, what: str = "run") -> Iterator[FolderLock]:
    """`with locked(run_folder): ...` holds the folder's lock for the block."""
    lock = FolderLock(folder, what).acquire()
    try:
        yield lock
    finally:
        lock.release()


def memory_dir(root: str | Path, video_id: str, tag: str) -> Path:
    """`root/<video_id>/memory/<tag>`; both names must be single path components (`safe_name`)."""
    return Path(root) / safe_name(video_id, "video id") / "memory" / safe_name(tag, "tag")


def perception_dir(root: str | Path, video_id: str, settings_hash: str) -> Path:
    """`root/<video_id>/perception/<hash>`, the video id confined to the root."""
    return Path(root) / safe_name(video_id, "video id") / "perception" / settings_hash


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An `OSError` raised inside that names no file (a write on a full disk: `ENOSPC` comes
    from `write()`, which knows no path) is raised again naming `path`."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", fsync: bool = True) -> Iterator[IO[Any]]:
    """A temporary file beside `path` to write; on success it is flushed, fsynced (unless
    `fsync` is False) and renamed over `path`, on failure removed: a reader sees the old file or
    the new one, never half of one. `mode` is "w" (UTF-8 text) or "wb"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        honour_umask(fd)
        encoding = None if "b" in mode else "utf-8"
        with naming(path), os.fdopen(fd, mode, encoding=encoding) as fh:
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
    with naming(path), open(path, "a", encoding="utf-8") as fh:
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
    """The finished records of a JSONL file; a line that is not UTF-8 JSON is a `StoreError`
    naming it (a torn last line, left by a kill mid-write, is skipped)."""
    return [row for _, row in numbered_jsonl(path)]


def numbered_jsonl(path: str | Path, last_line: bool = False) -> list[tuple[int, Any]]:
    """(line number, record) of each non-blank line of a JSONL file, numbered as an editor
    shows them. A last line without its newline is a torn record and skipped, unless
    `last_line` (a file written by hand, whose last line need not end in a newline)."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    with open(p, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n") and not last_line:
                break  # torn tail: not a finished record
            if raw.strip():
                try:
                    rows.append((n, json.loads(raw.decode("utf-8"))))
                except UnicodeDecodeError as exc:
                    raise StoreError(f"{p}:{n} is not UTF-8 text: {exc}") from None
                except ValueError as exc:  # JSONDecodeError, or an integer too long to read
                    raise StoreError(f"{p}:{n} is not valid JSON: {exc}") from None
                except RecursionError:
                    raise StoreError(f"{p}:{n} is nested too deeply to be a record") from None
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
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.manifest_path} is not a readable manifest: {exc}") from exc
        except RecursionError:
            raise StoreError(
                f"{self.manifest_path} is nested too deeply to be a manifest"
            ) from None
        if not isinstance(data, dict):
            raise StoreError(f"{self.manifest_path} is not a manifest (not a JSON object)")
        return data

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
        return {k: ClipRecord.from_json(r) for k, r in self.latest_rows().items()}

    def latest_rows(self) -> dict[int, dict[str, Any]]:
        """`clips()` as the stored JSON objects, in clip order: what a reader that needs a few
        fields of a week of clips reads (16,000 records) without building every record."""
        latest: dict[int, dict[str, Any]] = {}
        for row in read_jsonl(self.clips_path):
            ok = row.get("status") == "ok"
            if ok or latest.get(row["clip"], row).get("status") != "ok":
                latest[row["clip"]] = row
        return dict(sorted(latest.items()))

    def finished(self) -> dict[int, ClipRecord]:
        return {k: r for k, r in self.clips().items() if r.ok}

    def append(self, record: ClipRecord) -> None:
        append_jsonl(self.clips_path, record.to_json())

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_json(self.path / name, data)


def mark_stopped(manifest_path: str | Path, status: str = "failed") -> None:
    """Best effort: a manifest left `running` by a process that stopped on an error says so.

    Never raises (a full or read-only disk may refuse this write too; the records are what count).
    """
    p = Path(manifest_path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("status") == "running":
            atomic_write_json(p, {**data, "status": status, "updated": utc_now()})
    except (OSError, ValueError, RecursionError):
        pass


def _difference(key: str, old: Any, new: Any) -> str:
    """What differs in identity field `key`, in words (which source file, which endpoint field)."""
    if key == "source" and isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return f"the stream had {len(old)} file(s), now {len(new)}"
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            for field_name in ("sha256", "size", "start", "duration", "path"):
                if a.get(field_name) != b.get(field_name):
                    return (
                        f"source file {i} ({Path(str(b.get('path'))).name}) has a different "
                        f"{field_name}: {a.get(field_name)!r} then, {b.get(field_name)!r} now"
                    )
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        if keys:
            k = keys[0]
            return f"{key}.{k} was {old.get(k)!r}, now {new.get(k)!r}"
    return f"{key} was {_brief(old)}, now {_brief(new)}"


def _content(source: Any, keep: tuple[str, ...] = ()) -> Any:
    """A manifest's `source` without the paths and file stamps (`STAMP_FIELDS` but `size`):
    what the files hold, not where they are or when they were written; `keep` keeps some."""
    if not isinstance(source, list):
        return source
    drop = {"path", "mtime_ns", "inode"} - set(keep)
    return [
        {k: v for k, v in f.items() if k not in drop} if isinstance(f, dict) else f for f in source
    ]


def recall_source_digests(run_path: str | Path) -> int:
    """Seed the process's digests (`paths.file_sha256`) from a stored run's manifest: each
    source file whose size, mtime_ns and inode still match is not read again. Returns how many
    were taken; a missing or unreadable manifest recalls nothing (the files are then hashed)."""
    try:
        data = json.loads((Path(run_path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return 0
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, list):
        return 0
    return sum(
        remember_sha256(f["path"], f)
        for f in source
        if isinstance(f, dict) and isinstance(f.get("path"), str)
    )


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def refuse_links(folder: str | Path, what: str = "run folder") -> None:
    """`StoreError` when anything inside `folder` (at any depth) is a symbolic link: a resumed
    run writes into its files, and a link would carry those writes (or reads) out of the folder.
    The folder itself may be a link (a runs root on another disk)."""
    for base, dirs, files in os.walk(folder):  # never follows links to folders
        for name in (*dirs, *files):
            p = Path(base) / name
            if p.is_symlink():
                raise StoreError(
                    f"{p} is a symbolic link (to {os.readlink(p)}); a {what} holds only its own "
                    "files and links in it are not followed: replace the link with a copy of its "
                    "target, or move the folder away to start over"
                )


def identity_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The identity fields (`IDENTITY_FIELDS` and `endpoint`) in which a stored manifest `old`
    differs from the manifest `new` of the run asked for, each as `open_run` words it; the
    same files moved elsewhere, and a missing (older) endpoint record, are no change."""
    changes = []
    for key in IDENTITY_FIELDS + ("endpoint",):
        if old.get(key) == new.get(key) or (key == "endpoint" and "endpoint" not in old):
            continue
        if key == "source" and _content(old.get(key)) == _content(new.get(key)):
            continue
        changes.append(f"different {key!r}: {_difference(key, old.get(key), new.get(key))}")
    return changes


def open_run(
    path: str | Path, manifest: dict[str, Any], allow_model_change: bool = False
) -> RunDir:
    """Create a run, or reopen one made with the same inputs (resume); refuse a mismatch.

    The model fields (`model`, and `endpoint`: what the model spec resolved to) may differ only
    with `allow_model_change`; the switch is then recorded in the manifest's `model_changes`.
    The caller holds the folder's lock (`FolderLock`).
    """
    run = RunDir(Path(path))
    if run.path.is_dir():
        refuse_links(run.path)
    if run.exists():
        old = run.manifest()
        changes: dict[str, Any] = {}
        switched = False
        for key in IDENTITY_FIELDS + ("endpoint",):
            if key == "endpoint" and "endpoint" not in old:
                # A run from before endpoints were recorded: adopt the current one, visibly.
                if manifest.get(key) is not None:
                    log.warning("%s: no endpoint recorded; assuming %s", run.path, manifest[key])
                    changes["endpoint"] = manifest[key]
                continue
            if old.get(key) == manifest.get(key):
                continue
            if key == "source" and _content(old.get(key)) == _content(manifest.get(key)):
                # The same bytes at another path (a moved or remounted video), or touched or
                # copied in place (a new stamp): keep going, with the new paths and stamps.
                if _content(old.get(key), ("path",)) != _content(manifest.get(key), ("path",)):
                    log.warning("%s: the stream's files moved; recording their paths", run.path)
                changes["source"] = manifest.get(key)
                continue
            why = _difference(key, old.get(key), manifest.get(key))
            if key in MODEL_FIELDS and allow_model_change:
                changes[key] = manifest.get(key)
                switched = True
                continue
            hint = (
                "pass --allow-model-change to continue it with this model (the switch is "
                "recorded), use another --tag, or delete the directory to start over"
                if key in MODEL_FIELDS
                else "use another --tag, or delete the directory to start over"
            )
            raise StoreError(
                f"{run.path} already holds a run with a different {key!r}: {why}; {hint}"
            )
        if switched:
            switch = {
                "at_clip": len(run.finished()),
                "time": manifest.get("updated") or utc_now(),
                "from": {k: old.get(k) for k in MODEL_FIELDS},
                "to": {k: manifest.get(k) for k in MODEL_FIELDS},
            }
            changes["model_changes"] = [*old.get("model_changes", []), switch]
            log.warning("%s: continuing with a different model (recorded)", run.path)
        cut_torn_tail(run.clips_path)
        run.update_manifest(status="running", updated=manifest.get("updated"), **changes)
        return run
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_manifest({"schema": SCHEMA_VERSION, **manifest, "status": "running"})
    return run
