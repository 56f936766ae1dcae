"""Coalesce single `generate` calls from many threads into batched calls of one engine.

Floor 2. An in-process engine (vLLM) is fastest when it sees many sequences at once, but the
memorizer asks for one clip at a time, one thread per stream. `Batcher.submit(item)` blocks its
caller while a worker thread gathers whatever arrives within `wait_s` (up to `max_batch` items),
runs them in one `run_batch` call and hands each caller its own result or error. The worker starts
on the first submit (nothing happens at construction) and exits once it has been idle for
`idle_exit_s`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")


class Batcher(Generic[I, R]):
    """Runs `run_batch(items) -> results` (one result or exception per item, same order)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[I]], Sequence[R | BaseException]],
        max_batch: int,
        wait_s: float = 0.02,
        idle_exit_s: float = 1.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.idle_exit_s = idle_exit_s
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue[tuple[I, Future[R]]] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, item: I) -> R:
        """Run `item` in the next batch and return its result (or raise its error)."""
        future: Future[R] = Future()
        with self._lock:
            self._queue.put((item, future))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._loop, name="taskmem-batcher", daemon=True
                )
                self._worker.start()
        return future.result()

    def _gather(self) -> list[tuple[I, Future[R]]] | None:
        try:
            first = self._queue.get(timeout=self.idle_exit_s)
        except queue.Empty:
            return None
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                with self._lock:
                    # Exit only while holding the lock, so a concurrent submit starts a new worker.
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            self._run(batch)

    def _run(self, batch: list[tuple[I, Future[R]]]) -> None:
        self.batch_sizes.append(len(batch))
        items = [item for item, _ in batch]
        try:
            results = list(self.run_batch(items))
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch runner returned {len(results)} results for {len(batch)} items"
                )
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, not swallowed
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
