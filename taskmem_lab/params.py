"""Stage parameters: one frozen, validated dataclass per stage.

Notebook parameter cells mirror these fields one to one; the manifest of a run stores them so a
restarted run can check it continues the same experiment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from taskmem_lab.errors import ConfigError

MAX_INTERVAL_S = 3600.0  # one clip per hour at most; a window longer than that is a typo
# A clip shorter than this holds under one frame at the usual 1-2 fps, and an hour of video
# would make tens of thousands of model calls: `--interval 0.0001` is a typo, not a plan.
MIN_INTERVAL_S = 0.5


def check_param(ok: bool, name: str, message: str) -> None:
    """Raise `ConfigError` naming the parameter `name` unless `ok`; shared by every params class."""
    if not ok:
        raise ConfigError(f"parameter {name!r}: {message}")


def check_finite(params: Any) -> None:
    """Every float field of a params dataclass is a finite number (not NaN, not inf): `inf`
    from the command line (`--temperature inf`, `1e400`) would otherwise reach a server, or be
    stored as `Infinity`. Shared by every params class, first thing in `__post_init__`."""
    for f in fields(params):
        value = getattr(params, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"parameter {f.name!r}: must be a finite number, got {value}")


def check_model_call(params: Any, prefix: str = "") -> None:
    """The checks every params class with model-call settings shares, on the fields it has:
    `{prefix}temperature` >= 0, `{prefix}max_tokens` >= 16 and `{prefix}reasks` in 0..5."""
    rules = (
        ("temperature", lambda v: v >= 0, "must be >= 0"),
        ("max_tokens", lambda v: v >= 16, "must be >= 16"),
        ("reasks", lambda v: 0 <= v <= 5, "must be in 0..5"),
    )
    for name, ok, message in rules:
        field_name = prefix + name
        if hasattr(params, field_name):
            check_param(ok(getattr(params, field_name)), field_name, message)


@dataclass(frozen=True)
class MemorizeParams:
    """Parameters of the streaming memorization stage.

    Attributes:
        interval: seconds of new video per clip.
        context_duration: seconds the VLM sees per clip (new span included).
        start: stream time to start at (None: the stream's start).
        end: stream time to stop at (None: the stream's end).
        frame_fps: frames per second sampled from the window for the VLM.
        max_frames: cap on frames per window; more are thinned uniformly.
        max_side: longest side in pixels of a frame sent to the VLM.
        jpeg_quality: JPEG quality of frames sent to the VLM.
        semantic: also write atomic knowledge statements per clip.
        supplement_prompt: extra instructions appended to the episodic prompt.
        max_tasks: most recent arrived tasks shown per clip.
        temperature: sampling temperature of the memorizer.
        max_tokens: completion budget per call.
        reasks: how often a reply that cannot be parsed is asked again.
    """

    interval: float = 10.0
    context_duration: float = 50.0
    start: float | None = None
    end: float | None = None
    frame_fps: float = 1.0
    max_frames: int = 32
    max_side: int = 640
    jpeg_quality: int = 85
    semantic: bool = False
    supplement_prompt: str = ""
    max_tasks: int = 5
    temperature: float = 0.0
    max_tokens: int = 2048
    reasks: int = 1

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(
            MIN_INTERVAL_S <= self.interval <= MAX_INTERVAL_S,
            "interval",
            f"must be in [{MIN_INTERVAL_S:g}, {MAX_INTERVAL_S:g}] seconds, got {self.interval}",
        )
        check_param(
            self.context_duration <= MAX_INTERVAL_S,
            "context_duration",
            f"must be <= {MAX_INTERVAL_S:g} seconds, got {self.context_duration}",
        )
        for name in ("start", "end"):
            value = getattr(self, name)
            check_param(
                value is None or math.isfinite(value),
                name,
                f"must be a finite number of seconds, got {value}",
            )
        check_param(
            self.context_duration >= self.interval,
            "context_duration",
            f"must be >= interval ({self.interval}), got {self.context_duration}",
        )
        if self.start is not None and self.end is not None:
            check_param(
                self.end > self.start, "end", f"must be > start ({self.start}), got {self.end}"
            )
        check_param(
            0 < self.frame_fps <= 60, "frame_fps", f"must be in (0, 60], got {self.frame_fps}"
        )
        check_param(
            1 <= self.max_frames <= 1024, "max_frames", f"must be in 1..1024, got {self.max_frames}"
        )
        check_param(self.max_side >= 32, "max_side", f"must be >= 32 pixels, got {self.max_side}")
        check_param(1 <= self.jpeg_quality <= 100, "jpeg_quality", "must be in 1..100")
        check_param(0 <= self.max_tasks <= 50, "max_tasks", "must be in 0..50")
        check_model_call(self)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
