"""Generated media for tests, examples and benchmarks (ffmpeg's lavfi sources; nothing shipped).

Floor 2 helper. Each function writes one small file and returns its path; ffmpeg must be on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from taskmem_lab.errors import VideoError


def _ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        raise VideoError("ffmpeg is not on PATH (apt-get install ffmpeg, or conda install ffmpeg)")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


def test_video(
    path: str | Path,
    duration: float,
    size: str = "160x120",
    fps: int = 10,
    audio: bool = True,
    rotate: int = 0,
) -> Path:
    """testsrc2 pattern with a 440 Hz tone (or silent), optional rotation metadata."""
    path = Path(path)
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000"]
    args += ["-t", f"{duration}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-shortest"] if audio else ["-an"]
    if not rotate:
        _ffmpeg(*args, str(path))
        return path
    # The rotate tag survives only a stream copy, so encode first and tag in a second pass.
    plain = path.with_name(f".plain-{path.name}")
    _ffmpeg(*args, str(plain))
    _ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", str(path))
    plain.unlink()
    return path


def index_video(path: str | Path, pts: list[float], size: tuple[int, int] = (64, 48)) -> Path:
    """A video whose frame n is a flat grey of level `(n * 16) % 256` shown from `pts[n]` seconds.

    Irregular `pts` make a variable-frame-rate file; the grey level lets a test tell exactly which
    frame a sampler returned.
    """
    import av

    path = Path(path)
    w, h = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=1000)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv444p"
        stream.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for n, t in enumerate(pts):
            img = np.full((h, w, 3), (n * 16) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
