"""The shared prepare pool: per-sequence order and bound, nearest need first, errors, close."""

from __future__ import annotations

import threading
import time

import pytest

from taskmem_lab.prefetch import SharedPrefetch, shared_prefetch


def test_each_sequence_runs_in_order_one_step_at_a_time_within_its_depth():
    pool = SharedPrefetch(workers=4)
    log: list[tuple[str, int, int]] = []  # (sequence, item, consumer position when started)
    position: dict[str, int] = {}
    running: dict[str, int] = {}
    lock = threading.Lock()

    def step(name: str, i: int) -> str:
        with lock:
            running[name] = running.get(name, 0) + 1
            assert running[name] == 1, f"{name} ran two steps at once"
            log.append((name, i, position.get(name, 0)))
        time.sleep(0.005)
        with lock:
            running[name] -= 1
        return f"{name}{i}"

    def consume(name: str, depth: int) -> list[str]:
        got = []
        with pool.sequence(lambda i: step(name, i), list(range(12)), depth) as results:
            for k, value in enumerate(results):
                with lock:
                    position[name] = k
                got.append(value)
                time.sleep(0.01)  # the "model call"
        return got

    outs: dict[str, list[str]] = {}
    threads = [
        threading.Thread(target=lambda n=n, d=d: outs.setdefault(n, consume(n, d)))
        for n, d in (("a", 0), ("b", 1), ("c", 2), ("d", 2), ("e", 3))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    depths = {"a": 0, "b": 1, "c": 2, "d": 2, "e": 3}
    for name, depth in depths.items():
        assert outs[name] == [f"{name}{i}" for i in range(12)]
        started = [(i, at) for n, i, at in log if n == name]
        assert [i for i, _ in started] == list(range(12))  # in order, each once
        # never more than `depth` beyond the item the consumer held (+1: the position is
        # recorded just after the consumer moves on)
        assert all(i <= at + depth + 1 for i, at in started)
    assert pool.sequences == []  # closed sequences leave the pool


def test_a_step_someone_waits_for_goes_before_steps_ahead():
    pool = SharedPrefetch(workers=1)
    gate = threading.Event()
    order: list[str] = []

    def b_step(i: int) -> None:
        if i == 1:
            gate.wait(5)
        order.append(f"b{i}")

    b = pool.sequence(b_step, [0, 1, 2], 2)
    b_results = iter(b)
    next(b_results)  # b's consumer holds b0; the only thread prepares b1 and waits at the gate
    # b1 has been picked (not only b0 still marked running: its result is handed over first)
    while pool.sequences[0].next < 2 or not pool.sequences[0].running:
        time.sleep(0.001)
    a = pool.sequence(lambda i: order.append(f"a{i}"), [0], 0)
    a_consumer = threading.Thread(target=lambda: list(a))
    a_consumer.start()
    time.sleep(0.05)  # a's consumer waits on a0: nothing is ahead of it
    gate.set()
    a_consumer.join(5)
    list(b_results)
    a.close()
    b.close()
    # after b1, the thread takes a0 (waited for) before b2 (two items ahead of its consumer)
    assert order == ["b0", "b1", "a0", "b2"]


def test_an_error_reaches_the_consumer_at_its_item():
    pool = SharedPrefetch(workers=2)

    def step(i: int) -> int:
        if i == 2:
            raise ValueError("cannot decode clip 2")
        return i

    got = []
    with pool.sequence(step, [0, 1, 2, 3], 2) as results, pytest.raises(ValueError, match="2"):
        for value in results:
            got.append(value)
    assert got == [0, 1]


def test_close_waits_for_the_running_step_and_drops_the_rest():
    pool = SharedPrefetch(workers=2)
    started, release = threading.Event(), threading.Event()
    finished: list[int] = []

    def step(i: int) -> int:
        if i == 1:
            started.set()
            release.wait(5)
        finished.append(i)
        return i

    prefetched = pool.sequence(step, list(range(6)), 1)
    results = iter(prefetched)
    assert next(results) == 0
    assert started.wait(5)  # item 1 runs while the consumer holds item 0
    threading.Timer(0.1, release.set).start()
    prefetched.close()  # returns only after item 1 finished; items 2.. never start
    assert finished == [0, 1]
    time.sleep(0.05)
    assert finished == [0, 1]


def test_the_process_pool_is_one_per_process():
    assert shared_prefetch() is shared_prefetch()
    assert shared_prefetch().workers >= 2  # at least one core and one more


def test_a_pool_made_for_one_caller_lets_its_threads_end():
    pool = SharedPrefetch(workers=2, name="taskmem-test-own")
    with pool.sequence(lambda i: i * 2, [1, 2, 3], 1) as results:
        assert list(results) == [2, 4, 6]
    pool.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        t.name.startswith("taskmem-test-own") for t in threading.enumerate()
    ):
        time.sleep(0.01)
    assert not any(t.name.startswith("taskmem-test-own") for t in threading.enumerate())


def test_an_idle_pool_ends_its_threads_and_starts_them_again_for_new_work():
    pool = SharedPrefetch(workers=2, name="taskmem-test-idle", idle_s=0.05)

    def alive() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("taskmem-test-idle")]

    for round_ in range(2):
        with pool.sequence(lambda i, r=round_: i + r, [1, 2, 3], 1) as results:
            assert list(results) == [1 + round_, 2 + round_, 3 + round_]
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert alive() == []


def test_a_pool_keeps_its_threads_while_a_consumer_has_steps_left():
    pool = SharedPrefetch(workers=1, name="taskmem-test-held", idle_s=0.01)
    with pool.sequence(lambda i: i, list(range(10)), 1) as results:
        it = iter(results)
        assert next(it) == 0
        time.sleep(0.1)  # the consumer holds item 0; steps 2.. wait for it, not for new work
        assert [t for t in threading.enumerate() if t.name.startswith("taskmem-test-held")]
        assert list(it) == list(range(1, 10))
