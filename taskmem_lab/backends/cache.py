"""SQLite response cache: a re-run with the same model, messages and sampling is free.

Keyed by `Request.fingerprint` over the model's resolved identity (`identity_key`: for an
endpoint name, the server address, served model name, API flavour and options), so two servers
behind one name never share replies. Stores the reply text, reasoning, usage and model id only
(never endpoint settings or keys). An empty reply is never stored (nor served from an older
cache), and a reply its caller could not use is dropped (`forget`): "run again to resume" asks
the model again instead of replaying the reply that failed. Safe for several threads of one process and for several
processes (SQLite WAL, one short transaction per write).

A cache that cannot be opened (read-only, not a database) is refused with one line at start; a
write that fails later (disk full) is logged once and the run goes on: the cache only saves calls.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path

from taskmem_lab.backends.base import ChatModel, Reply, Request, identity_key
from taskmem_lab.errors import StoreError
from taskmem_lab.paths import cache_path

log = logging.getLogger(__name__)
_REPLY_FIELDS = {f.name for f in fields(Reply)}
_HINT = "pass --cache FILE for another cache or --no-cache to run without one"


class ResponseCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._write_failed = False
        try:
            if self.path.is_dir():
                raise StoreError(f"response cache {self.path} is a folder, not a file; {_HINT}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)"
            )
            self._conn.commit()
            self._conn.execute("SELECT key FROM replies LIMIT 1").fetchall()
        except OSError as exc:
            raise StoreError(
                f"cannot create the response cache {self.path}: {exc.strerror or exc}; {_HINT}"
            ) from None
        except sqlite3.DatabaseError as exc:
            why = str(exc)
            if "readonly" in why or "unable to open" in why:
                why = f"it is not writable ({why})"
            elif "not a database" in why or "malformed" in why:
                why = f"it is corrupt ({why}); move it away to start a new one"
            raise StoreError(f"cannot use the response cache {self.path}: {why}; {_HINT}") from None

    def get(self, key: str) -> Reply | None:
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT reply FROM replies WHERE key = ?", (key,)
                ).fetchone()
            data = json.loads(row[0]) if row is not None else None
        except (sqlite3.DatabaseError, json.JSONDecodeError, TypeError) as exc:
            log.warning(
                "response cache %s: unreadable entry, asking the model (%s)", self.path, exc
            )
            data = None
        if not _usable(data):
            self.misses += 1
            return None
        self.hits += 1
        return Reply(**{**data, "cached": True})

    def put(self, key: str, reply: Reply) -> None:
        """Store `reply` under `key`; an empty reply is not stored (it would be replayed)."""
        if not reply.text.strip():
            return
        data = asdict(reply)
        data.pop("cached", None)
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO replies (key, reply) VALUES (?, ?)",
                    (key, json.dumps(data)),
                )
                self._conn.commit()
        except sqlite3.DatabaseError as exc:
            if not self._write_failed:
                log.warning(
                    "response cache %s: cannot store replies (%s); the run goes on without "
                    "caching (nothing is lost: replies are kept in the run's records)",
                    self.path,
                    exc,
                )
            self._write_failed = True

    def drop(self, key: str) -> None:
        """Remove the entry under `key` (a reply its caller could not use)."""
        try:
            with self._lock:
                self._conn.execute("DELETE FROM replies WHERE key = ?", (key,))
                self._conn.commit()
        except sqlite3.DatabaseError as exc:
            log.warning("response cache %s: cannot drop an unusable reply (%s)", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _usable(data: object) -> bool:
    """A stored entry that can be served: a reply's fields, with text in it."""
    if not isinstance(data, dict) or not set(data) <= _REPLY_FIELDS:
        return False
    text = data.get("text")
    return isinstance(text, str) and bool(text.strip())


class CachedModel:
    """Wraps any `ChatModel`; replies come from the cache when the request was seen before."""

    def __init__(self, model: ChatModel, cache: ResponseCache) -> None:
        self.model = model
        self.cache = cache
        self.model_id = model.model_id

    def generate(self, request: Request) -> Reply:
        key = request.fingerprint(identity_key(self.model))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        reply = self.model.generate(request)
        self.cache.put(key, reply)
        return reply

    def forget(self, request: Request) -> None:
        """Drop the stored reply to `request`: its caller could not parse or use it."""
        self.cache.drop(request.fingerprint(identity_key(self.model)))

    def __getattr__(self, name: str):  # noqa: ANN204 - delegate backend extras (e.g. `fake`)
        return getattr(self.model, name)


def forget(model: ChatModel, request: Request) -> None:
    """Drop `model`'s cached reply to `request` when `model` is (or wraps) a `CachedModel`; a
    reply that failed to parse or was refused must not be replayed when the run is resumed."""
    drop = getattr(model, "forget", None)
    if callable(drop):
        drop(request)


def open_cache(setting: bool | str | Path | None) -> ResponseCache | None:
    """The response cache a `cache` argument asks for: True the project's file (`cache_path()`),
    a path that file, False or None no cache."""
    if not setting:
        return None
    return ResponseCache(cache_path() if setting is True else Path(setting))
