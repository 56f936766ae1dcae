"""Generated media for tests, examples and benchmarks (ffmpeg's lavfi sources; nothing shipped).

Floor 2 helper. Each function writes one small file and returns its path; ffmpeg must be on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- speech

# espeak-ng voices far apart for a speaker encoder: (voice name, pitch 0..99). Measured with
# resemblyzer on short sentences: same voice cosine >= 0.84, any two of these <= 0.66.
VOICES: dict[str, tuple[str, int]] = {
    "male": ("en+m3", 35),
    "female": ("en-gb-x-rp+f4", 75),
    "third": ("en+steph", 50),
}


@dataclass(frozen=True)
class SpokenLine:
    """A line of generated speech: where its voiced part starts and ends in the video."""

    start: float
    end: float
    text: str
    voice: str


@dataclass(frozen=True)
class SpeechVideo:
    path: Path
    lines: tuple[SpokenLine, ...]
    duration: float


def speak(text: str, voice: str = "male", speed: int = 150) -> tuple[np.ndarray, int]:
    """espeak-ng speech as float32 samples and their rate; `voice` is a `VOICES` key or a voice name."""
    import io
    import wave

    if shutil.which("espeak-ng") is None:
        raise VideoError("espeak-ng is not on PATH (apt-get install espeak-ng)")
    name, pitch = VOICES.get(voice, (voice, 50))
    cmd = ["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    data = subprocess.run(cmd, check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(data), "rb") as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32), sr


def speech_video(
    path: str | Path,
    lines: list[tuple[float, str, str]],
    duration: float,
    size: str = "160x120",
    fps: int = 10,
    tone: float = 0.0,
) -> SpeechVideo:
    """testsrc2 video with espeak-ng `lines` (start seconds, text, voice) spoken at known times.

    Lines are mixed onto silence (or a quiet 440 Hz tone of amplitude `tone`) and muxed as AAC at
    16 kHz. The returned lines carry the voiced extent of each line (espeak's leading and trailing
    silence trimmed), so tests can check timestamps.
    """
    import wave

    path = Path(path)
    spoken: list[SpokenLine] = []
    sr = 22050
    track = np.zeros(int(duration * sr), dtype=np.float32)
    for start, text, voice in lines:
        samples, sr_line = speak(text, voice)
        if sr_line != sr:
            raise VideoError(f"espeak-ng produced {sr_line} Hz, expected {sr}")
        voiced = np.flatnonzero(np.abs(samples) > 0.01)
        samples = samples[voiced[0] : voiced[-1] + 1]
        a = int(round(start * sr))
        if a + len(samples) > len(track):
            raise ValueError(f"line {text!r} at {start}s does not fit in {duration}s")
        track[a : a + len(samples)] += samples
        spoken.append(SpokenLine(start, start + len(samples) / sr, text, voice))
    if tone:
        track += tone * np.sin(2 * np.pi * 440 * np.arange(len(track)) / sr).astype(np.float32)
    wav = path.with_name(f".speech-{path.stem}.wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(track, -1, 1) * 32767).astype("<i2").tobytes())
    try:
        _ffmpeg(
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-i", str(wav),
            "-t", f"{duration}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-ar", "16000", "-shortest", str(path),
        )  # fmt: skip
    finally:
        wav.unlink(missing_ok=True)
    return SpeechVideo(path, tuple(spoken), duration)


# --------------------------------------------------------------------------- faces

# The six-person group photo shipped inside the insightface package (package data of its
# pure-Python wheel, installed by the `samples` extra, part of `all`; insightface itself is never
# imported, and nothing is downloaded at run time). Its face boxes (x1, y1, x2, y2), left to
# right, as dlib's HOG detector finds them on the full-size photo.
GROUP_PHOTO_PACKAGE = "insightface>=2.1"
GROUP_PHOTO_MEMBER = "insightface/data/images/t1.jpg"
GROUP_PHOTO_SHA256 = "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"
GROUP_PHOTO_FACES: dict[str, tuple[int, int, int, int]] = {
    "p1": (67, 283, 176, 391),
    "p2": (275, 176, 365, 266),
    "p3": (450, 295, 558, 403),
    "p4": (724, 367, 833, 475),
    "p5": (870, 67, 1000, 197),
    "p6": (1118, 283, 1227, 391),
}


def group_photo() -> Path:
    """Path to `insightface/data/images/t1.jpg` (1280x886, six people), found, never fetched.

    Looked up in order: `$TASKMEM_FACE_PHOTO`; the installed insightface package (located, not
    imported; `pip install 'taskmem_lab[samples]'`, part of `all`). The package's copy is
    checked against its sha256. Raises VideoError, in one line naming both ways out, when
    neither is there.
    """
    import hashlib
    import importlib.util
    import os

    explicit = os.environ.get("TASKMEM_FACE_PHOTO")
    if explicit:
        if not Path(explicit).is_file():
            raise VideoError(f"TASKMEM_FACE_PHOTO={explicit} is not a file")
        return Path(explicit)
    spec = importlib.util.find_spec("insightface")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(root) / "data" / "images" / "t1.jpg"
        if p.is_file():
            if hashlib.sha256(p.read_bytes()).hexdigest() != GROUP_PHOTO_SHA256:
                raise VideoError(
                    f"{p} is not the expected group photo (sha256 differs); set "
                    "TASKMEM_FACE_PHOTO to a copy of insightface's t1.jpg"
                )
            return p
    raise VideoError(
        "the sample group photo is not installed: pip install 'taskmem_lab[samples]' (it "
        f"brings {GROUP_PHOTO_MEMBER} with {GROUP_PHOTO_PACKAGE}), or set TASKMEM_FACE_PHOTO "
        "to a copy of that photo (see docs/install.md, section 'Sample media')"
    )


def head_region(
    face: tuple[int, int, int, int],
    aspect: float,
    photo_size: tuple[int, int],
    face_frac: float = 0.4,
) -> tuple[int, int, int, int]:
    """A region of the photo around `face` with width/height `aspect`, the face taking
    `face_frac` of its height (a head-and-shoulders crop), shifted to lie inside the photo."""
    x1, y1, x2, y2 = face
    h = (y2 - y1) / face_frac
    w = h * aspect
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.1 * h
    pw, ph = photo_size
    w, h = min(w, pw), min(h, ph)
    left = min(max(cx - w / 2, 0), pw - w)
    top = min(max(cy - h / 2, 0), ph - h)
    return int(left), int(top), int(left + w), int(top + h)


@dataclass(frozen=True)
class Shot:
    """`duration` seconds showing photo regions (x1, y1, x2, y2) side by side, each scaled to
    fit its share of the frame."""

    duration: float
    regions: tuple[tuple[int, int, int, int], ...]


def _layout(
    shot: Shot, size: tuple[int, int]
) -> list[tuple[tuple[int, int, int, int], float, tuple[int, int]]]:
    """Per region: the region, its scale, and where its top-left corner lands in the frame."""
    w, h = size
    cell = w / len(shot.regions)
    out = []
    for k, (rx1, ry1, rx2, ry2) in enumerate(shot.regions):
        scale = min(cell / (rx2 - rx1), h / (ry2 - ry1))
        tw, th = int(round((rx2 - rx1) * scale)), int(round((ry2 - ry1) * scale))
        out.append(((rx1, ry1, rx2, ry2), scale, (int(k * cell + (cell - tw) / 2), (h - th) // 2)))
    return out


@dataclass(frozen=True)
class ShotVideo:
    """A generated video of shots; `people[k]` are the faces fully inside shot k's regions,
    `boxes[k]` their boxes in shot k's frames (normalized 0..1, before the camera drift)."""

    path: Path
    shots: tuple[Shot, ...]
    people: tuple[tuple[str, ...], ...]
    boxes: tuple[dict[str, tuple[float, float, float, float]], ...]
    starts: tuple[float, ...]
    size: tuple[int, int]
    fps: int

    def shot_at(self, t: float) -> int:
        return max(i for i, s in enumerate(self.starts) if s <= t + 1e-9)


def group_photo_shots(seconds: float = 4.0) -> list[Shot]:
    """Four shots of the group photo in which people leave and come back:
    p1 p2 p3 (a real crop) | p4 p6 (a real crop) | p5 + p1 (side by side) | p3 + p4."""
    f, size, aspect = GROUP_PHOTO_FACES, (1280, 886), 320 / 360
    return [
        Shot(seconds, ((0, 120, 640, 480),)),
        Shot(seconds, ((700, 230, 1280, 556),)),
        Shot(seconds, (head_region(f["p5"], aspect, size), head_region(f["p1"], aspect, size))),
        Shot(seconds, (head_region(f["p3"], aspect, size), head_region(f["p4"], aspect, size))),
    ]


def shot_video(
    path: str | Path,
    photo: str | Path,
    shots: list[Shot],
    faces: dict[str, tuple[int, int, int, int]] | None = None,
    size: tuple[int, int] = (640, 360),
    fps: int = 10,
    drift_px: float = 3.0,
    audio_from: str | Path | None = None,
) -> ShotVideo:
    """H.264 video cut from a photo: each shot shows its regions side by side on dark grey.

    The crop window of every region drifts slowly (a hand-held camera, `drift_px` photo pixels),
    so consecutive frames differ a little while face boxes still overlap; people leave and come
    back by appearing in later shots. `faces` (default: the group photo's) decides who is
    visible in each shot and where. `audio_from`, a media file (e.g. from `speech_video`), lends
    its audio track, muxed without re-encoding the video.
    """
    import math

    import av
    from PIL import Image

    path = Path(path)
    faces = GROUP_PHOTO_FACES if faces is None else faces
    img = Image.open(photo).convert("RGB")
    pw, ph = img.size
    w, h = size
    people, boxes = [], []
    for shot in shots:
        found: dict[str, tuple[float, float, float, float]] = {}
        for (rx1, ry1, rx2, ry2), scale, (ox, oy) in _layout(shot, size):
            for name, (x1, y1, x2, y2) in faces.items():
                if rx1 <= x1 and ry1 <= y1 and x2 <= rx2 and y2 <= ry2:
                    found[name] = (
                        (ox + (x1 - rx1) * scale) / w,
                        (oy + (y1 - ry1) * scale) / h,
                        (ox + (x2 - rx1) * scale) / w,
                        (oy + (y2 - ry1) * scale) / h,
                    )
        people.append(tuple(sorted(found, key=lambda n: found[n][0])))
        boxes.append(found)
    starts = tuple(float(sum(s.duration for s in shots[:k])) for k in range(len(shots)))
    video = path.with_name(f".video-{path.name}") if audio_from else path
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        n = 0
        for shot in shots:
            layout = _layout(shot, size)
            for _ in range(int(round(shot.duration * fps))):
                t = n / fps
                dx = drift_px * math.sin(2 * math.pi * t / 5.0)
                dy = drift_px * math.cos(2 * math.pi * t / 7.0)
                canvas = Image.new("RGB", (w, h), (40, 40, 44))
                for (rx1, ry1, rx2, ry2), scale, origin in layout:
                    left = min(max(rx1 + dx, 0), pw - (rx2 - rx1))
                    top = min(max(ry1 + dy, 0), ph - (ry2 - ry1))
                    crop = (left, top, left + rx2 - rx1, top + ry2 - ry1)
                    tw, th = int(round((rx2 - rx1) * scale)), int(round((ry2 - ry1) * scale))
                    canvas.paste(img.resize((tw, th), Image.Resampling.BILINEAR, box=crop), origin)
                frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
        for packet in stream.encode():
            container.mux(packet)
    if audio_from:
        try:
            _ffmpeg(
                "-i", str(video), "-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0",
                "-c:v", "copy", "-c:a", "aac", "-shortest", str(path),
            )  # fmt: skip
        finally:
            video.unlink(missing_ok=True)
    return ShotVideo(path, tuple(shots), tuple(people), tuple(boxes), starts, size, fps)
