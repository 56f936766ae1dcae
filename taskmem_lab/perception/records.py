"""Records that perception modules exchange (floor 3): speech segments and face detections.

Times are stream seconds; boxes are `(x1, y1, x2, y2)` normalized to the frame's width and height
(0..1), so detections made on frames of one size can be drawn on frames of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNKNOWN_SPEAKER = "unknown"


@dataclass
class Segment:
    """One utterance: a sentence or less, one speaker, video time to 0.1 s."""

    start: float
    end: float
    text: str
    speaker: str = UNKNOWN_SPEAKER  # "[face_N]" once matched, else "unknown" or a backend label

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text, "speaker": self.speaker}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        return cls(
            float(data["start"]),
            float(data["end"]),
            str(data["text"]),
            str(data.get("speaker", UNKNOWN_SPEAKER)),
        )


@dataclass
class FaceDetection:
    """A face found on one sampled frame, with its embedding and what later steps decide."""

    time: float
    box: tuple[float, float, float, float]
    score: float
    quality: float
    embedding: np.ndarray = field(repr=False)
    track: int = -1  # IoU track within the clip
    cluster: int = -1  # in-clip cluster (HDBSCAN label; -1 noise)
    identity: str = ""  # global id "[face_N]" once the registry assigned one

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "box": [round(float(v), 5) for v in self.box],
            "score": round(float(self.score), 4),
            "quality": round(float(self.quality), 4),
            "track": self.track,
            "cluster": self.cluster,
            "identity": self.identity,
        }


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of `x` (float32, at least 2-d) scaled to length 1; all-zero rows stay zero.

    Face and voice embeddings are compared by cosine similarity, so every embedding is stored
    at unit length.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def unit(v: np.ndarray) -> np.ndarray:
    """One embedding (flattened, float32) scaled to length 1; all zeros stays zero."""
    return unit_rows(np.ravel(v))[0]
