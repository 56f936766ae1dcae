"""`taskmem bench` end to end: six generated videos through the local test server.

All streams memorized and evaluated, a second run makes no model call, a stream whose replies
fail is reported with its resume command while the others finish, and a driver killed with
SIGKILL mid-run resumes to the same memories without asking again for a finished clip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskmem_lab.params import MemorizeParams
from taskmem_lab.prompts import render
from taskmem_lab.store import RunDir
from taskmem_lab.testing import media as gen
from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow
IDS = [f"vid{i}" for i in range(6)]
LONG = "vid3"  # 17 s: the only stream with a clip at 00:00:15
TAG = "t"


@pytest.fixture(scope="module")
def videomme(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Video-MME-shaped source (one question per video) and its videos folder."""
    import shutil

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    d = tmp_path_factory.mktemp("videomme")
    videos = d / "videos" / "data"
    videos.mkdir(parents=True)
    rows = []
    for i, vid in enumerate(IDS):
        gen.test_video(
            videos / f"{vid}.mp4", 17 if vid == LONG else 12, size="64x48", fps=5, audio=False
        )
        rows.append(
            {
                "video_id": f"{i:03d}",
                "duration": "short",
                "domain": "Test",
                "sub_category": "Generated",
                "url": "",
                "videoID": vid,
                "question_id": f"{i:03d}-1",
                "task_type": "Counting Problem",
                "question": "How many visual parts are there?",
                "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."],
                "answer": "A",
            }
        )
    source = d / "videomme.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return source, d / "videos"


def _args(source: Path, videos: Path, out: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "videomme",
        "--source",
        str(source),
        "--videos",
        str(videos),
        "--out",
        str(out),
        "--model",
        "openai:local-vlm",
        "--answerer",
        "openai:local-vlm",
        "--tag",
        TAG,
        "--interval",
        "5",
        "--context-duration",
        "10",
        "--no-cache",
        "-q",
        *extra,
    ]


def _is_episodic(body: dict) -> bool:
    return body["messages"][0]["content"] == render("episodic_system")


def _memories(out: Path) -> dict[str, list[str]]:
    return {
        vid: {i: r.episodic for i, r in RunDir(out / vid / "memory" / TAG).finished().items()}
        for vid in IDS
    }


def _results(out: Path) -> list[dict]:
    return [json.loads(x) for f in out.rglob("results.jsonl") for x in f.read_text().splitlines()]


def _env(api_config: Path) -> dict[str, str]:
    return {"TASKMEM_API_CONFIG": str(api_config), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


@pytest.fixture()
def config(tmp_path: Path, server: FakeOpenAIServer) -> Path:
    from taskmem_lab.testing.fake_openai_server import write_config

    return Path(
        write_config(
            str(tmp_path / "endpoints.yaml"),
            server,
            timeout=20.0,
            max_retries=0,
            backoff_s=0.01,
            max_concurrency=8,
        )
    )


def test_bench_memorizes_evaluates_and_a_rerun_calls_nothing(videomme, tmp_path, server, config):
    source, videos = videomme
    out = tmp_path / "runs"
    server.latency_s = 0.2  # calls last long enough for streams to overlap on a loaded machine
    proc = taskmem(*_args(source, videos, out), env=_env(config))
    assert "6 complete" in proc.stdout
    clips = sum(len(RunDir(out / v / "memory" / TAG).finished()) for v in IDS)
    assert clips == 5 * 3 + 4
    episodic = [b for b in server.requests if _is_episodic(b)]
    assert len(episodic) == clips  # one call per clip, nothing asked twice
    assert len(server.requests) == clips + len(IDS)  # plus one answer per question
    assert server.max_in_flight > 1  # streams ran side by side
    summary = json.loads(
        next((out / "bench" / "videomme" / TAG / "eval").glob("*/summary.json")).read_text()
    )
    assert summary["status"] == "complete" and summary["evaluated"] == len(IDS)
    metrics = json.loads((out / "results" / "videomme.metrics.json").read_text())
    assert metrics["rows"][0]["group"] == "all"

    before = len(server.requests)
    again = taskmem(*_args(source, videos, out), env=_env(config))
    assert len(server.requests) == before  # finished streams and questions are never paid again
    assert "6 skipped" in again.stdout


def test_failing_stream_is_reported_and_the_others_finish(videomme, tmp_path, server, config):
    source, videos = videomme
    out = tmp_path / "runs"
    server.fail_if = lambda body: _is_episodic(body) and "new span 00:00:15" in json.dumps(body)
    proc = taskmem(*_args(source, videos, out), env=_env(config), check=False)
    assert proc.returncode == 1
    assert "5 complete" in proc.stdout and "1 failed" in proc.stdout
    assert f"stream {LONG} failed" in proc.stderr
    resume = proc.stderr.strip().splitlines()[-1]
    assert resume.split("with: ", 1)[1].endswith(f"--only {LONG}")
    assert "evaluation skipped" in proc.stdout
    status = json.loads((out / "bench" / "videomme" / TAG / "bench.json").read_text())
    assert status["streams"][LONG]["status"] == "failed"
    assert len(RunDir(out / LONG / "memory" / TAG).finished()) == 3

    server.fail_if = None
    command = resume.split("with: ", 1)[1].split()[1:]  # the printed command, without "taskmem"
    taskmem(*command, env=_env(config))
    done = taskmem(*_args(source, videos, out), env=_env(config))
    assert "6 skipped" in done.stdout and "results:" in done.stdout


def test_sigkill_of_the_driver_resumes_to_the_same_memories(videomme, tmp_path, server, config):
    source, videos = videomme
    reference = tmp_path / "reference"
    taskmem(*_args(source, videos, reference), env=_env(config))
    expected = _memories(reference)
    server.requests.clear()

    out = tmp_path / "runs"
    server.hold_after = 8  # the 9th request and later wait: the driver dies with calls open
    cmd = [sys.executable, "-m", "taskmem_lab.cli", *_args(source, videos, out)]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **_env(config)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len(server.requests) <= 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    server.hold_after = None
    server.release.set()
    finished = {
        v: len(RunDir(out / v / "memory" / TAG).finished())
        for v in IDS
        if (out / v / "memory" / TAG).exists()
    }
    assert 0 < sum(finished.values()) < 19
    first_run = len([b for b in server.requests if _is_episodic(b)])

    taskmem(*_args(source, videos, out), env=_env(config))
    second_run = [b for b in server.requests[first_run:] if _is_episodic(b)]
    # No finished clip is asked for again: the rerun asks only for the clips left.
    assert len(second_run) == 19 - sum(finished.values())
    assert _memories(out) == expected
    ref_rows = sorted(_results(reference), key=lambda r: r["id"])
    rows = sorted(_results(out), key=lambda r: r["id"])
    assert [(r["id"], r["prediction"], r["correct"]) for r in rows] == [
        (r["id"], r["prediction"], r["correct"]) for r in ref_rows
    ]


def test_plan_prints_streams_and_price_without_calling(videomme, tmp_path, server, config):
    source, videos = videomme
    proc = taskmem(
        *_args(
            source,
            videos,
            tmp_path / "runs",
            "--plan",
            "--price",
            "openai:local-vlm=1,4",
            "--limit-streams",
            "4",
        ),
        env=_env(config),
    )
    assert not server.requests
    lines = proc.stdout.splitlines()
    assert lines[1].split()[0] == "vid0" and "total: 4 streams" in proc.stdout
    assert "memorizer openai:local-vlm: 13 calls" in proc.stdout  # 3 + 3 + 3 + 4 clips
    assert "about $" in proc.stdout


# --------------------------------------------------------------------------- online tasks


def _seconds(hms: str) -> float:
    h, m, s = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_questions_as_tasks_never_reach_a_clip_that_ends_before_they_are_asked(
    tmp_path, server, config, monkeypatch
):
    """The leakage guarantee of `--tasks questions` on an EgoLife-shaped stream with a gap."""
    import re

    from taskmem_lab.bench import egolife
    from taskmem_lab.pipeline import run_benchmark

    monkeypatch.setenv("TASKMEM_API_CONFIG", str(config))
    root = tmp_path / "videos" / "A1_JAKE" / "DAY1"
    root.mkdir(parents=True)
    gen.test_video(root / "DAY1_A1_JAKE_11000000.mp4", 12, size="64x48", fps=5, audio=False)
    gen.test_video(root / "DAY1_A1_JAKE_11300000.mp4", 6, size="64x48", fps=5, audio=False)
    asked = [("DAY1", "11000700"), ("DAY1", "11000500"), ("DAY1", "11300300"), ("DAY2", "09000000")]
    rows = [
        {
            "ID": n,
            "query_time": {"date": d, "time": c},
            "type": "EventRecall",
            "question": f"Unique question number {n}?",
            "choice_a": "a",
            "choice_b": "b",
            "choice_c": "c",
            "choice_d": "d",
            "answer": "A",
        }  # fmt: skip
        for n, (d, c) in enumerate(asked)
    ]
    source = tmp_path / "EgoLifeQA_A1_JAKE.json"
    source.write_text(json.dumps(rows))
    times = {f"A1_JAKE_{n}": egolife.stream_time(d, c) for n, (d, c) in enumerate(asked)}
    result = run_benchmark(
        "egolife", source, tmp_path / "videos", "openai:local-vlm", None, tasks="questions",
        params=MemorizeParams(interval=5, context_duration=10), out=tmp_path / "runs",
        cache=False, progress=False,
    )  # fmt: skip
    assert result.outcomes["A1_JAKE"].status == "complete"
    run = RunDir(tmp_path / "runs" / "A1_JAKE" / "memory" / "openai_local-vlm__tasks")
    shown_somewhere = set()
    for rec in run.finished().values():
        assert rec.tasks == [
            t for t, at in sorted(times.items(), key=lambda x: x[1]) if at < rec.end
        ]
        shown_somewhere |= set(rec.tasks)
    assert shown_somewhere == {"A1_JAKE_0", "A1_JAKE_1", "A1_JAKE_2"}  # DAY2 comes after the end
    span = re.compile(r"new span (\S+)-(\S+) only")
    for body in filter(_is_episodic, server.requests):
        text = json.dumps(body)
        end = _seconds(span.search(text).group(2))
        for n, at in enumerate(times.values()):
            assert (f"Unique question number {n}?" in text) == (at < end)


# --------------------------------------------------------------------------- Ray


RAY_START_TRIES = 2  # ray.init gives its node a fixed 30 s; a busy machine may need a second go


@pytest.fixture()
def local_ray(monkeypatch, config, tmp_path_factory):
    """A local Ray of 2 CPUs whose session folder and auth token live in the test's temp folder.
    Skips, naming Ray's error, when Ray cannot start (twice) on this machine."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(config))  # workers inherit the environment
    home = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths must stay < 108 bytes
    monkeypatch.setenv("HOME", str(home))  # ~/.ray/auth_token
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    error: Exception | None = None
    for _ in range(RAY_START_TRIES):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(home))
            break
        except Exception as exc:  # noqa: BLE001 - ray.init raises bare Exception on a timeout
            error = exc
            ray.shutdown()
    else:
        pytest.skip(f"Ray could not start on this machine: {type(error).__name__}: {error}")
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_workers() -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::StreamRunner"):
            found.append(p)
    return found


def test_ray_engine_survives_a_killed_worker_with_the_local_engines_memories(
    videomme, tmp_path, server, local_ray
):
    import threading

    from taskmem_lab.pipeline import run_benchmark

    source, videos = videomme
    params = MemorizeParams(interval=5, context_duration=10)
    common = dict(answerer=None, tag=TAG, params=params, cache=False, progress=False)
    run_benchmark("videomme", source, videos, "openai:local-vlm", out=tmp_path / "local", **common)
    expected = _memories(tmp_path / "local")
    server.requests.clear()

    server.hold_after = 7  # the 8th request and later wait until a worker has been killed
    outcome: dict = {}

    def drive() -> None:
        outcome["result"] = run_benchmark(
            "videomme", source, videos, "openai:local-vlm", out=tmp_path / "ray", engine="ray",
            streams=6, **common,
        )  # fmt: skip

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + 120
    while (len(server.requests) <= 8 or not _ray_workers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    victims = _ray_workers()
    assert victims, "no Ray worker was running a stream"
    time.sleep(0.5)
    victims[0].kill()  # SIGKILL: the runner dies mid-stream, with model calls open
    # Counted at once, before Ray restarts the runner: the calls asked so far, the clips stored.
    asked = len([b for b in server.requests if _is_episodic(b)])
    stored = sum(
        len(RunDir(p).finished()) for p in (tmp_path / "ray").glob("*/memory/*") if p.is_dir()
    )
    time.sleep(0.5)
    server.hold_after = None
    server.release.set()
    driver.join(timeout=240)
    assert not driver.is_alive()
    result = outcome["result"]
    assert {o.status for o in result.outcomes.values()} == {"complete"}, result.outcomes
    assert _memories(tmp_path / "ray") == expected
    calls = len([b for b in server.requests if _is_episodic(b)])
    assert 0 < stored < 19 and asked > stored
    # only the calls open when the worker died are asked again; no finished clip is
    assert calls == 19 + (asked - stored)
