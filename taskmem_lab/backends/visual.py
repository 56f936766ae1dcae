"""Visual parts of a request as PIL images with their timing, for the in-process backends.

Floor 2, shared by `hf` and `vllm`. Frames are already decoded RGB arrays (`Frame.image`), so the
local backends hand pixels to the model's processor directly instead of a JPEG round trip;
`ImagePart`s arrive as JPEG and are decoded once here.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from taskmem_lab.backends.base import VideoPart
from taskmem_lab.errors import ModelError
from taskmem_lab.timefmt import hms

if TYPE_CHECKING:
    from PIL import Image


def frame_images(part: VideoPart) -> list[Image.Image]:
    """The window's frames as RGB PIL images, in stream order."""
    from PIL import Image

    return [Image.fromarray(f.image).convert("RGB") for f in part.frames]


def jpeg_image(data: bytes) -> Image.Image:
    """A JPEG `ImagePart` as an RGB PIL image (a clear error when it is not an image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ModelError(f"an image part of the request cannot be decoded: {exc}") from exc


def effective_fps(part: VideoPart) -> float:
    """Frames per second actually spanned by the frames (thinning lowers it below `part.fps`)."""
    n = len(part.frames)
    if n > 1:
        spanned = part.frames[-1].time - part.frames[0].time
        if spanned > 0:
            return (n - 1) / spanned
    return part.fps


def frame_label(t: float) -> str:
    """The text line sent before each frame that goes as an image: `Frame at HH:MM:SS(.s)`,
    in stream time, so the model can cite when something was seen."""
    return f"Frame at {hms(t, True)}"


def window_label(part: VideoPart) -> str:
    """A one-line anchor in stream time for a window sent as one video.

    Video inputs carry timestamps relative to their first frame; this line ties them to the
    stream times the prompt speaks in (frames sent as images get a `Frame at` line each instead).
    """
    if not part.frames:
        return "Video: no frames"
    first, last = part.frames[0].time, part.frames[-1].time
    return f"Video frames from {hms(first, True)} to {hms(last, True)} ({len(part.frames)} frames)"


def frame_offsets(part: VideoPart) -> list[float]:
    """Each frame's time relative to the window's first frame, in seconds."""
    if not part.frames:
        return []
    t0 = part.frames[0].time
    return [round(f.time - t0, 3) for f in part.frames]
