"""SQLite response cache: a re-run with the same model, messages and sampling is free.

Keyed by `Request.fingerprint(model_id)`; stores the reply text, reasoning, usage and model id only
(never endpoint settings or keys). Safe for several threads of one process and for several
processes (SQLite WAL, one short transaction per write).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from taskmem_lab.backends.base import ChatModel, Reply, Request
from taskmem_lab.paths import cache_path


class ResponseCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)"
        )
        self._conn.commit()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._conn.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        data = json.loads(row[0])
        return Reply(**{**data, "cached": True})

    def put(self, key: str, reply: Reply) -> None:
        data = asdict(reply)
        data.pop("cached", None)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO replies (key, reply) VALUES (?, ?)", (key, json.dumps(data))
            )
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedModel:
    """Wraps any `ChatModel`; replies come from the cache when the request was seen before."""

    def __init__(self, model: ChatModel, cache: ResponseCache) -> None:
        self.model = model
        self.cache = cache
        self.model_id = model.model_id

    def generate(self, request: Request) -> Reply:
        key = request.fingerprint(self.model_id)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        reply = self.model.generate(request)
        self.cache.put(key, reply)
        return reply

    def __getattr__(self, name: str):  # noqa: ANN204 - delegate backend extras (e.g. `fake`)
        return getattr(self.model, name)


def open_cache(setting: bool | str | Path | None) -> ResponseCache | None:
    """The response cache a `cache` argument asks for: True the project's file (`cache_path()`),
    a path that file, False or None no cache."""
    if not setting:
        return None
    return ResponseCache(cache_path() if setting is True else Path(setting))
