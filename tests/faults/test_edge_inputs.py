"""Inputs validated at the edge: one line naming the field, no traceback, nothing followed out of
a run folder (issue 22, item 6)."""

import errno
import json
import math
import os

import pytest

from taskmem_lab.bench.base import read_rows
from taskmem_lab.bench.hub import load_benchmark
from taskmem_lab.cli import describe_os_error, main
from taskmem_lab.cli.evaluate import prices
from taskmem_lab.errors import BenchmarkError, ConfigError, StoreError
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memory import Memory
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import AsrParams
from taskmem_lab.schema import ClipRecord
from taskmem_lab.store import FolderLock, append_jsonl, atomic_write_json, open_run

BAD_BYTES = b'{"question": "caf\xe9 \xff\xfe"}\n'
ROW = {
    "video_id": "0", "duration": "short", "domain": "d", "sub_category": "s", "videoID": "v0",
    "question_id": "q0", "task_type": "t", "question": "Which?", "options": ["A. x", "B. y"],
    "answer": "A",
}  # fmt: skip


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: MemorizeParams(temperature=math.inf), "temperature"),
        (lambda: MemorizeParams(temperature=float("nan")), "temperature"),
        (lambda: QAParams(evidence_pad_s=math.inf), "evidence_pad_s"),
        (lambda: QAParams(temperature=math.inf), "temperature"),
        (lambda: AsrParams(temperature=math.inf), "temperature"),
        (lambda: MemorizeParams(interval=0.0001, context_duration=1), "interval"),
    ],
)
def test_params_refuse_infinite_and_absurd_values(make, field):
    with pytest.raises(ConfigError, match=rf"parameter '{field}': must"):
        make()


def test_cli_edges_are_one_line(media, tmp_path, capsys):
    bad = tmp_path / "prompt.txt"
    bad.write_bytes(b"watch the \xff\xfe kitchen")
    base = ["memorize", str(media["silent"]), "--model", "fake", "--out", str(tmp_path), "-q"]
    for extra, said in (
        (["--temperature", "inf"], "'temperature': must be a finite number"),
        (["--temperature", "1e400"], "'temperature': must be a finite number"),
        (["--interval", "0.0001", "--context-duration", "1"], "'interval': must be in"),
        (["--supplement-prompt", f"@{bad}"], "prompt.txt is not UTF-8 text"),
    ):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("taskmem: error")]
        assert len(lines) == 1 and said in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "silent").exists()


@pytest.mark.parametrize("value", ["m=nan,1", "m=1,-2", "m=1e400,1", "m=1,inf"])
def test_prices_are_finite_and_not_negative(value):
    with pytest.raises(ConfigError, match=r"--price .* must be a number of USD"):
        prices([value])
    assert prices(["m=2.5,10"]) == {"m": (2.5, 10.0)}


def test_non_utf8_question_files_and_a_video_as_source(tmp_path, media):
    for name in ("q.json", "q.jsonl"):
        (tmp_path / name).write_bytes(BAD_BYTES)
        with pytest.raises(BenchmarkError, match="is not UTF-8 text"):
            read_rows(tmp_path / name)
    with pytest.raises(BenchmarkError, match=r"silent\.mp4: expected one of"):
        load_benchmark("videomme", media["silent"])


def test_a_null_question_is_refused_not_asked_as_none(tmp_path):
    source = tmp_path / "mme.json"
    source.write_text(json.dumps([{**ROW, "question": None}]))
    with pytest.raises(BenchmarkError, match=r"'question' must be text, got None"):
        load_benchmark("videomme", source)


def test_torn_jsonl_lines_are_named_by_their_real_line(tmp_path):
    good = json.dumps(ROW)
    questions = tmp_path / "q.jsonl"
    # line 2 holds a LINE SEPARATOR inside a string: still one line to an editor
    questions.write_text(good + "\n" + json.dumps({**ROW, "question": "a\u2028b"}) + '\n\n{"vid')
    with pytest.raises(BenchmarkError, match=r"q\.jsonl, line 4 is not valid JSON"):
        read_rows(questions)
    memory = tmp_path / "m.jsonl"
    entry = {"start": 0, "end": 1, "text": "x"}
    memory.write_text(json.dumps(entry) + "\n\n" + json.dumps({**entry, "end": -1}) + "\n")
    with pytest.raises(StoreError, match=r"m\.jsonl:3: end -1"):
        Memory.from_jsonl(memory)
    memory.write_text(json.dumps(entry) + "\n" + json.dumps({**entry, "text": "last"}))
    assert [e.text for e in Memory.from_jsonl(memory).entries] == [
        "x",
        "last",
    ]  # no newline at the end


def test_a_manifest_offset_past_the_end_and_overlapping_files(media, tmp_path):
    video = str(media["silent"])  # 12 s
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"files": [{"path": video, "start": 0, "offset": 990,
                                           "duration": 30}]}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"files\[0\]\.offset 990(\.0)? is past the file's end"):
        load_stream(path)
    files = [
        {"path": video, "start": 0},
        {"path": video, "start": 100},
        {"path": video, "start": 5},
    ]
    path.write_text(json.dumps({"files": files}))
    with pytest.raises(ConfigError, match=r"files\[2\] starts at 5 s, inside files\[0\]"):
        load_stream(path)
    files[2]["start"] = 12.2  # abutting within rounding is fine
    path.write_text(json.dumps({"files": files}))
    assert len(load_stream(path).files) == 3


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    for write, path in (
        (lambda p: append_jsonl(p, {"a": 1}), tmp_path / "clips.jsonl"),
        (lambda p: atomic_write_json(p, {"a": 1}), tmp_path / "manifest.json"),
    ):
        with pytest.raises(OSError) as info:
            write(path)
        assert info.value.filename == str(path)
        assert str(path) in describe_os_error(info.value) and "disk full" in describe_os_error(
            info.value
        )


@pytest.mark.parametrize("name", ["clips.jsonl", "manifest.json", ".lock", "sub/x"])
def test_a_symlink_in_a_run_folder_is_refused_not_followed(tmp_path, name):
    run = tmp_path / "run"
    manifest = {"kind": "memory", "stream_id": "s", "model": "fake", "params": {}}
    with FolderLock(run, "memorize run"):
        open_run(run, manifest).append(
            ClipRecord(clip=0, start=0.0, end=1.0, window=(0.0, 1.0), status="ok")
        )
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    target = run / name
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    target.symlink_to(outside)
    refused = rf"{name} is a symbolic link .*not followed"
    with pytest.raises(StoreError, match=refused), FolderLock(run, "memorize run"):
        open_run(run, manifest)
    assert outside.read_text() == "precious\n"
