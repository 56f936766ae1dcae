"""Video probing, the clip schedule, and exact frame sampling by timestamp.

Floor 1 (media). A stream's frames are read in order by a forward PyAV reader (decord's
`get_batch` on request, or for random access), resized in the decoder, and held in a ring buffer
that never holds more than the frames the next windows show: overlapping windows reuse decoded
frames and their JPEG encodings, so each sampled frame of a stream is decoded and encoded once.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taskmem_lab.errors import VideoError
from taskmem_lab.params import MemorizeParams
from taskmem_lab.schema import ClipSpec, Stream, StreamFile

MIN_TAIL_S = 1.0
MAX_CLIPS = 1_000_000  # ~116 days of stream at 10 s clips; more is a typo in a manifest
_TIME_DECIMALS = 6


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a file; width/height are as displayed (rotation applied)."""

    path: str
    duration: float
    fps: float
    frame_count: int
    width: int
    height: int
    rotation: int
    has_audio: bool


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"video not found: {p}")
    if p.stat().st_size == 0:
        raise VideoError(f"video is empty (0 bytes): {p}")
    return p


def _container_facts(path: Path) -> tuple[int, bool]:
    """Rotation (degrees, display matrix) and audio presence, read with PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            has_audio = len(container.streams.audio) > 0
            if not container.streams.video:
                raise VideoError(f"no video stream in {path}")
            rotation = 0
            for frame in container.decode(video=0):
                rotation = int(getattr(frame, "rotation", 0) or 0)
                break
    except av.FFmpegError as exc:
        raise VideoError(f"cannot decode video {path}: {exc}") from exc
    return rotation % 360, has_audio


def probe(path: str | Path) -> VideoInfo:
    """Duration, fps, frame count, displayed size, rotation and audio presence of a video file."""
    p = _check_file(path)
    rotation, has_audio = _container_facts(p)
    reader = _open_decord(p)
    if reader is not None:
        n = len(reader)
        if n == 0:
            raise VideoError(f"video has no frames: {p}")
        stamps = reader.get_frame_timestamp([n - 1])
        duration = float(stamps[0][1])
        height, width = reader[0].shape[:2]
        fps = float(reader.get_avg_fps())
        return VideoInfo(str(p), duration, fps, n, int(width), int(height), rotation, has_audio)
    times = _pyav_frame_times(p)
    if not times:
        raise VideoError(f"video has no frames: {p}")
    reader = _PyAVReader(p, FULL_SIZE)
    try:
        frame = reader.frames_at([0.0])[0]  # displayed size, rotation applied
    finally:
        reader.close()
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    last = times[-1] + (1.0 / fps if fps else 0.0)
    height, width = frame.shape[:2]
    return VideoInfo(str(p), last, fps, len(times), int(width), int(height), rotation, has_audio)


def decodable_end(path: str | Path) -> float:
    """Seconds from the file's start to the end of its last frame, from the container's index
    (no decoding): a manifest `duration` past it would repeat a frozen frame as if it were real."""
    import av

    p = _check_file(path)
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoError(f"no video stream in {p}")
            vs = container.streams.video[0]
            if vs.duration is not None and vs.time_base is not None:
                return float(vs.duration * vs.time_base)
            if container.duration is not None:
                return float(container.duration) / 1_000_000
    except av.FFmpegError as exc:
        raise VideoError(f"cannot decode video {p}: {exc}") from exc
    return probe(p).duration


# --------------------------------------------------------------------------- schedule


def clip_schedule(
    segments: Sequence[tuple[float, float]],
    interval: float,
    context_duration: float,
    start: float | None = None,
    end: float | None = None,
) -> list[ClipSpec]:
    """The streaming clip schedule over contiguous segments of stream time.

    Clip k covers `[s + k*interval, min(s + (k+1)*interval, seg_end))` where `s` is the segment's
    (clipped) start; its window is `[max(s, new_end - context_duration), new_end)`. Gaps between
    segments are skipped. A trailing span shorter than one second is merged into the clip before
    it (a segment shorter than that is kept as one short clip rather than dropped).
    """
    if not (0 < interval < math.inf) or context_duration < interval:
        raise ValueError("need a finite interval > 0 and context_duration >= interval")
    total = 0.0
    for seg_start, seg_end in segments:
        s = seg_start if start is None else max(seg_start, start)
        e = seg_end if end is None else min(seg_end, end)
        if not (math.isfinite(s) and math.isfinite(e)):
            raise VideoError(f"stream span {s}..{e} is not finite; check the stream's times")
        total += max(0.0, e - s) / interval + 1
    if total > MAX_CLIPS:
        raise VideoError(
            f"the schedule would have about {total:.0f} clips (more than {MAX_CLIPS}); "
            "check the stream's start/duration values, --start/--end and --interval"
        )
    clips: list[ClipSpec] = []
    for seg_index, (seg_start, seg_end) in enumerate(segments):
        s = seg_start if start is None else max(seg_start, start)
        e = seg_end if end is None else min(seg_end, end)
        if e - s <= 0:
            continue
        bounds: list[tuple[float, float]] = []
        k = 0
        while True:
            a = s + k * interval
            if a >= e - 1e-9:
                break
            b = min(s + (k + 1) * interval, e)
            bounds.append((a, b))
            k += 1
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_TAIL_S:
            tail_end = bounds.pop()[1]
            bounds[-1] = (bounds[-1][0], tail_end)
        for a, b in bounds:
            clips.append(
                ClipSpec(
                    index=len(clips),
                    start=round(a, _TIME_DECIMALS),
                    end=round(b, _TIME_DECIMALS),
                    window_start=round(max(s, b - context_duration), _TIME_DECIMALS),
                    segment=seg_index,
                )
            )
    return clips


def sample_times(t0: float, t1: float, fps: float) -> list[float]:
    """Points of the global grid `n / fps` inside `[t0, t1)`.

    A global grid (not one anchored at each window) is what lets overlapping windows share frames.
    """
    first = math.ceil(t0 * fps - 1e-6)
    stop = math.ceil(t1 * fps - 1e-6)
    return [round(n / fps, _TIME_DECIMALS) for n in range(first, stop)]


def thin(times: Sequence[float], max_frames: int) -> list[float]:
    """At most `max_frames` of `times`, evenly spread, always keeping the newest."""
    if len(times) <= max_frames:
        return list(times)
    if max_frames == 1:
        return [times[-1]]
    picks = np.linspace(0, len(times) - 1, max_frames).round().astype(int)
    return [times[i] for i in picks]


def window_times(clip: ClipSpec, fps: float, max_frames: int) -> list[float]:
    """The stream times of the frames a clip's window shows: the global grid, thinned."""
    return thin(sample_times(clip.window_start, clip.end, fps) or [clip.start], max_frames)


def window_size(clip: ClipSpec, fps: float, max_frames: int) -> int:
    """`len(window_times(clip, fps, max_frames))`, counted without listing the times (a plan
    of a week counts 15,000 windows)."""
    grid = math.ceil(clip.end * fps - 1e-6) - math.ceil(clip.window_start * fps - 1e-6)
    return min(max(grid, 1), max_frames)


def passing_times(
    schedule: Sequence[ClipSpec], index: int, fps: float, max_frames: int
) -> list[float]:
    """Times in clip `index`'s new span that its window or any later window shows.

    Thinning picks different grid points in each overlapping window, so a later window asks for
    times an earlier one skipped. Decoding them while the forward reader passes through the span
    spares a backward seek and a re-decode of up to a keyframe interval per window.
    """
    clip = schedule[index]
    keep: set[float] = set()
    for k in range(index, len(schedule)):  # not schedule[index:]: a week-long stream's copy
        later = schedule[k]
        if later.window_start >= clip.end:
            break
        keep.update(t for t in window_times(later, fps, max_frames) if clip.start <= t < clip.end)
    return sorted(keep)


# --------------------------------------------------------------------------- decoding


FULL_SIZE = 0  # `max_side` that keeps frames at their full (even) size


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even output size for a frame scaled down to `max_side` (<= 0: full size, made even)."""
    scale = 1.0 if max_side <= 0 else min(1.0, max_side / max(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def _open_decord(path: Path, width: int = -1, height: int = -1):  # noqa: ANN202 - optional dep
    try:
        import decord
    except ImportError:
        return None
    try:
        return decord.VideoReader(str(path), width=width, height=height, num_threads=1)
    except (RuntimeError, decord.DECORDError) as exc:
        raise VideoError(f"cannot decode video {path}: {str(exc).splitlines()[0]}") from exc


def _pyav_frame_times(path: Path) -> list[float]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            base = stream.time_base or 1
            return [
                float(pkt.pts * base)
                for pkt in container.demux(stream)
                if pkt.pts is not None and pkt.size > 0
            ]
    except av.FFmpegError as exc:
        raise VideoError(f"cannot decode video {path}: {exc}") from exc


class FrameReader(Protocol):
    """Frames of one file by local timestamp (seconds)."""

    def frames_at(self, times: Sequence[float]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class _DecordReader:
    """Exact frames by timestamp: the frame displayed at time t is the last one starting <= t."""

    def __init__(self, path: Path, max_side: int) -> None:
        reader = _open_decord(path)
        h, w = reader[0].shape[:2]
        self.size = _target_size(w, h, max_side)
        if self.size != (w, h):
            # decord's scaler costs memory per reader, so it is used only when frames shrink.
            reader = _open_decord(path, width=self.size[0], height=self.size[1])
        self._reader = reader
        n = len(self._reader)
        self._starts = self._reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)

    def frames_at(self, times: Sequence[float]) -> list[np.ndarray]:
        idx = np.searchsorted(self._starts, np.asarray(times, dtype=np.float64) + 1e-6, "right") - 1
        idx = np.clip(idx, 0, len(self._starts) - 1)
        unique = sorted(set(idx.tolist()))
        batch = self._reader.get_batch(unique).asnumpy()
        by_index = {i: batch[j] for j, i in enumerate(unique)}
        return [by_index[i] for i in idx.tolist()]

    def close(self) -> None:
        self._reader = None


class _PyAVReader:
    """Forward-only PyAV decoder that keeps its place between calls.

    Consecutive windows continue decoding where the last one stopped, so a stream's reader holds
    one open container and two frames (the current one and the one after it), and nothing is
    decoded while the stream waits on the model. A time before the current frame seeks back to
    the keyframe before it. The frame displayed at t is the last one starting at or before t (the
    first frame for a time before it), as with decord.

    Between the times asked it skips non-reference frames (`skip_frame = "NONREF"`: B-frames
    nothing else is predicted from, most frames of a YouTube-style encode) that cannot be shown:
    a packet is skipped only when a packet already read has a later timestamp that is still at
    or before the time sought, so some other frame supersedes it for this time and every later
    one. Reference frames are always decoded, so every frame that is shown decodes exactly as in
    a full decode, at any frame rate, constant or not. `decoded` counts the frames decoded.
    """

    _EPS = 1e-6

    def __init__(self, path: Path, max_side: int, skip_nonref: bool = True) -> None:
        self.path = path
        self.max_side = max_side
        self.skip_nonref = skip_nonref  # False: decode every frame (the figure to compare with)
        self._container: Any = None  # av.container.InputContainer
        self._frames: Any = None  # iterator of decoded av.VideoFrame
        self._cur = None  # last decoded frame starting <= the last time asked
        self._ahead = None  # the frame decoded after it (its start is > that time)
        # (frame, its RGB array): the frame itself is kept, not its id(), which a later frame
        # may reuse once this one is freed
        self._array: tuple[object, np.ndarray] | None = None
        self._target = 0.0  # the time being sought: packets superseded before it may be skipped
        self.seeks = 0
        self.decoded = 0

    @staticmethod
    def _time(frame) -> float:  # noqa: ANN001 - av.VideoFrame
        return float(frame.time or 0.0)

    def _open(self, t: float) -> None:
        import av

        self.close()
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
            if t > 0 and stream.time_base:
                self._container.seek(int(t / stream.time_base), stream=stream, backward=True)
                self.seeks += 1
            self._frames = self._skipping_decode(self._container, stream)
        except av.FFmpegError as exc:
            self.close()
            raise VideoError(f"cannot decode video {self.path}: {exc}") from exc

    def _skipping_decode(self, container, stream) -> Iterator[Any]:  # noqa: ANN001 - av objects
        """Decoded frames in display order, non-reference frames skipped where no time sought
        now or later can show them (see the class docstring)."""
        codec = stream.codec_context
        base = float(stream.time_base or 0.0)
        latest = -math.inf  # the latest timestamp among the packets read so far
        for packet in container.demux(stream):
            if packet.pts is not None and base:
                when = packet.pts * base
                superseded = self.skip_nonref and when < latest <= self._target + self._EPS
                codec.skip_frame = "NONREF" if superseded else "DEFAULT"
                latest = max(latest, when)
            else:
                codec.skip_frame = "DEFAULT"
            for frame in codec.decode(packet):
                self.decoded += 1
                yield frame

    def _pull(self):  # noqa: ANN202 - av.VideoFrame | None
        import av

        assert self._frames is not None
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except av.FFmpegError as exc:
            raise VideoError(f"cannot decode video {self.path}: {exc}") from exc

    def _frame_at(self, t: float):  # noqa: ANN202 - av.VideoFrame
        self._target = t
        if self._frames is None or (
            self._cur is not None and self._time(self._cur) > t + self._EPS
        ):
            self._open(t)
        if self._cur is None:
            self._cur = self._pull()
            if self._cur is None:
                raise VideoError(f"no frame at {t:.3f}s in {self.path}")
            self._ahead = self._pull()
        while self._ahead is not None and self._time(self._ahead) <= t + self._EPS:
            self._cur, self._ahead = self._ahead, self._pull()
        return self._cur

    def frames_at(self, times: Sequence[float]) -> list[np.ndarray]:
        wanted = sorted(set(times))
        found: dict[float, np.ndarray] = {}
        if self._cur is not None:
            # Times behind the current frame come from a second, short-lived decoder, so the
            # main one keeps its place for the times ahead.
            here = self._time(self._cur)
            behind = [t for t in wanted if t < here - self._EPS]
            if behind:
                found.update(self._scan(behind))
                wanted = wanted[len(behind) :]
        for t in wanted:
            frame = self._frame_at(t)
            if self._array is None or self._array[0] is not frame:
                self._array = (frame, self._to_array(frame))
            found[t] = self._array[1]
        return [found[t] for t in times]

    def _scan(self, wanted: Sequence[float]) -> dict[float, np.ndarray]:
        """Frames at sorted `wanted` times: seek before the first, decode forward to the last."""
        import av

        found: dict[float, np.ndarray] = {}
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                if wanted[0] > 0 and stream.time_base:
                    container.seek(int(wanted[0] / stream.time_base), stream=stream, backward=True)
                    self.seeks += 1
                prev = None
                pending = list(wanted)
                for frame in container.decode(stream):
                    while (
                        pending and prev is not None and self._time(frame) > pending[0] + self._EPS
                    ):
                        found[pending.pop(0)] = self._to_array(prev)
                    if not pending:
                        break
                    prev = frame
                for t in pending:
                    if prev is None:
                        raise VideoError(f"no frame at {t:.3f}s in {self.path}")
                    found[t] = self._to_array(prev)
        except av.FFmpegError as exc:
            raise VideoError(f"cannot decode video {self.path}: {exc}") from exc
        return found

    def _to_array(self, frame) -> np.ndarray:  # noqa: ANN001 - av.VideoFrame
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        w, h = frame.width, frame.height
        if rotation in (90, 270):
            w, h = h, w
        tw, th = _target_size(w, h, self.max_side)
        if rotation in (90, 270):
            tw, th = th, tw
        arr = frame.reformat(width=tw, height=th, format="rgb24").to_ndarray()
        return np.ascontiguousarray(np.rot90(arr, k=rotation // 90)) if rotation else arr

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = self._cur = self._ahead = None
        self._array = None


DECODER_ENV = "TASKMEM_DECODER"  # "decord" | "pyav": what backend "auto" picks (default: decord)


def open_reader(path: str | Path, max_side: int, backend: str = "auto") -> FrameReader:
    """A frame reader for one file: decord when available, PyAV otherwise or when asked.

    With backend "auto", `TASKMEM_DECODER=pyav` picks the forward-only PyAV reader (lower memory
    for many concurrent streams: it never decodes ahead).
    """
    p = _check_file(path)
    if backend == "auto":
        import os

        backend = os.environ.get(DECODER_ENV, "auto") or "auto"
        if backend not in ("auto", "decord", "pyav"):
            raise VideoError(f"{DECODER_ENV} must be decord or pyav, got {backend!r}")
    if backend in ("auto", "decord"):
        try:
            import decord  # noqa: F401
        except ImportError:
            if backend == "decord":
                raise VideoError("decord is not installed: pip install decord") from None
        else:
            return _DecordReader(p, max_side)
    return _PyAVReader(p, max_side)


def sample_frames(
    path: str | Path,
    times: Sequence[float],
    max_side: int = MemorizeParams.max_side,
    backend: str = "auto",
) -> list[np.ndarray]:
    """RGB frames displayed at each of `times` (seconds) in one file."""
    reader = open_reader(path, max_side, backend)
    try:
        return reader.frames_at(times)
    finally:
        reader.close()


# --------------------------------------------------------------------------- frames of a stream


@dataclass
class Frame:
    """A sampled frame at stream time `time`, with its JPEG encodings cached by quality."""

    time: float
    image: np.ndarray
    _jpeg: dict[int, bytes] = field(default_factory=dict, repr=False)

    def jpeg(self, quality: int = 85) -> bytes:
        if quality not in self._jpeg:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(self.image).save(buf, format="JPEG", quality=quality)
            self._jpeg[quality] = buf.getvalue()
        return self._jpeg[quality]


class StreamFrames:
    """Ring buffer of sampled frames over a stream, bounded by one context window.

    `window(times)` returns frames for sorted stream times, decoding only those not yet held;
    `evict_before(t)` drops frames older than the next window. Files are opened when first needed
    and closed once the stream has moved past them. Frames are requested in stream order, so the
    default reader is PyAV's forward one (`open_reader(..., "pyav")`), which holds a third of
    decord's memory; `backend` picks another.
    """

    def __init__(
        self, stream: Stream, max_side: int = MemorizeParams.max_side, backend: str = "pyav"
    ) -> None:
        self.stream = stream
        self.max_side = max_side
        self.backend = backend
        self._frames: OrderedDict[float, Frame] = OrderedDict()
        self._readers: dict[int, FrameReader] = {}
        self.decoded = 0

    def _file_for(self, t: float) -> int:
        before = None
        for i, f in enumerate(self.stream.files):
            if f.start - 1e-6 <= t < f.start + f.duration:
                return i
            if f.start <= t:
                before = i
        # A time in a tiny gap between abutting files shows the last frame of the earlier file.
        if before is not None:
            f = self.stream.files[before]
            if t - (f.start + f.duration) <= MIN_TAIL_S:
                return before
        raise VideoError(
            f"stream time {t:.3f}s is not covered by any file of {self.stream.stream_id}"
        )

    def window(self, times: Iterable[float]) -> list[Frame]:
        times = list(times)
        missing = [t for t in times if t not in self._frames]
        by_file: dict[int, list[float]] = {}
        for t in missing:
            by_file.setdefault(self._file_for(t), []).append(t)
        for i, ts in sorted(by_file.items()):
            f: StreamFile = self.stream.files[i]
            reader = self._readers.get(i)
            if reader is None:
                reader = open_reader(f.path, self.max_side, self.backend)
                self._readers[i] = reader
            local = [max(0.0, f.local(t)) for t in ts]
            for t, image in zip(ts, reader.frames_at(local), strict=True):
                self._frames[t] = Frame(t, image)
                self.decoded += 1
        return [self._frames[t] for t in times]

    def evict_before(self, t: float) -> None:
        for key in [k for k in self._frames if k < t]:
            del self._frames[key]
        for i in list(self._readers):
            f = self.stream.files[i]
            if f.start + f.duration <= t:
                self._readers.pop(i).close()

    def __len__(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._frames.clear()


def encode_mp4(frames: Sequence[Frame], fps: float) -> bytes:
    """H.264 mp4 (even dimensions, yuv420p) of the given frames, in memory."""
    import av

    if not frames:
        raise VideoError("cannot encode an empty window")
    buf = io.BytesIO()
    h, w = frames[0].image.shape[:2]
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "28"}
        for fr in frames:
            img = fr.image[: stream.height, : stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
