"""Ground truth of a video for scoring perception: who is on screen (with boxes), who says what.

Floor 3 (perception). The truth file is JSON, written by `benchmarks/perception/generate.py` for
the generated set and by hand (or an annotation tool) for users' own footage; docs/perception.md
describes the format. `perception.scoring` compares a perception run with it. Times are seconds
from the start of the video; boxes are `[x1, y1, x2, y2]` normalized to the frame (0..1), as in
perception's own records. Person ids are any strings: scoring maps them to perception's ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError

TRUTH_SCHEMA = 1

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class TruthFrame:
    """The faces on screen at time `t` (one video frame): person id -> normalized box."""

    t: float
    faces: dict[str, Box]


@dataclass(frozen=True)
class TruthSpeech:
    """One utterance: `speaker` says `text` from `start` to `end` (seconds)."""

    start: float
    end: float
    speaker: str
    text: str


@dataclass(frozen=True)
class Truth:
    """Ground truth of one video.

    `frames` are sorted by time and cover the video (every frame, or a regular sample of them:
    scoring looks up the truth frame nearest to each perceived frame, within half a frame
    period). `cuts` are the times of hard cuts (may be empty); `meta` holds whatever the
    producer recorded (seed, voices, background sound), unread by scoring.
    """

    video: str
    duration: float
    fps: float
    frames: tuple[TruthFrame, ...]
    speech: tuple[TruthSpeech, ...]
    cuts: tuple[float, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    _times: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_times", tuple(f.t for f in self.frames))

    def frame_at(self, t: float) -> TruthFrame | None:
        """The truth frame nearest `t`, or None when none lies within half a frame period."""
        import bisect

        times = self._times
        i = bisect.bisect_left(times, t)
        best = min(
            (j for j in (i - 1, i) if 0 <= j < len(times)),
            key=lambda j: abs(times[j] - t),
            default=None,
        )
        if best is None or abs(times[best] - t) > 0.5 / self.fps + 1e-6:
            return None
        return self.frames[best]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": TRUTH_SCHEMA,
            "video": self.video,
            "duration": self.duration,
            "fps": self.fps,
            "cuts": list(self.cuts),
            "frames": [
                {
                    "t": round(f.t, 4),
                    "faces": {p: [round(v, 4) for v in b] for p, b in f.faces.items()},
                }
                for f in self.frames
            ],
            "speech": [
                {"start": s.start, "end": s.end, "speaker": s.speaker, "text": s.text}
                for s in self.speech
            ],
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        from taskmem_lab.store import atomic_write_json

        atomic_write_json(Path(path), self.to_json())


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"truth: {what} must be a finite number, got {value!r}")
    return float(value)


def _box(value: Any, what: str) -> Box:
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ConfigError(f"truth: {what} must be [x1, y1, x2, y2], got {value!r}")
    x1, y1, x2, y2 = (_number(v, what) for v in value)
    if not (0 <= x1 < x2 <= 1.001 and 0 <= y1 < y2 <= 1.001):
        raise ConfigError(f"truth: {what} must be normalized (0..1, x1 < x2, y1 < y2): {value}")
    return x1, y1, x2, y2


def truth_from_json(data: dict[str, Any]) -> Truth:
    """A `Truth` from its JSON object; raises ConfigError naming the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("truth: the file must hold a JSON object")
    schema = data.get("schema", TRUTH_SCHEMA)
    if schema != TRUTH_SCHEMA:
        raise ConfigError(f"truth: schema {schema!r} is not supported (expected {TRUTH_SCHEMA})")
    fps = _number(data.get("fps"), "fps")
    if fps <= 0:
        raise ConfigError(f"truth: fps must be > 0, got {fps}")
    frames = []
    for i, f in enumerate(data.get("frames") or []):
        faces = f.get("faces") if isinstance(f, dict) else None
        if not isinstance(faces, dict):
            raise ConfigError(f"truth: frames[{i}] needs 't' and a 'faces' object")
        boxes = {str(p): _box(b, f"frames[{i}].faces[{p!r}]") for p, b in faces.items()}
        frames.append(TruthFrame(_number(f.get("t"), f"frames[{i}].t"), boxes))
    frames.sort(key=lambda f: f.t)
    speech = []
    for i, s in enumerate(data.get("speech") or []):
        if not isinstance(s, dict) or not isinstance(s.get("text"), str) or not s.get("speaker"):
            raise ConfigError(f"truth: speech[{i}] needs start, end, speaker and text")
        start, end = _number(s.get("start"), f"speech[{i}].start"), _number(s["end"], "end")
        if end < start:
            raise ConfigError(f"truth: speech[{i}] ends ({end}) before it starts ({start})")
        speech.append(TruthSpeech(start, end, str(s["speaker"]), s["text"]))
    speech.sort(key=lambda s: (s.start, s.end))
    duration = data.get("duration")
    if duration is None:
        ends = [f.t for f in frames] + [s.end for s in speech]
        duration = max(ends, default=0.0)
    return Truth(
        video=str(data.get("video", "")),
        duration=_number(duration, "duration"),
        fps=fps,
        frames=tuple(frames),
        speech=tuple(speech),
        cuts=tuple(sorted(_number(c, "cuts[]") for c in data.get("cuts") or [])),
        meta=dict(data.get("meta") or {}),
    )


def load_truth(path: str | Path) -> Truth:
    """Read a truth file (see docs/perception.md for the format)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"truth file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"truth file {path} is not JSON: {exc}") from exc
    return truth_from_json(data)
