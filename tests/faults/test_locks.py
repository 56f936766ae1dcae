"""One writer per run: a second memorize, perceive or eval on the same folder is refused at once,
naming the holder; a lock left by a killed process is taken over."""

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import one_line_error

from taskmem_lab.errors import LockedError
from taskmem_lab.store import FolderLock, RunDir
from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.fake_openai_server import write_config

SAMPLES = Path(__file__).resolve().parents[2] / "benchmarks"

HOLD = (
    "import sys, time\n"
    "from taskmem_lab.store import FolderLock\n"
    "lock = FolderLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture()
def holder():
    """`holder(folder)` starts a process that holds the folder's lock until the test ends."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_the_second_holder_is_refused_with_the_first_ones_name(tmp_path, holder):
    proc = holder(tmp_path / "run")
    with pytest.raises(LockedError, match=rf"in use by another run \(pid {proc.pid} on .*started"):
        FolderLock(tmp_path / "run").acquire()


def test_a_dead_holders_lock_is_taken_over(tmp_path, holder, caplog):
    proc = holder(tmp_path / "run")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with caplog.at_level(logging.WARNING), FolderLock(tmp_path / "run") as lock:
        assert lock.held
        note = json.loads((tmp_path / "run" / ".lock").read_text())
        assert note["pid"] != proc.pid
    assert f"pid {proc.pid}" in caplog.text and "took over" in caplog.text
    assert (tmp_path / "run" / ".lock").read_text() == ""  # a clean release leaves no holder


@pytest.mark.slow
def test_two_memorize_processes_one_refused_data_single(media, tmp_path, server, monkeypatch):
    cfg = write_config(str(tmp_path / "e.yaml"), server, timeout=120.0)  # the hold is no timeout
    monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
    video = media["three_min"]
    args = ["memorize", video, "--model", "openai:local-vlm", "--no-cache", "-q"]
    args += ["--out", tmp_path, "--tag", "m"]
    server.hold_after = 2  # the first process waits on its third clip, holding the run
    first = subprocess.Popen(
        [sys.executable, "-m", "taskmem_lab.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while len(server.requests) < 3 and time.time() < deadline:
        time.sleep(0.05)
    second = taskmem(*args, check=False)
    one_line_error(second, rf"in use by another memorize run \(pid {first.pid} on ")
    assert len(server.requests) == 3  # the refused process asked nothing
    server.release.set()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    run = RunDir(tmp_path / "three_min" / "memory" / "m")
    clips = [r.clip for r in run.records()]
    assert clips == list(range(18))  # each clip written once
    assert run.manifest()["status"] == "complete"


@pytest.mark.slow
def test_eval_on_a_locked_results_folder_is_refused(tmp_path, holder):
    from taskmem_lab.schema import ClipRecord
    from taskmem_lab.store import memory_dir, open_run

    out = tmp_path / "results"
    memories = tmp_path / "memories"
    manifest = {"stream_id": "tmSmpl0001a", "model": "t", "params": {}, "source": [],
                "prompts": {}, "tasks": None}  # fmt: skip
    run = open_run(memory_dir(memories, "tmSmpl0001a", "m"), manifest)
    run.append(ClipRecord(0, 0.0, 10.0, (0.0, 10.0), "ok", episodic="A cook cracks eggs."))
    proc = holder(out)
    common = ["eval", "videomme", "--source", SAMPLES / "videomme" / "sample"]
    common += ["--memories", memories, "--tag", "m", "--answerer", "fake", "--no-cache", "-q"]
    refused = taskmem(*common, "--out", out, check=False)
    one_line_error(refused, rf"in use by another evaluation \(pid {proc.pid} ")
    proc.kill()
    proc.wait()
    taskmem(*common, "--out", out)
    assert json.loads((out / "run.json").read_text())["status"] != "running"


@pytest.mark.slow
def test_perceive_on_a_locked_perception_folder_is_refused(media, tmp_path, holder, api_config):
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.perception.params import PerceptionChoices
    from taskmem_lab.perception.perceiver import StreamPerceiver, perception_params

    video = media["tone_27_3"]
    choices = PerceptionChoices(asr_backend="vlm", asr_model="openai:local-vlm", voices=False)
    perception = perception_params(False, True, choices)
    folder = StreamPerceiver(load_stream(video), perception, MemorizeParams(), tmp_path).path
    proc = holder(folder)
    args = ["perceive", video, "--out", tmp_path, "--no-faces", "--asr-backend", "vlm"]
    args += ["--asr-model", "openai:local-vlm", "--no-voices", "-q"]
    refused = taskmem(*args, check=False)
    one_line_error(refused, rf"in use by another perception \(pid {proc.pid} ")
    proc.kill()
    proc.wait()
    done = taskmem(*args)
    assert "perception:" in done.stdout
    clips = [json.loads(x)["clip"] for x in (folder / "clips.jsonl").read_text().splitlines()]
    assert clips == sorted(set(clips))


@pytest.mark.slow
def test_two_eval_processes_one_refused_data_single(tmp_path, server, monkeypatch):
    from taskmem_lab.schema import ClipRecord
    from taskmem_lab.store import memory_dir, open_run

    cfg = write_config(str(tmp_path / "e.yaml"), server, timeout=120.0)
    monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
    for video_id in ("tmSmpl0001a", "tmSmpl0002b"):
        manifest = {"stream_id": video_id, "model": "t", "params": {}, "source": [],
                    "prompts": {}, "tasks": None}  # fmt: skip
        run = open_run(memory_dir(tmp_path / "mem", video_id, "m"), manifest)
        run.append(ClipRecord(0, 0.0, 10.0, (0.0, 10.0), "ok", episodic="A cook cracks eggs."))
    out = tmp_path / "res"
    args = ["eval", "videomme", "--source", SAMPLES / "videomme" / "sample", "--memories"]
    args += [tmp_path / "mem", "--tag", "m", "--answerer", "openai:local-vlm", "--no-cache"]
    args += ["-q", "--concurrency", "1", "--out", out]
    server.hold_after = 1  # the first process waits on its second question, holding the folder
    first = subprocess.Popen(
        [sys.executable, "-m", "taskmem_lab.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while len(server.requests) < 2 and time.time() < deadline:
        time.sleep(0.05)
    second = taskmem(*args, check=False)
    one_line_error(second, rf"in use by another evaluation \(pid {first.pid} on ")
    asked = len(server.requests)
    server.release.set()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    ids = [json.loads(x)["id"] for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(server.requests) >= asked


@pytest.mark.slow
def test_two_perceive_processes_one_refused_data_single(media, tmp_path, server, monkeypatch):
    cfg = write_config(str(tmp_path / "e.yaml"), server, timeout=120.0)
    monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
    args = ["perceive", media["tone_27_3"], "--out", tmp_path, "--no-faces", "--asr-backend"]
    args += ["vlm", "--asr-model", "openai:local-vlm", "--no-voices", "-q"]
    server.hold_after = 1  # the first process waits on its second clip, holding the folder
    first = subprocess.Popen(
        [sys.executable, "-m", "taskmem_lab.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while len(server.requests) < 2 and time.time() < deadline:
        time.sleep(0.05)
    second = taskmem(*args, check=False)
    one_line_error(second, rf"in use by another perception \(pid {first.pid} on ")
    server.release.set()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    (folder,) = (tmp_path / "tone_27_3" / "perception").iterdir()
    clips = [json.loads(x)["clip"] for x in (folder / "clips.jsonl").read_text().splitlines()]
    assert clips == list(range(len(clips))) and len(clips) == 3
