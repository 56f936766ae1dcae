"""The real `openai` SDK against a real HTTP server on 127.0.0.1."""

import json
import threading

import numpy as np
import pytest

from taskmem_lab.backends import Message, Request, ResponseCache, make_model
from taskmem_lab.backends.base import TextPart, VideoPart
from taskmem_lab.errors import ModelError
from taskmem_lab.media.video import Frame
from taskmem_lab.testing.fake_openai_server import write_config


def request(n_frames: int = 2, text: str = "NEW SPAN: 00:00:00-00:00:10") -> Request:
    frames = tuple(Frame(float(i), np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(n_frames))
    parts = (TextPart(text), VideoPart(frames, fps=1.0))
    return Request(
        (Message.text("system", "write memory"), Message("user", parts)), purpose="episodic"
    )


def test_plain_call_records_usage_latency_and_frames(api_config, server):
    reply = make_model("openai:local-vlm").generate(request(3))
    assert json.loads(reply.text)["description"].startswith(
        "[fake server] entry for 00:00:00-00:00:10"
    )
    assert reply.usage["prompt_tokens"] > 0 and reply.usage["completion_tokens"] > 0
    assert reply.latency_s > 0 and reply.model == "fake-vlm"
    body = server.requests[0]
    assert server.purposes == ["episodic"]  # carried in the X-Taskmem-Purpose header
    assert "purpose" not in json.dumps(body)  # never in what a real server reads
    images = [p for p in body["messages"][1]["content"] if p["type"] == "image_url"]
    assert len(images) == 3 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize("failure", ["429", "500", pytest.param("hang", marks=pytest.mark.slow)])
def test_retries_then_succeeds(api_config, server, failure):
    server.script(failure, failure)
    reply = make_model("openai:local-vlm").generate(request())
    assert "description" in reply.text
    assert len(server.requests) == 3


def test_gives_up_with_a_clear_error(api_config, server):
    server.script("500", "500", "500", "500")
    with pytest.raises(ModelError, match="gave up after 4 attempts"):
        make_model("openai:local-vlm").generate(request())


def test_unreachable_server(tmp_path, monkeypatch):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "endpoints:\n  dead:\n    base_url: http://127.0.0.1:9/v1\n    api_key: k\n    max_retries: 1\n    backoff_s: 0.01\n"
    )
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(cfg))
    with pytest.raises(ModelError, match="127.0.0.1:9.*APIConnectionError"):
        make_model("openai:dead").generate(request())


def test_image_size_limit_downgrades_detail_once(api_config, server):
    server.script("image_limit")
    model = make_model("openai:local-vlm")
    model.generate(request())
    model.generate(request(1))
    details = [
        [p["image_url"]["detail"] for p in r["messages"][1]["content"] if p["type"] == "image_url"]
        for r in server.requests
    ]
    assert details == [["auto", "auto"], ["low", "low"], ["low"]]


def test_think_block_is_separated(api_config, server):
    server.script("think")
    reply = make_model("openai:local-vlm").generate(request())
    assert reply.text.startswith("{") and "reasoning about the clip" in reply.reasoning


def test_mp4_mode_sends_one_inline_video(tmp_path, server, monkeypatch):
    cfg = write_config(str(tmp_path / "e.yaml"), server, video="mp4")
    monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
    make_model("openai:local-vlm").generate(request(4))
    content = server.requests[0]["messages"][1]["content"]
    videos = [p for p in content if p["type"] == "video_url"]
    assert len(videos) == 1 and videos[0]["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert not [p for p in content if p["type"] == "image_url"]


def test_suffixes_reach_the_server(tmp_path, server, monkeypatch):
    import yaml

    cfg = tmp_path / "e.yaml"
    entry = {"base_url": server.base_url, "api_key": "k"}
    cfg.write_text(yaml.safe_dump({"endpoints": {"gpt-5": entry, "qwen": entry}}))
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(cfg))
    make_model("openai:gpt-5#high#low").generate(request())
    make_model("openai:qwen#think").generate(request())
    first, second = server.requests
    assert first["reasoning_effort"] == "high" and first["verbosity"] == "low"
    assert "temperature" not in first and first["max_completion_tokens"] == 2048
    assert second["chat_template_kwargs"] == {"enable_thinking": True}


def test_concurrency_is_bounded_per_endpoint(tmp_path, server, monkeypatch):
    server.latency_s = 0.15
    cfg = write_config(str(tmp_path / "e.yaml"), server, name="bounded", max_concurrency=2)
    monkeypatch.setenv("TASKMEM_API_CONFIG", cfg)
    model = make_model("openai:bounded")
    threads = [
        threading.Thread(target=model.generate, args=(request(1, f"NEW SPAN: {i}-x"),))
        for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.requests) == 6 and server.max_in_flight == 2


def test_cache_makes_a_rerun_free(api_config, server, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    first = make_model("openai:local-vlm", cache).generate(request())
    again = make_model("openai:local-vlm", ResponseCache(tmp_path / "c.sqlite")).generate(request())
    assert again.cached and again.text == first.text and len(server.requests) == 1
    make_model("openai:local-vlm", cache).generate(request(text="NEW SPAN: other"))
    assert len(server.requests) == 2
    assert b"test-key" not in (tmp_path / "c.sqlite").read_bytes()
