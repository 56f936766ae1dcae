"""No key, whole or partial, anywhere: error bodies that echo it, and a key inside the address."""

import json
import logging
from pathlib import Path

import pytest
from helpers import request

from taskmem_lab.backends import make_model
from taskmem_lab.cli import main
from taskmem_lab.errors import ModelError
from taskmem_lab.testing.fake_openai_server import write_config

KEY = "sk-live-Q7f3ZkP9wX2mN8vB4cR6tY1uJ5hG0dLa"
OFFSETS = (0, 60, 200, 290, 350)


def leaks(text: str) -> list[str]:
    """Every run of 8 characters of the key found in `text`."""
    return sorted({KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in text})


def body(status: int, offset: int) -> str:
    text = "x" * offset + KEY + " and then some more words " * 4
    if status == 200:
        return f"<html>{text}</html>"  # junk sent as 200: quoted in the error
    return json.dumps({"error": {"message": text, "type": "server_error"}})


@pytest.fixture()
def keyed(tmp_path, server, monkeypatch):
    """`openai:local-vlm` with the key in the config and, as user:KEY@, in the address."""
    cfg = tmp_path / "config" / "endpoints.yaml"
    cfg.parent.mkdir()
    url = server.base_url.replace("http://", f"http://user:{KEY}@")
    write_config(str(cfg), server, base_url=url, api_key=KEY, max_retries=1, backoff_s=0.01)
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(cfg))
    return cfg


@pytest.mark.parametrize("status", [200, 400, 500])
def test_an_echoed_key_is_redacted_at_every_offset(keyed, server, caplog, status):
    for offset in OFFSETS:
        server.script_raw(status, body(status, offset))
        server.script_raw(status, body(status, offset))
        with caplog.at_level(logging.INFO), pytest.raises(ModelError) as info:
            make_model("openai:local-vlm").generate(request())
        assert not leaks(str(info.value)), (offset, str(info.value))
    assert not leaks(caplog.text), caplog.text


def test_a_key_is_in_no_file_stderr_or_warning(media, tmp_path, keyed, server, capsys, caplog):
    server.script("ok")  # clip 0 is fine, and its reply echoes the key:
    server.script_raw(500, body(500, 60))
    server.script_raw(500, body(500, 290))
    out = tmp_path / "out"
    args = ["-v", "memorize", str(media["silent"]), "--model", "openai:local-vlm"]
    args += ["--interval", "6", "--context-duration", "6", "--out", str(out), "--tag", "m"]
    with caplog.at_level(logging.INFO):
        assert main(args) == 1
        echo = {"description": f"the screen shows {KEY[:30]} then {KEY}"}
        server.script_raw(200, _completion(json.dumps(echo)))
        assert main(args) == 0
    err = capsys.readouterr().err
    assert "taskmem: error" in err and not leaks(err) and not leaks(caplog.text)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name != "config"]
    assert any(p.name == "manifest.json" for p in written)
    for path in written:
        assert not leaks(path.read_bytes().decode("utf-8", "replace")), path
    manifest = json.loads(next(p for p in written if p.name == "manifest.json").read_text())
    assert manifest["endpoint"]["endpoints"][0]["address"] == server.base_url
    assert "user" not in Path(out).joinpath("silent/memory/m/clips.jsonl").read_text()


def _completion(content: str) -> str:
    message = {"role": "assistant", "content": content}
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
