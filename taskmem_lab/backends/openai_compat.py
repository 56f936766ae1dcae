"""OpenAI, Azure OpenAI and any OpenAI-compatible server (vLLM serve, SGLang, Gemini's endpoint).

Floor 2. Uses the official `openai` SDK with its own retries off: `tenacity` retries 429, 5xx,
timeouts, connection errors and malformed HTTP-200 bodies with exponential backoff and full
jitter; a semaphore per endpoint bounds concurrent requests across all models that share it; a
server that reports an image-size limit makes the model switch to low image detail once and retry.

Every attempt has a total deadline (the endpoint's `timeout`, however slowly the bytes arrive) and
every call a total budget (`max_call_s`, all attempts and waits together); a reply body is read
up to `max_reply_bytes` (default 8 MiB), and one that is longer (or nested too deeply to parse)
is a malformed reply; each retry logs one line. Error text from a server is redacted for API keys (whole, or any run of 8 or more of their
characters) before it is cut short or goes anywhere, and so is the text of a reply.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import random
import re
import threading
import time
from typing import Any

import openai
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from taskmem_lab.backends.base import (
    AudioPart,
    ImagePart,
    Message,
    Reply,
    Request,
    TextPart,
    VideoPart,
    split_reasoning,
)
from taskmem_lab.backends.endpoints import (
    Endpoint,
    SpecOptions,
    basic_auth,
    endpoints_for,
    parse_spec_name,
    read_config,
    strip_userinfo,
)
from taskmem_lab.backends.visual import frame_label
from taskmem_lab.errors import ModelError

log = logging.getLogger(__name__)

# The request header that carries `Request.purpose` (for the local test server; see above).
PURPOSE_HEADER = "X-Taskmem-Purpose"


class MalformedReply(Exception):
    """An HTTP-200 reply whose body is not a chat completion (retried like a 5xx)."""


class AttemptTimeout(Exception):
    """One attempt ran past its total deadline (a slow or byte-trickling server)."""


RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    MalformedReply,
    AttemptTimeout,
)
_KEY_SHAPED = re.compile(
    r"(?i)(bearer\s+)\S+|\b(sk|rk|pk)-[A-Za-z0-9_-]{8,}|"
    r"((?:api[_-]?key|authorization|token|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
)


# A run of this many characters of a secret is redacted wherever it appears (a cut-off key).
PARTIAL_RUN = 8
REDACTED = "[redacted]"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the given secrets (whole, or any run of `PARTIAL_RUN` of their characters)
    and anything key-shaped (sk-..., Bearer ..., api_key=...) replaced by `[redacted]`: server
    error text is stored in records and printed. Redact first, then cut."""
    text = redact_secrets(text, secrets)
    return _KEY_SHAPED.sub(lambda m: (m.group(1) or m.group(3) or "") + REDACTED, text)


def redact_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with each secret, and each run of `PARTIAL_RUN`+ characters of one, redacted."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for secret in secrets:
        if len(secret) >= PARTIAL_RUN and text:
            text = _redact_runs(text, _runs_of(secret))
    return text


@functools.lru_cache(maxsize=32)
def _runs_of(secret: str) -> re.Pattern[str]:
    """Finds (overlapping) every place where `PARTIAL_RUN` characters of `secret` start."""
    grams = sorted({secret[i : i + PARTIAL_RUN] for i in range(len(secret) - PARTIAL_RUN + 1)})
    return re.compile("(?=(" + "|".join(map(re.escape, grams)) + "))")


def _redact_runs(text: str, runs: re.Pattern[str]) -> str:
    starts = [m.start() for m in runs.finditer(text)]
    if not starts:
        return text
    out, kept, end = [], 0, -1
    for i in starts:
        if i > end:  # a new covered stretch begins: flush what lies before it
            if end >= 0:
                out.append(REDACTED)
            out.append(text[kept:i])
        end = max(end, i + PARTIAL_RUN)
        kept = end
    out.append(REDACTED)
    out.append(text[kept:])
    return "".join(out)


_IMAGE_LIMIT = re.compile(
    r"image.{0,80}(too large|too big|exceed|limit|maximum|dimension)|(too many|exceed).{0,40}image",
    re.IGNORECASE | re.DOTALL,
)

_semaphores: dict[str, threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


def _semaphore(endpoint: Endpoint) -> threading.BoundedSemaphore:
    key = f"{endpoint.address}|{endpoint.model}"
    with _semaphores_lock:
        if key not in _semaphores:
            _semaphores[key] = threading.BoundedSemaphore(max(1, endpoint.max_concurrency))
        return _semaphores[key]


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def to_openai_messages(request: Request, video: str, detail: str) -> list[dict[str, Any]]:
    """Chat-completions messages: frames as labelled JPEG images, or the window as one mp4."""
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role in ("system", "assistant"):
            out.append({"role": m.role, "content": "\n".join(_texts(m))})
            continue
        content: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                content.append({"type": "text", "text": p.text})
            elif isinstance(p, ImagePart):
                url = _data_url("image/jpeg", p.jpeg)
                content.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
            elif isinstance(p, AudioPart):
                audio = {"data": base64.b64encode(p.wav).decode(), "format": "wav"}
                content.append({"type": "input_audio", "input_audio": audio})
            elif isinstance(p, VideoPart) and video == "mp4":
                url = _data_url("video/mp4", p.mp4())
                content.append({"type": "video_url", "video_url": {"url": url}})
            elif isinstance(p, VideoPart):
                for frame, jpeg in zip(p.frames, p.jpegs(), strict=True):
                    content.append({"type": "text", "text": frame_label(frame.time)})
                    url = _data_url("image/jpeg", jpeg)
                    content.append(
                        {"type": "image_url", "image_url": {"url": url, "detail": detail}}
                    )
        out.append({"role": "user", "content": content})
    return out


def _texts(m: Message) -> list[str]:
    return [p.text for p in m.parts if isinstance(p, TextPart)]


class OpenAICompatModel:
    """A named model served by one or more OpenAI-compatible endpoints."""

    backend = "openai"

    def __init__(self, spec_name: str, endpoints: list[Endpoint], options: SpecOptions) -> None:
        self.model_id = f"openai:{spec_name}"
        self.endpoints = endpoints
        self.options = options
        self._detail = {e.address: e.image_detail for e in endpoints}
        self._clients: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._secrets = tuple(sorted({s for e in endpoints for s in e.secrets}))

    @property
    def identity(self) -> dict[str, Any]:
        """The resolved identity: every endpoint (address, served model, API) and the options."""
        options = {
            "effort": self.options.effort,
            "verbosity": self.options.verbosity,
            "think": self.options.think,
        }
        return {"endpoints": [e.identity for e in self.endpoints], "options": options}

    @property
    def video_mode(self) -> str:
        return self.endpoints[0].video

    def _client(self, endpoint: Endpoint) -> Any:
        """The endpoint's `chat.completions.with_streaming_response`, made on first use (the
        body is read by `read_capped`, never more than the endpoint's `max_reply_bytes`).

        Resolving it imports the SDK's resource modules (~0.3 s of CPU): done once under the
        lock by the first caller, so the first calls of many streams do not each wait for it.
        """
        key = id(endpoint)
        with self._lock:
            if key not in self._clients:
                client: openai.OpenAI
                if endpoint.api_type == "azure":
                    client = openai.AzureOpenAI(
                        azure_endpoint=strip_userinfo(endpoint.azure_endpoint or ""),
                        api_version=endpoint.api_version,
                        api_key=endpoint.api_key,
                        timeout=endpoint.timeout,
                        max_retries=0,
                        default_headers=basic_auth(endpoint.azure_endpoint),
                    )
                else:
                    client = openai.OpenAI(
                        # user:password@ goes in a header: the HTTP client logs the URL (-v)
                        base_url=endpoint.base_url and strip_userinfo(endpoint.base_url),
                        api_key=endpoint.api_key,
                        timeout=endpoint.timeout,
                        max_retries=0,
                        default_headers=basic_auth(endpoint.base_url),
                    )
                self._clients[key] = client.chat.completions.with_streaming_response
            return self._clients[key]

    def warm(self) -> None:
        """Make every endpoint's client now (before a burst of concurrent first calls)."""
        for endpoint in self.endpoints:
            self._client(endpoint)

    def _kwargs(self, endpoint: Endpoint, request: Request) -> dict[str, Any]:
        s = request.sampling
        kwargs: dict[str, Any] = {"model": endpoint.model}
        extra: dict[str, Any] = {}
        if self.options.effort:
            # Reasoning models take max_completion_tokens and reject a temperature.
            kwargs["reasoning_effort"] = self.options.effort
            kwargs["max_completion_tokens"] = s.max_tokens
        else:
            kwargs["temperature"] = s.temperature
            kwargs["max_tokens"] = s.max_tokens
            if s.top_p is not None:
                kwargs["top_p"] = s.top_p
        if self.options.verbosity:
            extra["verbosity"] = self.options.verbosity
        if self.options.think:
            extra["chat_template_kwargs"] = {"enable_thinking": True}
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if extra:
            kwargs["extra_body"] = extra
        if request.purpose:
            # Which prompt built the request: the local test server answers by it (the fake
            # model's rules); real servers ignore unknown headers.
            kwargs["extra_headers"] = {PURPOSE_HEADER: request.purpose}
        return kwargs

    def _call_once(self, endpoint: Endpoint, request: Request) -> Reply:
        detail = self._detail[endpoint.address]
        messages = to_openai_messages(request, endpoint.video, detail)
        started = time.perf_counter()
        with _semaphore(endpoint):
            try:
                with self._client(endpoint).create(
                    messages=messages, **self._kwargs(endpoint, request)
                ) as raw:
                    body = read_capped(raw, endpoint.max_reply_bytes)
            except openai.BadRequestError as exc:
                if detail != "low" and _IMAGE_LIMIT.search(str(exc)):
                    log.warning(
                        "%s: server reports an image-size limit; switching to low image detail",
                        endpoint.name,
                    )
                    self._detail[endpoint.address] = "low"
                    return self._call_once(endpoint, request)
                raise
        latency = time.perf_counter() - started
        data = parse_completion(body, self._secrets)
        message = data["choices"][0]["message"]
        content = redact_secrets(message.get("content") or "", self._secrets)
        answer, reasoning = split_reasoning(content)
        server_reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        server_reasoning = redact_secrets(str(server_reasoning), self._secrets)
        usage: dict[str, int] = {}
        if data.get("usage") is not None:
            usage = {
                "prompt_tokens": int(data["usage"].get("prompt_tokens") or 0),
                "completion_tokens": int(data["usage"].get("completion_tokens") or 0),
            }
        return Reply(
            text=answer,
            reasoning="\n".join(x for x in (str(server_reasoning), reasoning) if x),
            usage=usage,
            latency_s=latency,
            model=str(data.get("model") or endpoint.model),
            backend=self.backend,
        )

    def _attempt(self, endpoint: Endpoint, request: Request, budget: float) -> Reply:
        """`_call_once` under a total deadline: a worker thread does the call; past `budget`
        seconds the attempt fails (the abandoned worker ends at its next read timeout)."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["reply"] = self._call_once(endpoint, request)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, daemon=True, name="taskmem-http").start()
        if not done.wait(budget):
            raise AttemptTimeout(f"no complete reply within {budget:.0f} s")
        if "error" in box:
            raise box["error"]
        return box["reply"]

    def generate(self, request: Request) -> Reply:
        endpoint = random.choice(self.endpoints) if len(self.endpoints) > 1 else self.endpoints[0]
        started = time.monotonic()
        attempts = endpoint.max_retries + 1

        def attempt() -> Reply:
            left = endpoint.max_call_s - (time.monotonic() - started)
            if left <= 0.05:
                raise AttemptTimeout(f"call budget max_call_s={endpoint.max_call_s:g} s spent")
            return self._attempt(endpoint, request, min(endpoint.timeout, left))

        def before_sleep(rs: Any) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %.1f s",
                endpoint.name,
                rs.attempt_number,
                attempts,
                self._why(exc) if exc else "?",
                rs.next_action.sleep if rs.next_action else 0.0,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait_random_exponential(multiplier=endpoint.backoff_s, max=20),
            stop=stop_after_attempt(attempts) | stop_after_delay(endpoint.max_call_s),
            reraise=True,
            before_sleep=before_sleep,
        )
        try:
            return retrying(attempt)
        except RETRYABLE as exc:
            elapsed = time.monotonic() - started
            tried = retrying.statistics.get("attempt_number", attempts)
            raise ModelError(
                f"{endpoint.name} at {endpoint.address}: gave up after {tried} attempts in "
                f"{elapsed:.0f} s ({self._why(exc)})"
            ) from None
        except openai.AuthenticationError as exc:
            raise ModelError(
                f"{endpoint.name}: the API key was rejected ({self._redacted(exc)})"
            ) from None
        except openai.APIStatusError as exc:
            raise ModelError(
                f"{endpoint.name}: request refused with HTTP {exc.status_code} "
                f"({self._redacted(exc)})"
            ) from None

    def _redacted(self, exc: BaseException) -> str:
        return _first_line(redact(str(exc), self._secrets)) if str(exc) else type(exc).__name__

    def _why(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {self._redacted(exc)}"


def _first_line(text: str, limit: int = 300) -> str:
    """The first line of (already redacted) error text, cut to `limit` characters."""
    return (text.splitlines() or [""])[0][:limit]


def read_capped(raw: Any, limit: int) -> bytes:
    """The reply body, read no further than `limit` bytes (a longer one is `MalformedReply`)."""
    declared = raw.http_response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MalformedReply(_too_long(f"{int(declared):,} bytes", limit))
    chunks: list[bytes] = []
    size = 0
    for chunk in raw.iter_bytes(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise MalformedReply(_too_long(f"more than {limit:,} bytes", limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_long(what: str, limit: int) -> str:
    return (
        f"reply is too long ({what}; max_reply_bytes={limit:,} in the endpoint config "
        "raises the limit)"
    )


def _is_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def parse_completion(body: bytes, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """A chat-completion body checked field by field; `MalformedReply` says what is wrong
    (quoting the body only after `secrets` are redacted from it)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedReply(f"reply is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise MalformedReply("reply is nested too deeply to be a chat completion") from None
    except json.JSONDecodeError as exc:
        cut = exc.msg.startswith("Unterminated") or exc.pos >= len(text.rstrip()) - 1
        what = "truncated JSON" if cut else "not JSON"
        raise MalformedReply(
            f"reply is {what} ({exc.msg} at char {exc.pos}): {redact(text[:1000], secrets)[:80]!r}"
        ) from None
    if not isinstance(data, dict):
        raise MalformedReply(f"reply is a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply(f"reply has no choices ({_brief(data, secrets)})")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise MalformedReply("reply choices[0].message is not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise MalformedReply(
            f"reply choices[0].message.content is a {type(content).__name__}, not text"
        )
    for key in ("reasoning_content", "reasoning"):  # optional extras: ignored unless text
        if not isinstance(message.get(key), str | None):
            message[key] = None
    usage = data.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise MalformedReply(f"reply usage is a {type(usage).__name__}, not an object")
        for key in ("prompt_tokens", "completion_tokens"):
            if not _is_count(usage.get(key)):
                raise MalformedReply(f"reply usage.{key} is {usage.get(key)!r}, not a count")
    if data.get("model") is not None and not isinstance(data["model"], str):
        raise MalformedReply("reply model is not a string")
    return data


def _brief(data: Any, secrets: tuple[str, ...] = ()) -> str:
    text = redact(json.dumps(data, default=str)[:1000], secrets)
    return text if len(text) <= 120 else text[:117] + "..."


def from_spec(spec_name: str) -> OpenAICompatModel:
    """`openai:NAME[#effort#verbosity | #think]`, NAME looked up in the endpoint config."""
    options = parse_spec_name(spec_name)
    return OpenAICompatModel(spec_name, endpoints_for(spec_name, read_config()), options)
