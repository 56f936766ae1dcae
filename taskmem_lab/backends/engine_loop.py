"""A private asyncio event loop on a background thread, for an in-process async engine.

Floor 2. vLLM's asynchronous engine (`AsyncLLMEngine` / `AsyncLLM`) schedules requests with
continuous batching: each request joins the running batch when it arrives and leaves it when its
own generation ends. Its API is asyncio; the memorizer's streams are threads. `EngineLoop` runs
one loop for the engine's lifetime, and any thread hands it a coroutine (`submit`) or a plain
call that must run on the loop (`call`, e.g. building the engine, which binds to the loop it is
made on). The thread starts on first use and is a daemon: nothing runs at construction.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class EngineLoop:
    """One event loop on its own thread; `submit` and `call` are safe from any thread."""

    def __init__(self, name: str = "taskmem-engine-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self.name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule `coro` on the loop; its result (or error) arrives in the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self._running())

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn()` on the loop's thread and return its result (or raise its error)."""

        async def wrapped() -> T:
            return fn()

        return self.submit(wrapped()).result()

    def close(self) -> None:
        """Stop the loop and its thread (a later `submit` starts a new one)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=5)
            if not loop.is_running():
                loop.close()
