"""`jobs.ResumableDir` and `jobs.bounded_map`: every rule the four batch commands rely on."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from taskmem_lab import store
from taskmem_lab.errors import ConfigError, ModelError, StoreError
from taskmem_lab.jobs import (
    Progress,
    ResumableDir,
    bounded_map,
    keep_latest,
    results_by_key,
    settings_difference,
)

SETTINGS = {"model": "fake:a", "params": {"n": 3, "temperature": 1.0}, "prompts": {"x": "ab"}}


def folder(path: Path) -> ResumableDir:
    return ResumableDir(path, kind="test", key=lambda r: r["id"], hint="pick another folder")


# --------------------------------------------------------------------------- settings


def test_new_folder_records_settings_and_status(tmp_path: Path) -> None:
    d = folder(tmp_path / "out").open(SETTINGS)
    stored = json.loads(d.settings_path.read_text())
    assert stored["kind"] == "test" and stored["status"] == "running"
    assert {k: stored[k] for k in SETTINGS} == SETTINGS
    assert {"schema", "versions", "created", "updated"} <= set(stored)
    d.write_summary({"done": 1}, "complete")
    assert json.loads((d.path / "summary.json").read_text()) == {"done": 1}
    assert d.settings()["status"] == "complete"
    folder(tmp_path / "out").open(SETTINGS)  # same settings: reopened for resuming
    assert d.settings()["status"] == "running" and d.settings()["created"] == stored["created"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": "fake:b"}, "model"),
        ({"params": {"n": 4, "temperature": 1.0}}, "params.n"),
        ({"params": {"n": 3}}, "params.temperature"),  # a field that went away
        ({"params": {"n": 3, "temperature": 1.0, "top_p": 0.9}}, "params.top_p"),
        ({"prompts": {"x": "cd"}}, "prompts.x"),
        ({"tasks": "new"}, "tasks"),
    ],
)
def test_different_settings_are_refused_naming_the_field(
    tmp_path: Path, change: dict, field: str
) -> None:
    folder(tmp_path).open(SETTINGS)
    with pytest.raises(StoreError, match=rf"different '{field}'; pick another folder$"):
        folder(tmp_path).open({**SETTINGS, **change})
    assert settings_difference(SETTINGS, {**SETTINGS, **change}) == field
    assert settings_difference(SETTINGS, dict(SETTINGS)) is None


def test_unreadable_settings_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(StoreError, match="run.json cannot be read"):
        folder(tmp_path).open(SETTINGS)
    with pytest.raises(StoreError, match="no test results"):
        folder(tmp_path / "none").settings()


# --------------------------------------------------------------------------- rows


def test_latest_good_row_wins(tmp_path: Path) -> None:
    d = folder(tmp_path).open(SETTINGS)
    for row in [
        {"id": "a", "status": "failed", "v": 1},
        {"id": "a", "status": "ok", "v": 2},
        {"id": "a", "status": "failed", "v": 3},  # a later failure never replaces a good row
        {"id": "b", "status": "ok", "v": 1},
        {"id": "b", "status": "ok", "v": 2},  # a later good row replaces an earlier one
        {"id": "c", "status": "failed", "v": 1},
        {"id": "c", "status": "failed", "v": 2},  # no good row: the latest failure is kept
    ]:
        d.append(row)
    assert {k: (r["status"], r["v"]) for k, r in d.latest().items()} == {
        "a": ("ok", 2),
        "b": ("ok", 2),
        "c": ("failed", 2),
    }
    assert list(d.good()) == ["a", "b"]
    assert len(d.rows()) == 7  # everything stays on disk
    assert list(keep_latest(reversed(d.rows()), lambda r: r["id"])) == ["a", "b", "c"]


def test_torn_last_line_is_cut_when_reopened(tmp_path: Path) -> None:
    d = folder(tmp_path).open(SETTINGS)
    d.append({"id": "a", "status": "ok"})
    with open(d.rows_path, "a", encoding="utf-8") as fh:
        fh.write('{"id": "b", "sta')  # killed mid-write
    assert [r["id"] for r in d.rows()] == ["a"]  # a torn row is never read as finished
    folder(tmp_path).open(SETTINGS)
    assert d.rows_path.read_text() == '{"id": "a", "status": "ok"}\n'
    d.append({"id": "b", "status": "ok"})
    assert [r["id"] for r in d.rows()] == ["a", "b"]


def test_append_is_fsynced_before_it_returns(tmp_path: Path, monkeypatch) -> None:
    d = folder(tmp_path).open(SETTINGS)
    synced: list[str] = []
    real_fsync = store.os.fsync

    def fake_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(d.rows_path.read_text() if d.rows_path.exists() else "")

    monkeypatch.setattr(store.os, "fsync", fake_fsync)
    d.append({"id": "a", "status": "ok"})
    d.append({"id": "b", "status": "ok"})
    # one fsync per row, each after the row's whole line was written
    assert synced == [
        '{"id": "a", "status": "ok"}\n',
        '{"id": "a", "status": "ok"}\n{"id": "b", "status": "ok"}\n',
    ]


def test_append_from_many_threads_keeps_lines_whole(tmp_path: Path) -> None:
    d = folder(tmp_path).open(SETTINGS)
    text = "x" * 5000
    threads = [
        threading.Thread(target=d.append, args=({"id": i, "status": "ok", "t": text},))
        for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["id"] for r in d.rows()) == list(range(16))


def test_a_resumed_job_runs_only_what_is_not_done(tmp_path: Path) -> None:
    calls: list[int] = []
    down = [True]  # the server fails item 3 once

    def work(i: int) -> dict:
        calls.append(i)
        if i == 3 and down[0]:
            down[0] = False
            raise ModelError("server down")
        return {"id": i, "status": "ok", "value": i * i}

    def run_job() -> dict:
        d = folder(tmp_path).open(SETTINGS)
        todo = [i for i in range(6) if i not in d.good()]
        for outcome in bounded_map(work, todo, 2, key=lambda i: i, catch=(ModelError,)):
            if outcome.ok:
                d.append(outcome.value)
        return d.good()

    first = run_job()
    assert sorted(first) == [0, 1, 2, 4, 5] and sorted(calls) == [0, 1, 2, 3, 4, 5]
    calls.clear()
    second = run_job()
    assert calls == [3] and sorted(second) == list(range(6))
    calls.clear()
    run_job()
    assert calls == []


# --------------------------------------------------------------------------- the map


@pytest.mark.parametrize("ahead", [0, 3])
def test_map_keeps_at_most_concurrency_in_flight_and_reads_items_lazily(ahead: int) -> None:
    lock = threading.Lock()
    state = {"running": 0, "most": 0, "pulled": 0, "finished": 0, "ahead": 0}

    def items():
        for i in range(30):
            with lock:
                state["pulled"] += 1
                state["ahead"] = max(state["ahead"], state["pulled"] - state["finished"])
            yield i

    def work(i: int) -> int:
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(0.005 * (i % 3))
        with lock:
            state["running"] -= 1
        return i

    for outcome in bounded_map(work, items(), 4, key=lambda i: i, ahead=ahead):
        with lock:
            state["finished"] += 1
        assert outcome.ok
    assert state["most"] <= 4 and state["ahead"] <= 4 + ahead and state["finished"] == 30
    assert state["most"] >= 2  # and it does run concurrently
    if ahead:
        assert state["ahead"] > 4  # items are prepared ahead of the running ones


def test_map_records_failures_and_goes_on() -> None:
    def work(i: int) -> int:
        if i % 3 == 0:
            raise ModelError(f"no reply for {i}")
        return i * 10

    outcomes = list(bounded_map(work, range(9), 3, key=lambda i: f"q{i}", catch=(ModelError,)))
    assert len(outcomes) == 9
    values, failures = results_by_key(outcomes)
    assert values == {f"q{i}": i * 10 for i in (1, 2, 4, 5, 7, 8)}
    assert failures == {f"q{i}": f"q{i}: ModelError: no reply for {i}" for i in (0, 3, 6)}


def test_results_come_back_sorted_by_key_whatever_order_they_finish_in() -> None:
    def work(i: int) -> int:
        time.sleep(0.002 * (10 - i))  # later items finish first
        return i

    outcomes = list(bounded_map(work, range(10), 10, key=lambda i: i))
    values, failures = results_by_key(outcomes)
    assert list(values) == list(range(10)) and values == {i: i for i in range(10)}
    assert failures == {}
    assert [o.key for o in outcomes] != list(range(10))  # they did finish out of order


def test_an_unexpected_error_stops_the_map() -> None:
    def work(i: int) -> int:
        if i == 2:
            raise KeyError("a bug")
        return i

    with pytest.raises(KeyError, match="a bug"):
        list(bounded_map(work, range(50), 2, catch=(ModelError,)))


def test_map_stops_starting_items_after_failures_in_a_row() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        raise ModelError("dead endpoint")

    outcomes = list(bounded_map(work, range(100), 1, catch=(ModelError,), stop_after_failures=3))
    assert len(outcomes) == 3 and started == [0, 1, 2]


def test_map_refuses_a_bad_bound_and_shows_progress(capsys) -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        list(bounded_map(str, [1], 0))
    list(bounded_map(str, [1, 2], 1, progress=Progress("demo", total=2, unit="q")))
    assert "demo" in capsys.readouterr().err


def test_run_stores_every_row_as_it_finishes_failures_included(tmp_path: Path) -> None:
    d = folder(tmp_path).open(SETTINGS)

    def work(i: int) -> dict:
        status = "failed" if i == 2 else "ok"
        on_disk = len(d.rows())
        return {"id": i, "status": status, "rows_before": on_disk}

    rows = list(d.run(work, range(5), 2, key=lambda i: i))
    assert sorted(r["id"] for r in rows) == list(range(5)) and len(d.rows()) == 5
    assert sorted(d.good()) == [0, 1, 3, 4] and d.latest()[2]["status"] == "failed"

    def broken(i: int) -> dict:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        list(d.run(broken, range(3), 1))
    assert len(d.rows()) == 5
