"""The model-client contract: requests made of parts, replies with usage, the `ChatModel` protocol.

Floor 2. Every backend (OpenAI-compatible HTTP, vLLM, transformers, the fake responder) takes a
`Request` and returns a `Reply`; nothing above this floor knows which one it talks to.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from taskmem_lab.media.video import Frame, encode_mp4


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    jpeg: bytes


@dataclass(frozen=True)
class VideoPart:
    """A window of sampled frames; sent as JPEG frames or as one inline mp4, per backend."""

    frames: tuple[Frame, ...]
    fps: float
    jpeg_quality: int = 85
    _mp4: list[bytes] = field(default_factory=list, compare=False, repr=False)

    def jpegs(self) -> list[bytes]:
        return [f.jpeg(self.jpeg_quality) for f in self.frames]

    def mp4(self) -> bytes:
        """Encoded once per part, only when a backend asks for it."""
        if not self._mp4:
            self._mp4.append(encode_mp4(self.frames, self.fps))
        return self._mp4[0]


@dataclass(frozen=True)
class AudioPart:
    """Mono audio as WAV bytes (16-bit PCM); sent as an `input_audio` part by HTTP backends."""

    wav: bytes = field(repr=False)
    sample_rate: int = 16000


Part = TextPart | ImagePart | VideoPart | AudioPart


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    parts: tuple[Part, ...]

    @classmethod
    def text(cls, role: str, text: str) -> Message:
        return cls(role, (TextPart(text),))


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    max_tokens: int = 2048
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Request:
    messages: tuple[Message, ...]
    sampling: Sampling = Sampling()
    purpose: str = ""  # which prompt built it ("episodic", "semantic", ...); not sent to models

    @classmethod
    def chat(
        cls, system: str, user: str | Sequence[Part], sampling: Sampling, purpose: str
    ) -> Request:
        """A system prompt and one user turn (text, or parts: text, frames, video, audio)."""
        turn = Message.text("user", user) if isinstance(user, str) else Message("user", tuple(user))
        return cls((Message.text("system", system), turn), sampling, purpose)

    def fingerprint(self, model_id: str) -> str:
        """sha256 over model id, messages (media by content hash) and sampling."""
        return hashlib.sha256(
            json.dumps([model_id, describe(self)], sort_keys=True).encode()
        ).hexdigest()


@dataclass
class Reply:
    text: str
    reasoning: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    model: str = ""
    backend: str = ""
    cached: bool = False
    fake: bool = False


def sum_usage(usages: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Token counts of several replies added up key by key (e.g. a reply and its re-asks)."""
    total: dict[str, int] = {}
    for usage in usages:
        for k, v in usage.items():
            total[k] = total.get(k, 0) + int(v)
    return total


@runtime_checkable
class ChatModel(Protocol):
    """What every backend implements."""

    model_id: str

    def generate(self, request: Request) -> Reply: ...


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def describe(request: Request) -> dict[str, Any]:
    """A JSON-able view of a request with media replaced by content hashes."""
    messages = []
    for m in request.messages:
        parts: list[Any] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                parts.append({"text": p.text})
            elif isinstance(p, ImagePart):
                parts.append({"image": _digest(p.jpeg)})
            elif isinstance(p, AudioPart):
                parts.append({"audio": _digest(p.wav), "sample_rate": p.sample_rate})
            else:
                parts.append(
                    {
                        "video": [
                            [f.time, _digest(j)] for f, j in zip(p.frames, p.jpegs(), strict=True)
                        ],
                        "fps": p.fps,
                    }
                )
        messages.append({"role": m.role, "parts": parts})
    s = request.sampling
    return {
        "messages": messages,
        "sampling": [s.temperature, s.max_tokens, s.top_p, s.seed],
    }


_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def split_reasoning(text: str) -> tuple[str, str]:
    """Separate `<think>` reasoning from the answer: returns (answer, reasoning).

    Handles a closed block anywhere, and templates that open the block in the prompt so the reply
    holds only the closing tag.
    """
    blocks = _THINK.findall(text)
    if blocks:
        return _THINK.sub("", text).strip(), "\n".join(b.strip() for b in blocks)
    if "</think>" in text:
        reasoning, answer = text.split("</think>", 1)
        return answer.strip(), reasoning.replace("<think>", "").strip()
    return text.strip(), ""


def all_text(parts: Sequence[Part]) -> str:
    return "\n".join(p.text for p in parts if isinstance(p, TextPart))
