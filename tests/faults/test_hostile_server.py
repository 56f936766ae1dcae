"""Hostile HTTP-200 replies, a byte-trickling server and key-echoing errors against the real SDK."""

import json
import logging
import time

import pytest
from helpers import one_line_error, request

from taskmem_lab.backends import make_model
from taskmem_lab.backends.endpoints import Endpoint
from taskmem_lab.backends.openai_compat import redact
from taskmem_lab.errors import ModelError
from taskmem_lab.store import RunDir
from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.fake_openai_server import HOSTILE, FakeOpenAIServer, write_config


@pytest.mark.parametrize("shape", HOSTILE)
def test_a_hostile_reply_is_retried(api_config, server, shape):
    server.script(shape)
    reply = make_model("openai:local-vlm").generate(request())
    assert json.loads(reply.text)["description"].startswith("[fake server]")
    assert len(server.requests) == 2


@pytest.mark.parametrize("shape", HOSTILE)
def test_hostile_replies_end_in_a_clear_model_error(api_config, server, shape):
    server.script(*[shape] * 4)
    with pytest.raises(ModelError, match=r"gave up after 4 attempts .*MalformedReply: reply "):
        make_model("openai:local-vlm").generate(request())


@pytest.mark.slow
def test_memorize_stores_the_failed_clip_and_marks_the_run(media, tmp_path, server, api_config):
    server.script(*["truncated_json"] * 4)
    proc = taskmem(
        "memorize", media["silent"], "--model", "openai:local-vlm", "--no-cache", "-q",
        "--out", tmp_path, "--tag", "m", check=False,
    )  # fmt: skip
    one_line_error(proc, r"clip 0 .* failed: ModelError: .*truncated JSON", code=1)
    run = RunDir(tmp_path / "silent" / "memory" / "m")
    (record,) = run.records()
    assert record.status == "failed" and "MalformedReply" in record.error
    assert run.manifest()["status"] == "failed"


@pytest.mark.slow
def test_a_trickling_server_is_cut_off_at_the_deadline(tmp_path, monkeypatch, caplog):
    with FakeOpenAIServer(trickle_s=0.1) as srv:
        cfg = write_config(
            str(tmp_path / "e.yaml"), srv, timeout=1.0, max_retries=2, backoff_s=0.01,
            max_call_s=2.5,
        )  # fmt: skip
        monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
        srv.script("trickle", "trickle", "trickle")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING), pytest.raises(ModelError, match="AttemptTimeout"):
            make_model("openai:local-vlm").generate(request())
        took = time.monotonic() - started
    assert took < 4.0, f"the call took {took:.1f} s past its 2.5 s budget"
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 1 and all("AttemptTimeout" in r for r in retries)


@pytest.mark.slow
def test_one_trickled_attempt_then_success(tmp_path, monkeypatch):
    with FakeOpenAIServer(trickle_s=0.1) as srv:
        cfg = write_config(str(tmp_path / "e.yaml"), srv, timeout=1.0, backoff_s=0.01)
        monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
        srv.script("trickle")
        reply = make_model("openai:local-vlm").generate(request())
    assert "description" in reply.text and len(srv.requests) == 2


def test_default_worst_case_per_call_is_a_few_minutes():
    default = Endpoint(name="x", model="x")
    assert default.max_call_s <= 300 and default.timeout <= default.max_call_s


def test_server_error_text_is_redacted(api_config, server):
    server.script(*["leak_key"] * 4)
    with pytest.raises(ModelError) as info:
        make_model("openai:local-vlm").generate(request())
    text = str(info.value)
    assert "test-key" not in text and "sk-live" not in text and "[redacted]" in text


def test_redact_catches_key_shaped_text():
    text = redact("Bearer abc.def token=xyz123 sk-proj-ABCDEFGH12345678 my-secret", ("my-secret",))
    assert "abc.def" not in text and "xyz123" not in text and "ABCDEFGH" not in text
    assert "my-secret" not in text and text.count("[redacted]") == 4
