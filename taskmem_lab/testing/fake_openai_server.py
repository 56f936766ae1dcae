"""A real HTTP server on 127.0.0.1 that speaks the chat-completions API, for tests and benchmarks.

It is a test double: replies are made from the request (the NEW SPAN marker, the number of
images) and start with `[fake server]` (ASR prompts, whose system prompt holds `{"segments"`, get
one segment per loud span of the audio part; speaker prompts, `{"speakers"`, get transcript line n
assigned to the n-th visible face, round robin). It can be scripted to answer 429, 500, an image-size
400, malformed JSON, or to hang past the client's timeout, fail every request a predicate picks (`fail_if`), and it can hold every request after
the N-th until released (to kill a client mid-run). Every request body is recorded. Reward,
pairwise and seeded episodic prompts are answered by `fake_rewards` (pairwise verdicts can be
scripted with `script_verdicts`).

    with FakeOpenAIServer() as server:
        server.script("429", "ok")
        ... base_url = server.base_url
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
import wave
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from taskmem_lab.testing.fake_rewards import reward_reply

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


def reply_for(body: dict[str, Any], next_verdict: Callable[[], str | None] | None = None) -> str:
    """The deterministic reply content for a request body (`next_verdict`: scripted pairwise
    verdicts, see `fake_rewards`)."""
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
    rewarded = reward_reply(body, system, joined, images, next_verdict)
    if rewarded is not None:
        return rewarded
    if '"score"' in system and '"correct"' in system:
        return _judge_reply(joined, digest)
    if "multiple-choice" in system:
        return _choice_reply(texts[1] if len(texts) > 1 else "", digest)
    if "Insufficient information" in system:
        return _open_reply(texts[1] if len(texts) > 1 else "", digest)
    if '"knowledge"' in system:
        return json.dumps({"knowledge": [f"{MARK} fact about {where} ({digest})"]})
    if '{"segments"' in system:
        return _asr_reply(body)
    if '{"speakers"' in system:
        return _speakers_reply(joined)
    return json.dumps(
        {"description": f"{MARK} entry for {where}: {images} visual parts, request {digest}."}
    )


# QA and judge prompts (taskmem_lab/prompts/qa_*.txt, judge_*.txt). The fake "reads" the memory:
# a choice question gets the option whose text the memory mentions last (E when it mentions
# none), in one of several real reply styles picked by the request digest; a free-form question
# gets the memory line sharing most words with it ("Insufficient information" when none does); a
# judge says yes (score 5) when every content word of the reference is in the candidate.
_QA = re.compile(
    r"MEMORY \([^\n]*\):\n(?P<memory>.*?)\n\nQUESTION \(asked at [^\n]*\):\n(?P<question>.*?)\n"
    r"(?:OPTIONS:\n(?P<options>.*?)\n)?\nReply with",
    re.DOTALL,
)
_OPTION = re.compile(r"^([A-D])\. (.+)$", re.MULTILINE)
_JUDGE = re.compile(
    r"QUESTION:\n(?P<question>.*?)\n\nREFERENCE ANSWER:\n(?P<reference>.*?)\n\n"
    r"CANDIDATE ANSWER:\n(?P<candidate>.*?)(?:\n|$)",
    re.DOTALL,
)
_STOP = {"the", "and", "for", "with", "that", "this", "from", "what", "does", "did", "who"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in _STOP}


def _choice_reply(user: str, digest: str) -> str:
    m = _QA.search(user)
    memory = (m.group("memory") if m else "").lower()
    best, where = "E", -1
    for letter, text in _OPTION.findall((m.group("options") or "") if m else ""):
        pos = memory.rfind(text.strip().rstrip(".").lower())
        if pos > where:
            best, where = letter, pos
    styles = (
        json.dumps({"answer": best, "note": MARK}),
        f"{MARK} Option A and the others were weighed; the answer is {best}.",
        f"{MARK}\n**Answer:** {best}",
        f"{MARK} ({best})",
    )
    return styles[int(digest, 16) % len(styles)]


def _open_reply(user: str, digest: str) -> str:
    m = _QA.search(user)
    question = _words(m.group("question")) if m else set()
    lines = [
        ln.strip()
        for ln in (m.group("memory") if m else "").splitlines()
        if ln.strip() and not ln.startswith("[")
    ]
    scored = [(len(_words(ln) & question), -i, ln) for i, ln in enumerate(lines)]
    best = max(scored, default=(0, 0, ""))
    answer = f"{MARK} {best[2]}" if best[0] > 0 else f"Insufficient information {MARK}"
    if int(digest, 16) % 2:
        return json.dumps({"answer": answer})
    return f"Answer: {answer}"


def _judge_reply(joined: str, digest: str) -> str:
    m = _JUDGE.search(joined)
    reference = _words(m.group("reference")) if m else set()
    candidate = _words(m.group("candidate")) if m else set()
    share = len(reference & candidate) / len(reference) if reference else 0.0
    correct, score = ("yes", 5) if share >= 0.99 else ("no", 3) if share >= 0.5 else ("no", 1)
    verdict = {"correct": correct, "score": score, "reason": f"{MARK} {share:.0%} of the words"}
    if int(digest, 16) % 2:
        return json.dumps(verdict)
    return repr(verdict)  # the Python-dict style some judges answer in


def _audio_clips(body: dict[str, Any]) -> list[bytes]:
    return [
        base64.b64decode(p["input_audio"]["data"])
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "input_audio"
    ]


def voiced_spans(
    wav: bytes, hop_s: float = 0.05, threshold: float = 0.02, bridge_s: float = 0.6
) -> tuple[list[tuple[float, float]], float]:
    """Spans (seconds) where a 16-bit mono WAV is louder than `threshold` RMS, short pauses
    bridged; and the WAV's duration. A crude energy detector: what the fake ASR "hears"."""
    with wave.open(io.BytesIO(wav), "rb") as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
    hop = max(1, int(sr * hop_s))
    n = len(pcm) // hop
    rms = np.sqrt((pcm[: n * hop].reshape(n, hop) ** 2).mean(axis=1)) if n else np.zeros(0)
    spans: list[tuple[float, float]] = []
    for i in np.flatnonzero(rms > threshold):
        a, b = i * hop / sr, (i + 1) * hop / sr
        if spans and a - spans[-1][1] <= bridge_s:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return [s for s in spans if s[1] - s[0] >= 0.2], len(pcm) / sr


def _asr_reply(body: dict[str, Any]) -> str:
    """One segment per voiced span of the first audio part, text marked and keyed by the audio."""
    clips = _audio_clips(body)
    if not clips:
        return json.dumps({"segments": []})
    spans, _ = voiced_spans(clips[0])
    digest = hashlib.sha256(clips[0]).hexdigest()[:8]
    segments = [
        {
            "start": round(a, 1),
            "end": round(b, 1),
            "speaker": "S1",
            "text": f"{MARK} speech {i + 1} of audio {digest}.",
        }
        for i, (a, b) in enumerate(spans)
    ]
    return json.dumps({"segments": segments})


_NUMBERED = re.compile(r"^\s*(\d+)\. ", re.MULTILINE)
_LOCAL_FACE = re.compile(r"<face_\d+>")


def _speakers_reply(text: str) -> str:
    """Transcript line n is said by the n-th visible face, round robin; "unknown" with no faces."""
    faces = list(dict.fromkeys(_LOCAL_FACE.findall(text.split("Transcript", 1)[0])))
    lines = _NUMBERED.findall(text)
    speakers = {n: faces[(int(n) - 1) % len(faces)] if faces else "unknown" for n in lines}
    return json.dumps({"speakers": speakers, "note": f"{MARK} round robin over visible faces"})


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when dozens of clients start at once,
    # and each dropped one waits a second for its SYN retry: a real server queues them.
    request_queue_size = 256


class FakeOpenAIServer:
    def __init__(self, latency_s: float = 0.0, hang_s: float = 3.0) -> None:
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._script: list[str] = []
        self._verdicts: list[str] = []
        self._lock = threading.Lock()
        self.hold_after: int | None = None
        # Requests for which this returns True get a 500 (a stream whose replies fail).
        self.fail_if: Callable[[dict[str, Any]], bool] | None = None
        self.release = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
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
                content = reply_for(body, server._pop_verdict)
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
