"""Server replies are bounded in size, and JSON from outside that is nested too deeply is one
clear line wherever it is read (replies, question files, manifests, endpoint configs, tasks)."""

import json

import pytest
from helpers import request

from taskmem_lab.backends import make_model
from taskmem_lab.backends.endpoints import read_config
from taskmem_lab.backends.openai_compat import MalformedReply, read_capped
from taskmem_lab.bench.base import read_rows
from taskmem_lab.errors import BenchmarkError, ConfigError, ModelError, ParseError, StoreError
from taskmem_lab.media.stream import load_stream
from taskmem_lab.replies import parse_object
from taskmem_lab.store import RunDir
from taskmem_lab.tasks import load_tasks
from taskmem_lab.testing.fake_openai_server import write_config

DEEP = "[" * 100_000


def test_a_deeply_nested_reply_is_a_clear_model_error(api_config, server):
    for _ in range(4):
        server.script_raw(200, DEEP)
    with pytest.raises(ModelError, match="nested too deeply"):
        make_model("openai:local-vlm").generate(request())


def test_a_reply_past_max_reply_bytes_is_refused(tmp_path, server, monkeypatch):
    cfg = write_config(
        str(tmp_path / "e.yaml"), server, max_reply_bytes=16_384, max_retries=1, backoff_s=0.01
    )
    monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
    content = json.dumps({"description": "word " * 40_000})
    huge = {"choices": [{"message": {"role": "assistant", "content": content}}]}
    server.script_raw(200, json.dumps(huge))
    server.script_raw(200, json.dumps(huge))
    with pytest.raises(ModelError, match=r"reply is too long \(200,\d+ bytes; max_reply_bytes"):
        make_model("openai:local-vlm").generate(request())
    assert make_model("openai:local-vlm").generate(request()).text  # a normal reply still fits


class ReplayStream:
    """A streamed reply without a declared length (chunked), replayed from chunks."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.http_response = type("R", (), {"headers": {}})()

    def iter_bytes(self, size):
        yield from self.chunks


def test_a_chunked_reply_is_cut_at_the_limit():
    assert read_capped(ReplayStream([b"a" * 500, b"b" * 500]), 1024) == b"a" * 500 + b"b" * 500
    with pytest.raises(MalformedReply, match="more than 1,024 bytes"):
        read_capped(ReplayStream([b"a" * 1000, b"b" * 1000, b"c" * 10**6]), 1024)


def test_max_reply_bytes_is_checked(tmp_path, server, monkeypatch):
    cfg = write_config(str(tmp_path / "e.yaml"), server, max_reply_bytes=10)
    monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
    with pytest.raises(ConfigError, match="max_reply_bytes"):
        make_model("openai:local-vlm")


def test_nested_json_from_outside_is_one_line_everywhere(tmp_path, monkeypatch):
    deep = tmp_path / "deep"
    deep.mkdir()
    for name in ("q.json", "q.jsonl", "s.json", "s.yaml", "e.json", "t.json", "t.jsonl"):
        (deep / name).write_text(DEEP)
    (deep / "t.yaml").write_text("a: " * 5_000 + "1")  # YAML nested 5000 mappings deep
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_object(DEEP)
    for name in ("q.json", "q.jsonl"):
        with pytest.raises(BenchmarkError, match="nested too deeply"):
            read_rows(deep / name)
    for name in ("s.json", "s.yaml"):
        with pytest.raises(ConfigError, match="nested too deeply"):
            load_stream(deep / name)
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_config(deep / "e.json")
    for name in ("t.json", "t.jsonl", "t.yaml"):
        with pytest.raises(ConfigError, match="nested too deeply|not valid"):
            load_tasks(deep / name)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(DEEP)
    with pytest.raises(StoreError, match="nested too deeply"):
        RunDir(run).manifest()
