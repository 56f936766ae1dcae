"""The `taskmem` command as a user runs it: subprocesses, real HTTP, SIGKILL and resume."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskmem_lab.store import RunDir
from taskmem_lab.testing.command import taskmem

# `taskmem` in subprocesses: end to end, out of the fast loop (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow

SPAN = re.compile(r"NEW SPAN: (\S+-\S+)")


def spans_of(requests):
    out = []
    for body in requests:
        text = "\n".join(
            p.get("text", "")
            for m in body["messages"]
            if isinstance(m["content"], list)
            for p in m["content"]
        )
        out.append(SPAN.search(text).group(1))
    return out


def one_line_error(proc, pattern, code=2):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("taskmem: error")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr


def test_memorize_and_show_with_fake_model(media, tmp_path):
    taskmem(
        "memorize", media["tone_27_3"], "--model", "fake", "--out", tmp_path, "--tag", "t", "-q"
    )
    run = tmp_path / "tone_27_3" / "memory" / "t"
    out = taskmem("show", run).stdout
    assert out.count("[fake model]") == 3 and "[00:00:20-00:00:27]" in out


def test_errors_are_one_line(media, tmp_path):
    one_line_error(
        taskmem("memorize", tmp_path / "none.mp4", "--model", "fake", check=False), "not found"
    )
    one_line_error(
        taskmem("memorize", media["corrupt"], "--model", "fake", "--out", tmp_path, check=False),
        "cannot decode",
    )
    one_line_error(
        taskmem("memorize", media["silent"], "--model", "gpt4", check=False), "unknown model spec"
    )
    env = {"TASKMEM_API_CONFIG": ""}
    one_line_error(
        taskmem("memorize", media["silent"], "--model", "openai:x", env=env, check=False),
        "TASKMEM_API_CONFIG",
    )
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "endpoints:\n  x:\n    base_url: http://127.0.0.1:9/v1\n    api_key_env: TASKMEM_TEST_UNSET_KEY\n"
    )
    env = {"TASKMEM_API_CONFIG": str(cfg)}
    one_line_error(
        taskmem("memorize", media["silent"], "--model", "openai:x", env=env, check=False),
        "TASKMEM_TEST_UNSET_KEY",
    )


def test_unreachable_server_is_one_line_and_keeps_the_failed_clip(media, tmp_path):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "endpoints:\n  dead:\n    base_url: http://127.0.0.1:9/v1\n    api_key: k\n    max_retries: 2\n    backoff_s: 0.01\n"
    )
    proc = taskmem(
        "memorize",
        media["silent"],
        "--model",
        "openai:dead",
        "--out",
        tmp_path,
        "--tag",
        "d",
        "-q",
        env={"TASKMEM_API_CONFIG": str(cfg)},
        check=False,
    )
    one_line_error(proc, "clip 0 .*gave up after 3 attempts.*run again to resume", code=1)
    (rec,) = RunDir(tmp_path / "silent" / "memory" / "d").records()
    assert rec.status == "failed" and "APIConnectionError" in rec.error


def test_killed_run_resumes_to_the_same_memory(media, tmp_path, server, api_config):
    video = media["three_min"]
    common = ["--model", "openai:local-vlm", "--no-cache", "-q"]
    # Uninterrupted reference run.
    taskmem("memorize", video, *common, "--out", tmp_path / "ref", "--tag", "m")
    ref = RunDir(tmp_path / "ref" / "three_min" / "memory" / "m")
    assert len(ref.finished()) == 18
    reference_requests = len(server.requests)
    assert reference_requests == 18

    # Same run, killed with SIGKILL while clip 7 (the 8th) waits for the server.
    server.hold_after = reference_requests + 7
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskmem_lab.cli",
            "memorize",
            str(video),
            *common,
            "--out",
            str(tmp_path / "run"),
            "--tag",
            "m",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = RunDir(tmp_path / "run" / "three_min" / "memory" / "m")
    deadline = time.time() + 120
    while len(server.requests) < reference_requests + 8 and time.time() < deadline:
        time.sleep(0.05)
    assert len(server.requests) == reference_requests + 8, "clip 7 never reached the server"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(run.finished()) == list(range(7))

    server.hold_after = None
    server.release.set()
    before = len(server.requests)
    taskmem("memorize", video, *common, "--out", tmp_path / "run", "--tag", "m")
    resumed = spans_of(server.requests[before:])
    finished_spans = spans_of(server.requests[:7])  # reference run's first 7 clips
    assert len(resumed) == 11 and not set(resumed) & set(finished_spans)

    got, want = run.finished(), ref.finished()
    assert sorted(got) == list(range(18))
    assert [r.episodic for r in got.values()] == [r.episodic for r in want.values()]
    assert [r.request_hash for r in got.values()] == [r.request_hash for r in want.values()]
    assert taskmem("show", run.path).stdout == taskmem("show", ref.path).stdout
    assert json.loads((run.path / "manifest.json").read_text())["status"] == "complete"


def test_tasks_and_supplement_from_the_cli(media, tmp_path, server, api_config):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "q1", "question": "What colour is the ball?", "time": 5}\n')
    supplement = tmp_path / "extra.txt"
    supplement.write_text("Mention every colour you see.")
    taskmem(
        "memorize",
        media["silent"],
        "--model",
        "openai:local-vlm",
        "--tasks",
        tasks,
        "--supplement-prompt",
        f"@{supplement}",
        "--out",
        tmp_path,
        "-q",
    )
    texts = [
        "\n".join(p.get("text", "") for p in r["messages"][1]["content"]) for r in server.requests
    ]
    assert "What colour is the ball?" in texts[0] and "Mention every colour" in texts[0]
    assert Path(tmp_path / "silent" / "memory" / "openai_local-vlm" / "manifest.json").exists()
