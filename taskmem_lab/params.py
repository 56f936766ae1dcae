"""Stage parameters: one frozen, validated dataclass per stage.

Notebook parameter cells mirror these fields one to one; the manifest of a run stores them so a
restarted run can check it continues the same experiment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from taskmem_lab.errors import ConfigError


def check_param(ok: bool, name: str, message: str) -> None:
    """Raise `ConfigError` naming the parameter `name` unless `ok`; shared by every params class."""
    if not ok:
        raise ConfigError(f"parameter {name!r}: {message}")


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
        check_param(self.interval > 0, "interval", f"must be > 0 seconds, got {self.interval}")
        check_param(
            self.context_duration >= self.interval,
            "context_duration",
            f"must be >= interval ({self.interval}), got {self.context_duration}",
        )
        if self.start is not None and self.end is not None:
            check_param(
                self.end > self.start, "end", f"must be > start ({self.start}), got {self.end}"
            )
        check_param(self.frame_fps > 0, "frame_fps", f"must be > 0, got {self.frame_fps}")
        check_param(self.max_frames >= 1, "max_frames", f"must be >= 1, got {self.max_frames}")
        check_param(self.max_side >= 32, "max_side", f"must be >= 32 pixels, got {self.max_side}")
        check_param(1 <= self.jpeg_quality <= 100, "jpeg_quality", "must be in 1..100")
        check_param(0 <= self.max_tasks <= 50, "max_tasks", "must be in 0..50")
        check_model_call(self)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
