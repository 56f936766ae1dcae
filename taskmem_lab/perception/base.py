"""The seam between perception and the memorizer (floor 3).

A `Perceiver` is called once per clip, in clip order, with the window frames the VLM will see,
and returns a `Perception`: the new span's transcript and face ids, the window's id order and
transcript, and optionally annotated copies of the frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from taskmem_lab.media.video import Frame
from taskmem_lab.schema import ClipSpec


@dataclass
class Perception:
    """What perception found for a clip (empty when perception is off).

    `transcript` holds the new span's segments (`{start, end, text, speaker}`, speakers as global
    ids); `window_transcript` those of the whole window (what the prompt shows); `identities` the
    global face ids seen in the new span; `window_ids` the ids seen in the window in order of
    first appearance, which fixes the local `<face_N>` numbering shared by the annotated frames
    and the prompt; `frames`, when given, replaces the window's frames in the request (annotated
    copies with boxes, ids and subtitles).
    """

    transcript: list[dict[str, Any]] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    window_ids: list[str] = field(default_factory=list)
    window_transcript: list[dict[str, Any]] = field(default_factory=list)
    frames: list[Frame] | None = None


class Perceiver(Protocol):
    """Perception of one clip, given the window frames the VLM will see (in stream order).

    Called once per clip, in clip order, from the decoding thread; it must use nothing at or
    after `clip.end`.
    """

    def perceive(self, clip: ClipSpec, window: Sequence[Frame]) -> Perception: ...
