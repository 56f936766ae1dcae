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

from taskmem_lab.prompts import render
from taskmem_lab.store import RunDir
from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer
from taskmem_lab.testing.media import test_video

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
        test_video(
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
