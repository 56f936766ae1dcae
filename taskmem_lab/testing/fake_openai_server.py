"""A real HTTP server on 127.0.0.1 that speaks the chat-completions API, for tests and benchmarks.

It is a test double: replies are made from the request (the NEW SPAN marker, the number of
images) and start with `[fake server]`. It can be scripted to answer 429, 500, an image-size
400, malformed JSON, or to hang past the client's timeout, and it can hold every request after
the N-th until released (to kill a client mid-run). Every request body is recorded.

    with FakeOpenAIServer() as server:
        server.script("429", "ok")
        ... base_url = server.base_url
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MARK = "[fake server]"
_SPAN = re.compile(r"NEW SPAN: (\S+)-(\S+)")
BEHAVIOURS = ("ok", "429", "500", "hang", "malformed", "image_limit", "think")


def _texts(body: dict[str, Any]) -> list[str]:
    out = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p.get("text", "") for p in content if p.get("type") == "text"]
    return out


def reply_for(body: dict[str, Any]) -> str:
    """The deterministic reply content for a request body."""
    texts = _texts(body)
    joined = "\n".join(texts)
    images = sum(
        1
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") in ("image_url", "video_url")
    )
    span = _SPAN.search(joined)
    where = f"{span.group(1)}-{span.group(2)}" if span else "?"
    digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
    system = texts[0] if texts else ""
    if '"knowledge"' in system:
        return json.dumps({"knowledge": [f"{MARK} fact about {where} ({digest})"]})
    return json.dumps(
        {"description": f"{MARK} entry for {where}: {images} visual parts, request {digest}."}
    )


class FakeOpenAIServer:
    def __init__(self, latency_s: float = 0.0, hang_s: float = 3.0) -> None:
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._script: list[str] = []
        self._lock = threading.Lock()
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *behaviours: str) -> None:
        """Behaviours for the next requests, in order; afterwards every request gets `ok`."""
        unknown = set(behaviours) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"unknown behaviours {unknown}; known: {BEHAVIOURS}")
        with self._lock:
            self._script.extend(behaviours)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, body: dict[str, Any], path: str) -> tuple[str, int]:
        with self._lock:
            self.requests.append(body)
            self.paths.append(path)
            n = len(self.requests)
            behaviour = self._script.pop(0) if self._script else "ok"
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return behaviour, n

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                behaviour, n = server._next(body, self.path)
                try:
                    self._respond(body, behaviour, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _respond(self, body: dict[str, Any], behaviour: str, n: int) -> None:
                if server.hold_after is not None and n > server.hold_after:
                    server.release.wait(timeout=120)
                if server.latency_s:
                    time.sleep(server.latency_s)
                if behaviour == "429":
                    self._send(
                        429, {"error": {"message": "Rate limit reached", "type": "rate_limit"}}
                    )
                    return
                if behaviour == "500":
                    self._send(
                        500, {"error": {"message": "internal error", "type": "server_error"}}
                    )
                    return
                if behaviour == "image_limit":
                    msg = "Image size exceeds the limit for this model"
                    self._send(400, {"error": {"message": msg, "type": "invalid_request_error"}})
                    return
                if behaviour == "hang":
                    time.sleep(server.hang_s)
                content = reply_for(body)
                if behaviour == "malformed":
                    content = "Sure! Here is the memory: description = the man walks (no JSON"
                if behaviour == "think":
                    content = f"<think>{MARK} reasoning about the clip</think>{content}"
                prompt_tokens = sum(len(t.split()) for t in _texts(body))
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": len(content.split()),
                            "total_tokens": prompt_tokens + len(content.split()),
                        },
                    },
                )

        return Handler


def write_config(path: str, server: FakeOpenAIServer, name: str = "local-vlm", **extra: Any) -> str:
    """An endpoint config (our YAML format) pointing `name` at the server."""
    import yaml

    entry = {"base_url": server.base_url, "api_key": "test-key", "model": "fake-vlm", **extra}
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump({"endpoints": {name: entry}}, fh)
    return path
