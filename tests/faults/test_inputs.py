"""Every input is checked at the edge: one error naming the field, never an endless schedule."""

import json
import logging
import subprocess
import sys

import pytest
from helpers import one_line_error

from taskmem_lab.backends.endpoints import endpoints_for
from taskmem_lab.errors import ConfigError, StoreError, TaskmemError, VideoError
from taskmem_lab.evaluation.evaluate import MemoryLocator
from taskmem_lab.media.stream import load_stream
from taskmem_lab.media.video import clip_schedule
from taskmem_lab.memory import Memory
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import safe_name
from taskmem_lab.store import memory_dir, perception_dir
from taskmem_lab.tasks import load_tasks
from taskmem_lab.testing.command import taskmem
from taskmem_lab.training.rewards import score_memory
from taskmem_lab.training.rollouts import rollout_path

ESCAPES = ["..", ".", "../x", "/etc", "a/b", "a\\b", "x\ny", "", "a" * 201]


def manifest(tmp_path, video, **entry):
    path = tmp_path / "stream.json"
    data = {"stream_id": "s", "files": [{"path": str(video), "start": 0, **entry}]}
    path.write_text(json.dumps(data))  # json writes NaN and Infinity as Python reads them
    return path


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"start": float("nan")}, "start"),
        ({"start": float("inf")}, "start"),
        ({"start": 1e300}, "start"),
        ({"start": "ten"}, "start"),
        ({"start": True}, "start"),
        ({"duration": float("nan")}, "duration"),
        ({"duration": float("-inf")}, "duration"),
        ({"duration": "30s"}, "duration"),
        ({"duration": 0}, "duration"),
        ({"duration": 10**400}, "duration"),
    ],
)
def test_bad_manifest_times_are_refused(media, tmp_path, entry, field):
    with pytest.raises(ConfigError, match=rf"files\[0\]\.{field} must"):
        load_stream(manifest(tmp_path, media["silent"], **entry))


def test_a_folder_as_path_and_a_bad_stream_id(tmp_path):
    with pytest.raises(ConfigError, match=r"files\[0\]\.path .* is a folder"):
        load_stream(manifest(tmp_path, tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stream_id": "../../x", "files": [{"path": "a", "start": 0}]}))
    with pytest.raises(ConfigError, match="stream_id '../../x' cannot be used as a folder"):
        load_stream(bad)
    with pytest.raises(VideoError, match="is a folder"):
        load_stream(tmp_path)


def test_a_duration_past_the_file_is_clamped_with_a_warning(media, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        stream = load_stream(manifest(tmp_path, media["silent"], duration=60.0))
    assert stream.files[0].duration == pytest.approx(12.0, abs=0.2)
    assert "runs past the file's decodable end" in caplog.text


@pytest.mark.slow
def test_nan_and_huge_manifests_fail_fast_under_a_memory_cap(media, tmp_path):
    """The CLI refuses them in a process limited to 3 GiB of address space, in seconds."""
    cases = [
        manifest(tmp_path, media["silent"], start=float("nan")),
        manifest(tmp_path / "..", media["silent"], duration=float("inf")),
    ]
    # The cap is set by the child itself before the CLI starts (no `preexec_fn`: a fork that
    # runs Python code while the test process has threads can hang).
    capped = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
        "sys.argv = ['taskmem', *sys.argv[1:]]; "
        "runpy.run_module('taskmem_lab.cli', run_name='__main__')"
    )
    for path in cases:
        proc = subprocess.run(
            [sys.executable, "-c", capped, "memorize", str(path), "--model", "fake"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        one_line_error(proc, r"files\[0\]\.(start|duration) must be a finite number")


def test_the_schedule_has_an_upper_bound():
    with pytest.raises(VideoError, match="more than 1000000"):
        clip_schedule([(0.0, 1e9)], 1.0, 1.0)
    with pytest.raises(VideoError, match="not finite"):
        clip_schedule([(0.0, float("inf"))], 10.0, 50.0)


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"interval": float("nan")}, "interval"),
        ({"interval": 1e9, "context_duration": 1e9}, "interval"),
        ({"context_duration": float("inf")}, "context_duration"),
        ({"start": float("nan")}, "start"),
        ({"max_frames": 10**6}, "max_frames"),
        ({"frame_fps": 1000.0}, "frame_fps"),
    ],
)
def test_memorize_parameters_have_sane_bounds(kw, name):
    with pytest.raises(ConfigError, match=f"parameter '{name}'"):
        MemorizeParams(**kw)


@pytest.mark.slow
def test_interval_from_the_cli_is_one_line(media, tmp_path):
    proc = taskmem("memorize", media["silent"], "--model", "fake", "--interval", "nan",
                   "--out", tmp_path, check=False)  # fmt: skip
    one_line_error(proc, "parameter 'interval'")


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"nonsense": 1}, "unknown field 'nonsense'"),
        ({"max_concurrency": "8"}, "max_concurrency must be an integer"),
        ({"max_concurrency": 0}, "max_concurrency must be in"),
        ({"timeout": -1}, "timeout must be in"),
        ({"timeout": float("nan")}, "timeout must be in"),
        ({"timeout": True}, "timeout must be a number"),
        ({"max_retries": 1.5}, "max_retries must be an integer"),
        ({"max_retries": 1000}, "max_retries must be in"),
        ({"image_detail": "ultra"}, "image_detail must be one of"),
        ({"base_url": "ftp://x"}, "base_url must start with http"),
        ({"base_url": 12}, "base_url must be a string"),
    ],
)
def test_endpoint_config_fields_are_checked(entry, field):
    config = {"endpoints": {"e": {"base_url": "http://127.0.0.1:1/v1", "api_key": "k", **entry}}}
    with pytest.raises(ConfigError, match=f"endpoint 'e': {field}"):
        endpoints_for("e", config)


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"question": "q", "time": 1}\n\n{"question": "q", "time": "x"}\n', ".jsonl", "line 3"),
        ('{"question": "q", "time": 1}\n{"question": "q", "time": NaN}\n', ".jsonl", "line 2"),
        ('{"question": "q", "time": 1}\n{oops\n', ".jsonl", "line 2: not valid JSON"),
        ('[{"question": "q", "time": 1, "options": "A, B"}]', ".json", "task 0: 'options'"),
        ('[{"question": 5, "time": 1}]', ".json", "task 0: 'question'"),
        ('[{"question": "q", "time": Infinity}]', ".json", "task 0: 'time'"),
    ],
)
def test_task_files_name_the_bad_line_and_field(tmp_path, text, suffix, message):
    path = tmp_path / f"tasks{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_tasks(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"start": NaN, "end": 1, "text": "t"}', "start must be a finite"),
        (b'{"start": 0, "end": Infinity, "text": "t"}', "end must be a finite"),
        (b'{"start": 0, "end": 1, "text": "\xff\xfe"}', "not UTF-8"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply|must be a JSON object"),
        (b'{"start": "0", "end": 1, "text": "t"}', "start must be a finite"),
        (b'{"start": 0, "end": 1, "text": ["t"]}', "text must be a string"),
        (b'{"start": 0, "end": 1, "text": "t", "clip": "one"}', "clip must be an integer"),
        (b'{"start": 0, "end": 1, "text": "t", "knowledge": [1]}', "knowledge must be"),
        (b'{"start": 5, "end": 1, "text": "t"}', "before start"),
        (b'{"start": 0, "end": 1, "text": "t", "x": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_jsonl_memories_are_checked_line_by_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"start": 0, "end": 1, "text": "fine"}\n' + line + b"\n")
    with pytest.raises(StoreError, match=rf"m\.jsonl:2.*({message})"):
        Memory.from_jsonl(path)


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_become_paths_cannot_leave_their_root(tmp_path, name):
    calls = [
        lambda: safe_name(name, "tag"),
        lambda: memory_dir(tmp_path, "video", name),
        lambda: memory_dir(tmp_path, name, "tag"),
        lambda: perception_dir(tmp_path, name, "h"),
        lambda: rollout_path(tmp_path, name),
        lambda: MemoryLocator(tmp_path, "m").find(name),
        lambda: score_memory(None, None, None, name),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(ConfigError, match="cannot be used as a folder name|not a plain name"):
            call()


@pytest.mark.slow
def test_cli_tag_escape_is_one_line_and_writes_nothing(media, tmp_path):
    proc = taskmem("memorize", media["silent"], "--model", "fake", "--out", tmp_path / "root",
                   "--tag", "../../escaped", check=False)  # fmt: skip
    one_line_error(proc, "tag '../../escaped' cannot be used as a folder name")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "root").exists()


def test_safe_names_pass():
    for name in ("A1_JAKE", "openai_gpt-4o_high", "tmSmpl0001a", "-xYz_09", "my video"):
        assert safe_name(name, "tag") == name
    assert issubclass(ConfigError, TaskmemError)
