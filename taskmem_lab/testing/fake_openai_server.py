"""A real HTTP server on 127.0.0.1 that speaks the chat-completions API, for tests and benchmarks.

It is a test double wrapping the fake model (`backends.fake`): each reply is the fake model's
answer for the request's purpose, which the client sends in the `X-Taskmem-Purpose` header (real
OpenAI-compatible servers ignore unknown headers), marked `[fake server]`. It can be scripted to
answer 429, 500, an image-size 400, malformed text, an empty or null content, a `<think>` block, or to hang past the
client's timeout; to send a hostile HTTP-200 body (`HOSTILE`: not JSON, not UTF-8, truncated,
wrong field types), to trickle a good reply one byte at a time (`trickle`: every read in time, the
whole never) or to echo the API key in a 500 (`leak_key`); it can hold every request after the
N-th until released (to kill a client mid-run), send a body scripted byte for byte (`script_raw`), fail every request a predicate picks
(`fail_if`), and it can be given pairwise verdicts (`script_verdicts`). Every request body and its
purpose are recorded (`requests`, `purposes`).

    with FakeOpenAIServer() as server:
        server.script("429", "ok")
        ... base_url = server.base_url
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskmem_lab.backends.fake import FakeAsk, answer, before_first_reply
from taskmem_lab.backends.openai_compat import PURPOSE_HEADER

MARK = "[fake server]"
# Hostile HTTP-200 bodies (`hostile_body`), a byte-trickling reply and an error that echoes the key.
HOSTILE = (
    "not_json",
    "not_utf8",
    "truncated_json",
    "json_list",
    "no_choices",
    "choices_not_list",
    "message_not_object",
    "content_number",
    "content_object",
    "usage_string",
    "usage_negative",
)
BEHAVIOURS = (
    "ok",
    "429",
    "500",
    "hang",
    "malformed",
    "image_limit",
    "think",
    "trickle",
    "leak_key",
    "empty",
    "null_content",
    "raw",
    *HOSTILE,
)


def hostile_body(behaviour: str, good: dict[str, Any]) -> bytes:
    """The body of a hostile HTTP-200 reply, built from a good completion `good`."""
    choice = good["choices"][0]
    shapes: dict[str, Any] = {
        "json_list": [good],
        "no_choices": {**good, "choices": []},
        "choices_not_list": {**good, "choices": "none"},
        "message_not_object": {**good, "choices": [{**choice, "message": "hello"}]},
        "content_number": {
            **good,
            "choices": [{**choice, "message": {"role": "assistant", "content": 42}}],
        },
        "content_object": {
            **good,
            "choices": [{**choice, "message": {"role": "assistant", "content": {"a": 1}}}],
        },
        "usage_string": {**good, "usage": "lots"},
        "usage_negative": {**good, "usage": {"prompt_tokens": -5, "completion_tokens": "x"}},
    }
    if behaviour == "not_json":
        return b"<html><body>502 Bad Gateway (but sent as 200)</body></html>"
    if behaviour == "not_utf8":
        return b'{"choices": [{"message": {"content": "\xff\xfe\xfa"}}]}'
    if behaviour == "truncated_json":
        return json.dumps(good).encode()[:40]
    return json.dumps(shapes[behaviour]).encode()


def _texts(body: dict[str, Any]) -> list[str]:
    out = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p.get("text", "") for p in content if p.get("type") == "text"]
    return out


def ask_of(body: dict[str, Any], purpose: str) -> FakeAsk:
    """What the fake rules see of a chat-completions body (`purpose`: the request header)."""
    messages = [(str(m.get("role", "")), m) for m in body.get("messages", [])]
    texts: list[str] = []
    images = 0
    audio: list[bytes] = []
    media = hashlib.sha256()
    for role, m in before_first_reply(messages):
        content = m.get("content")
        parts: list[dict[str, Any]] = (
            [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        )
        for p in parts:
            kind = p.get("type")
            if kind == "text" and role == "user":
                texts.append(p.get("text", ""))
            elif kind in ("image_url", "video_url"):
                images += 1
                # the size and the tail of each data URL tell media apart without hashing it all
                url = str((p.get(kind) or {}).get("url", ""))
                media.update(f"{len(url)}:{url[-256:]}".encode())
            elif kind == "input_audio":
                audio.append(base64.b64decode(p["input_audio"]["data"]))
    return FakeAsk(
        purpose=purpose,
        user="\n".join(texts),
        images=images,
        media=media.hexdigest()[:8] if images else "none",
        audio=tuple(audio),
        seed=body.get("seed"),
        temperature=float(body.get("temperature") or 0.0),
    )


def reply_for(
    body: dict[str, Any], purpose: str = "", next_verdict: Callable[[], str | None] | None = None
) -> str:
    """The fake model's reply content for a request body, marked `[fake server]`."""
    return answer(ask_of(body, purpose), MARK, next_verdict)


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when dozens of clients start at once,
    # and each dropped one waits a second for its SYN retry: a real server queues them.
    request_queue_size = 256


class FakeOpenAIServer:
    def __init__(
        self, latency_s: float = 0.0, hang_s: float = 3.0, trickle_s: float = 0.25
    ) -> None:
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.trickle_s = trickle_s  # pause between the bytes of a `trickle` reply
        self.requests: list[dict[str, Any]] = []
        self.purposes: list[str] = []
        self.paths: list[str] = []
        self._script: list[str] = []
        self._verdicts: list[str] = []
        self._raw: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self.hold_after: int | None = None
        self._stopping = False
        # Requests for which this returns True get a 500 (a stream whose replies fail).
        self.fail_if: Callable[[dict[str, Any]], bool] | None = None
        self.release = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        # A short poll interval makes `stop()` return in ~50 ms instead of serve_forever's 0.5 s,
        # which every test using the server pays once.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="taskmem-server",
            daemon=True,
        )

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

    def script_raw(self, status: int, body: bytes | str) -> None:
        """The next scripted reply is `body` with HTTP `status`, sent as it is."""
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._raw.append((status, data))
            self._script.append("raw")

    def script_verdicts(self, *verdicts: str) -> None:
        """Answers ("A", "B" or "tie") for the next pairwise-judge requests, in arrival order;
        e.g. "A", "A" makes a position-biased judge whose two orders of one pair disagree."""
        bad = set(verdicts) - {"A", "B", "tie"}
        if bad:
            raise ValueError(f"unknown verdicts {bad}; known: A, B, tie")
        with self._lock:
            self._verdicts.extend(verdicts)

    def _pop_verdict(self) -> str | None:
        with self._lock:
            return self._verdicts.pop(0) if self._verdicts else None

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self.release.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, body: dict[str, Any], path: str, purpose: str) -> tuple[str, int]:
        with self._lock:
            self.requests.append(body)
            self.purposes.append(purpose)
            self.paths.append(path)
            n = len(self.requests)
            behaviour = self._script.pop(0) if self._script else "ok"
            if self.fail_if is not None and self.fail_if(body):
                behaviour = "500"
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
                purpose = self.headers.get(PURPOSE_HEADER, "")
                behaviour, n = server._next(body, self.path, purpose)
                try:
                    self._respond(body, purpose, behaviour, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _respond(self, body: dict[str, Any], purpose: str, behaviour: str, n: int) -> None:
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
                if behaviour == "leak_key":
                    key = self.headers.get("Authorization", "")
                    msg = f"upstream failed for {key} (api_key=sk-live-0123456789abcdef)"
                    self._send(500, {"error": {"message": msg, "type": "server_error"}})
                    return
                if behaviour == "raw":
                    with server._lock:
                        status, data = server._raw.pop(0)
                    self._send(status, None, data)
                    return
                if behaviour == "hang":
                    time.sleep(server.hang_s)
                content = reply_for(body, purpose, server._pop_verdict)
                if behaviour in ("empty", "null_content"):
                    content = "" if behaviour == "empty" else None  # a valid, empty completion
                if behaviour == "malformed":
                    content = "Sure! Here is the memory: description = the man walks (no JSON"
                if behaviour == "think":
                    content = f"<think>{MARK} reasoning about the clip</think>{content}"
                prompt_tokens = sum(len(t.split()) for t in _texts(body))
                completion = {
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
                        "completion_tokens": len((content or "").split()),
                        "total_tokens": prompt_tokens + len((content or "").split()),
                    },
                }
                if behaviour in HOSTILE:
                    self._send(200, None, hostile_body(behaviour, completion))
                elif behaviour == "trickle":
                    self._trickle(json.dumps(completion).encode())
                else:
                    self._send(200, completion)

            def _trickle(self, data: bytes) -> None:
                """A good reply, one byte per `trickle_s`: every read succeeds, the whole never
                arrives in time (until the client gives up and closes the connection)."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.flush()
                for i in range(len(data)):
                    if server._stopping:
                        return
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(server.trickle_s)

        return Handler


def write_config(path: str, server: FakeOpenAIServer, name: str = "local-vlm", **extra: Any) -> str:
    """An endpoint config (our YAML format) pointing `name` at the server."""
    import yaml

    entry = {"base_url": server.base_url, "api_key": "test-key", "model": "fake-vlm", **extra}
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump({"endpoints": {name: entry}}, fh)
    return path
