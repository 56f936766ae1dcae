"""Work prepared ahead for many sequences at once, on one set of threads, nearest need first.

Floor 0. Each memorizing stream decodes its next clips while the current one
waits on the model. With one thread per stream, twenty streams on two cores share the CPU
equally: every stream's next clip is half done when its call returns, and all of them wait
together. Here the streams' prepare steps go to one pool of about a thread per core, and a free
thread takes the step whose result will be needed soonest: first a step a consumer is waiting
for, then the next step of the consumer that has held its current item longest.

The rules for one sequence are those of a per-stream thread: its steps run one at a time, in
order (a stream's frame reader and perceiver are not thread-safe), at most `depth` items beyond
the one its consumer holds; a step that raises hands its error to the consumer at that item.
Steps that wait (on a model, a lock) would hold a shared thread: give such a caller a pool of its
own (`SharedPrefetch(1, name)`, then `close()`), as the memorizer does for a perceiving stream.
A pool's threads end once no open sequence has a step left to prepare for `idle_s` seconds, and
start again with the next sequence: an idle process (a test, a notebook kernel that forks a
subprocess) holds no prepare threads.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class _Sequence(Generic[T, R]):
    def __init__(self, fn: Callable[[T], R], items: Sequence[T], depth: int, order: int) -> None:
        self.fn, self.items, self.depth, self.order = fn, items, depth, order
        self.current = 0  # the item the consumer holds or waits for
        self.since = time.monotonic()  # when it moved there
        self.next = 0  # the next item to prepare
        self.running = False
        self.closed = False
        self.futures: dict[int, Future[R]] = {}

    def pending(self) -> bool:
        """Has a step left that may become ready (now or once the consumer moves on)."""
        return not self.closed and self.next < len(self.items)

    def ready(self) -> bool:
        return (
            not self.closed
            and not self.running
            and self.next < len(self.items)
            and self.next <= self.current + self.depth
        )

    def future(self, i: int) -> Future[R]:
        return self.futures.setdefault(i, Future())


class Prefetched(Generic[T, R]):
    """One sequence's results, in order; iterate once, then `close` (or use `with`)."""

    def __init__(self, pool: SharedPrefetch, seq: _Sequence[T, R]) -> None:
        self._pool, self._seq = pool, seq

    def __iter__(self) -> Iterator[R]:
        pool, seq = self._pool, self._seq
        for i in range(len(seq.items)):
            with pool.cv:
                seq.current, seq.since = i, time.monotonic()
                future = seq.future(i)
                pool.cv.notify_all()
            try:
                yield future.result()
            finally:
                with pool.cv:
                    seq.futures.pop(i, None)  # the consumer is done with it: free it

    def close(self) -> None:
        """Drop the steps not started and wait for the running one (it may use shared state
        the caller is about to close)."""
        pool, seq = self._pool, self._seq
        with pool.cv:
            seq.closed = True
            while seq.running:
                pool.cv.wait()
            if seq in pool.sequences:
                pool.sequences.remove(seq)
            for future in seq.futures.values():
                future.cancel()
            seq.futures.clear()

    def __enter__(self) -> Prefetched[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedPrefetch:
    """Threads shared by every sequence of the process (see the module docstring)."""

    def __init__(self, workers: int, name: str = "taskmem-prepare", idle_s: float = 0.5) -> None:
        self.workers = max(1, workers)
        self.name = name
        self.idle_s = idle_s
        self.cv = threading.Condition()
        self.sequences: list[_Sequence] = []
        self._threads: list[threading.Thread] = []
        self._order = itertools.count()
        self._started = itertools.count()
        self._closed = False

    def sequence(self, fn: Callable[[T], R], items: Sequence[T], depth: int) -> Prefetched[T, R]:
        """Prepare `fn(item)` for `items` in order, up to `depth` ahead of the consumer."""
        seq: _Sequence[T, R] = _Sequence(fn, items, max(0, depth), next(self._order))
        with self.cv:
            self.sequences.append(seq)
            while len(self._threads) < self.workers:
                t = threading.Thread(
                    target=self._work, name=f"{self.name}-{next(self._started)}", daemon=True
                )
                self._threads.append(t)
                t.start()
            self.cv.notify_all()
        return Prefetched(self, seq)

    def close(self) -> None:
        """Let the threads end once idle (a pool made for one caller; never the shared one)."""
        with self.cv:
            self._closed = True
            self.cv.notify_all()

    def _pick(self) -> tuple[_Sequence, int, Future] | None:
        with self.cv:
            idle_since = None
            while True:
                ready = [s for s in self.sequences if s.ready()]
                if ready:
                    break
                if self._closed:
                    return self._leave()
                if any(s.pending() for s in self.sequences):
                    idle_since = None
                    self.cv.wait()
                    continue
                now = time.monotonic()
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= self.idle_s:
                    return self._leave()
                self.cv.wait(self.idle_s - (now - idle_since))
            # the step needed soonest: fewest items ahead of its consumer, then the consumer
            # that has held its item longest (its model call returns first)
            seq = min(ready, key=lambda s: (s.next - s.current, s.since, s.order))
            i = seq.next
            seq.next += 1
            seq.running = True
            return seq, i, seq.future(i)

    def _leave(self) -> None:
        """Called with `cv` held by a thread about to end: `sequence()` starts a new one."""
        me = threading.current_thread()
        if me in self._threads:
            self._threads.remove(me)
        return None

    def _work(self) -> None:
        while (picked := self._pick()) is not None:
            seq, i, future = picked
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(seq.fn(seq.items[i]))
                    except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                        future.set_exception(exc)
            finally:
                with self.cv:
                    seq.running = False
                    self.cv.notify_all()


_shared: tuple[int, SharedPrefetch] | None = None
_shared_lock = threading.Lock()


def shared_prefetch() -> SharedPrefetch:
    """The process's pool (made anew after a fork): a thread per core and one more, so no core
    idles while a thread waits for the GIL (20 streams on 2 cores: 8.0-8.1 s with 3 threads,
    8.3-8.5 s with 2, 8.2-8.5 s with 4)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] != os.getpid():
            _shared = (os.getpid(), SharedPrefetch(cores() + 1))
        return _shared[1]
