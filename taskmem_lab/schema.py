"""Records that cross module boundaries: clips of the schedule, streams, tasks and stored clips.

Floor 0 of the package: nothing here imports anything else from `taskmem_lab`. Persisted records
carry `SCHEMA_VERSION` so later readers can tell what they are looking at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ClipSpec:
    """One step of the clip schedule, in stream time (seconds).

    The VLM for this clip sees `[window_start, end)` and describes only `[start, end)`.
    """

    index: int
    start: float
    end: float
    window_start: float
    segment: int = 0

    @property
    def window_end(self) -> float:
        return self.end

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class StreamFile:
    """One media file of a stream and its absolute start time in stream seconds.

    `offset` is where in the file the entry begins (seconds): a time range of a longer video
    (an EgoTempo clip) is `offset` to `offset + duration` of its file, played from `start`.
    """

    path: str
    start: float
    duration: float
    offset: float = 0.0

    def local(self, t: float) -> float:
        """File time of stream time `t`."""
        return t - self.start + self.offset


@dataclass(frozen=True)
class Stream:
    """An ordered list of files that together form one stream (a single video is one file)."""

    stream_id: str
    files: tuple[StreamFile, ...]

    @property
    def start(self) -> float:
        return self.files[0].start

    @property
    def end(self) -> float:
        return max(f.start + f.duration for f in self.files)


@dataclass(frozen=True)
class Task:
    """A question that arrives online at stream time `time`; it may focus later clips."""

    task_id: str
    question: str
    time: float
    options: tuple[str, ...] = ()


@dataclass
class ClipRecord:
    """One line of `clips.jsonl`: everything known about a finished (or failed) clip."""

    clip: int
    start: float
    end: float
    window: tuple[float, float]
    status: str  # "ok" | "failed"
    episodic: str = ""
    semantic: list[str] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    raw_reply: str = ""
    reasoning: str = ""
    model: str = ""
    endpoint: dict[str, Any] = field(default_factory=dict)  # what `model` resolved to
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    request_hash: str = ""
    attempts: int = 0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    fake: bool = False
    schema: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = list(self.window)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClipRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["window"] = tuple(known.get("window", (data["start"], data["end"])))
        return cls(**known)

    @property
    def ok(self) -> bool:
        return self.status == "ok"
