"""OpenAI, Azure OpenAI and any OpenAI-compatible server (vLLM serve, SGLang, Gemini's endpoint).

Floor 2. Uses the official `openai` SDK with its own retries off: `tenacity` retries 429, 5xx,
timeouts and connection errors with exponential backoff and full jitter; a semaphore per endpoint
bounds concurrent requests across all models that share it; a server that reports an image-size
limit makes the model switch to low image detail once and retry.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import threading
import time
from typing import Any

import openai
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

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
    endpoints_for,
    parse_spec_name,
    read_config,
)
from taskmem_lab.backends.visual import frame_label
from taskmem_lab.errors import ModelError

log = logging.getLogger(__name__)

# The request header that carries `Request.purpose` (for the local test server; see above).
PURPOSE_HEADER = "X-Taskmem-Purpose"
RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)
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

    @property
    def video_mode(self) -> str:
        return self.endpoints[0].video

    def _client(self, endpoint: Endpoint) -> Any:
        key = id(endpoint)
        with self._lock:
            if key not in self._clients:
                if endpoint.api_type == "azure":
                    self._clients[key] = openai.AzureOpenAI(
                        azure_endpoint=endpoint.azure_endpoint or "",
                        api_version=endpoint.api_version,
                        api_key=endpoint.api_key,
                        timeout=endpoint.timeout,
                        max_retries=0,
                    )
                else:
                    self._clients[key] = openai.OpenAI(
                        base_url=endpoint.base_url,
                        api_key=endpoint.api_key,
                        timeout=endpoint.timeout,
                        max_retries=0,
                    )
            return self._clients[key]

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
                response = self._client(endpoint).chat.completions.create(
                    messages=messages, **self._kwargs(endpoint, request)
                )
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
        if not getattr(response, "choices", None):
            raise ModelError(f"{endpoint.name}: reply has no choices ({str(response)[:200]})")
        message = response.choices[0].message
        answer, reasoning = split_reasoning(message.content or "")
        extra = getattr(message, "model_extra", None) or {}
        server_reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
        usage: dict[str, int] = {}
        if response.usage is not None:
            usage = {
                "prompt_tokens": int(response.usage.prompt_tokens or 0),
                "completion_tokens": int(response.usage.completion_tokens or 0),
            }
        return Reply(
            text=answer,
            reasoning="\n".join(x for x in (str(server_reasoning), reasoning) if x),
            usage=usage,
            latency_s=latency,
            model=str(getattr(response, "model", "") or endpoint.model),
            backend=self.backend,
        )

    def generate(self, request: Request) -> Reply:
        endpoint = random.choice(self.endpoints) if len(self.endpoints) > 1 else self.endpoints[0]
        retrying = Retrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait_random_exponential(multiplier=endpoint.backoff_s, max=60),
            stop=stop_after_attempt(endpoint.max_retries + 1),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "%s: attempt %d failed (%s); retrying",
                endpoint.name,
                rs.attempt_number,
                type(rs.outcome.exception()).__name__ if rs.outcome else "?",
            ),
        )
        try:
            return retrying(self._call_once, endpoint, request)
        except RETRYABLE as exc:
            raise ModelError(
                f"{endpoint.name} at {endpoint.address}: gave up after "
                f"{endpoint.max_retries + 1} attempts ({type(exc).__name__}: {_short(exc)})"
            ) from exc
        except openai.AuthenticationError as exc:
            raise ModelError(f"{endpoint.name}: the API key was rejected ({_short(exc)})") from exc
        except openai.APIStatusError as exc:
            raise ModelError(
                f"{endpoint.name}: request refused with HTTP {exc.status_code} ({_short(exc)})"
            ) from exc


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def from_spec(spec_name: str) -> OpenAICompatModel:
    """`openai:NAME[#effort#verbosity | #think]`, NAME looked up in the endpoint config."""
    options = parse_spec_name(spec_name)
    return OpenAICompatModel(spec_name, endpoints_for(spec_name, read_config()), options)
