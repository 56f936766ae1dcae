"""Random SIGKILL of `taskmem perceive`: the resumed perception equals an uninterrupted one."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer, write_config


def _records(root):
    (folder,) = (root / "tone_27_3" / "perception").iterdir()
    rows = [json.loads(x) for x in (folder / "clips.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("clip", "start", "end", "transcript", "identities")} for r in rows]


def _count(root):
    folder = root / "tone_27_3" / "perception"
    clips = list(folder.glob("*/clips.jsonl")) if folder.is_dir() else []
    return sum(1 for _ in clips[0].open()) if clips else 0


@pytest.mark.slow
def test_random_kills_of_perceive_leave_the_same_perception(media, tmp_path, monkeypatch):
    video = media["tone_27_3"]
    args = ["perceive", video, "--no-faces", "--asr-backend", "vlm", "--asr-model"]
    args += ["openai:local-vlm", "--no-voices", "-q", "--interval", "3", "--context-duration", "6"]
    with FakeOpenAIServer(latency_s=0.3) as srv:
        cfg = write_config(str(tmp_path / "e.yaml"), srv, timeout=30.0)
        monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
        taskmem(*args, "--out", tmp_path / "ref")
        want = _records(tmp_path / "ref")
        monkeypatch.setenv("TASKMEM_CACHE", str(tmp_path / "run-cache.sqlite"))  # asks again
        rng = random.Random(15)
        partial = 0
        for _ in range(6):
            if _count(tmp_path / "run") >= len(want):
                break
            # Hold the server at a random request ahead, kill while the clip waits for it.
            srv.release.clear()
            srv.hold_after = len(srv.requests) + rng.randint(1, 4)
            proc = subprocess.Popen(
                [sys.executable, "-m", "taskmem_lab.cli", *map(str, args), "--out", str(tmp_path / "run")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.time() + 60
            while len(srv.requests) <= srv.hold_after and proc.poll() is None:
                assert time.time() < deadline, "the held request never arrived"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            srv.hold_after = None
            srv.release.set()
            partial += 0 < _count(tmp_path / "run") < len(want)
        taskmem(*args, "--out", tmp_path / "run")
    assert partial >= 1, "no kill landed in the middle of the stream"
    assert _records(tmp_path / "run") == want
