"""Window audio: 16 kHz mono float32 samples of a stream span, decoded with PyAV.

Floor 1 (media). `window_audio(stream, t0, t1)` seeks each file that overlaps `[t0, t1)`, decodes
only that span, and resamples it with PyAV's `AudioResampler`; the whole file is never held in
memory. Sample `i` of the result is stream time `t0 + i / sr`: the result always has
`round((t1 - t0) * sr)` samples, and stream time that no file's audio covers (a gap between files,
a file without an audio track next to files with one, the end of a short track) is silence (zeros).
A window in which no overlapping file has an audio track raises `NoAudioError`, so a caller can
tell "no microphone" from "nobody spoke"; an undecodable audio track raises `VideoError`.

The helpers below (RMS envelope, loudness, waveform downsampling, WAV bytes) are what the audio
notebook plots and what model clients send; librosa is imported inside the functions that use it.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import numpy as np

from taskmem_lab.errors import NoAudioError, VideoError, missing_extra
from taskmem_lab.schema import Stream, StreamFile

SAMPLE_RATE = 16000
# Decoding starts this long before the span so the resampler's filter has settled at t0.
_PREROLL_S = 0.2


def _has_audio_track(path: str | Path) -> bool:
    import av

    try:
        with av.open(str(path)) as container:
            return len(container.streams.audio) > 0
    except av.FFmpegError as exc:
        raise VideoError(f"cannot open {path}: {exc}") from exc


def stream_has_audio(stream: Stream) -> bool:
    """Whether any file of the stream has an audio track (probes containers, decodes nothing)."""
    return any(_has_audio_track(f.path) for f in stream.files)


def window_audio(stream: Stream, t0: float, t1: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at `sr` Hz for stream times `[t0, t1)`; gaps are silence.

    Raises:
        NoAudioError: no file overlapping the window has an audio track.
        VideoError: a file is missing or its audio cannot be decoded.
    """
    if t1 < t0:
        raise ValueError(f"window end {t1} is before its start {t0}")
    if sr <= 0:
        raise ValueError(f"sample rate must be > 0, got {sr}")
    out = np.zeros(int(round((t1 - t0) * sr)), dtype=np.float32)
    overlapping = [f for f in stream.files if f.start < t1 and f.start + f.duration > t0]
    with_audio = [f for f in overlapping if _has_audio_track(f.path)]
    if not with_audio:
        raise NoAudioError(
            f"no audio track in the files of stream {stream.stream_id!r} covering "
            f"{t0:.2f}-{t1:.2f}s"
        )
    for f in with_audio:
        a = max(t0, f.start)
        b = min(t1, f.start + f.duration)
        shift = int(round((f.start - f.offset - t0) * sr))
        _decode_into(f, f.local(a), f.local(b), out, shift, sr)
    return out


def _decode_into(
    f: StreamFile, local_a: float, local_b: float, out: np.ndarray, offset: int, sr: int
) -> None:
    """Decode file-local `[local_a, local_b)` into `out`; file sample n goes to `out[offset + n]`."""
    import av

    first = int(round(local_a * sr)) + offset
    stop = int(round(local_b * sr)) + offset
    first, stop = max(0, first), min(len(out), stop)
    if stop <= first:
        return
    try:
        with av.open(f.path) as container:
            stream = container.streams.audio[0]
            start_at = max(0.0, local_a - _PREROLL_S)
            if start_at > 0 and stream.time_base:
                container.seek(int(start_at / stream.time_base), stream=stream, backward=True)
            # Keep the channel layout and average channels afterwards: ffmpeg's own down-mix
            # sums correlated channels at -3 dB each, which makes stereo louder than its parts.
            resampler = av.AudioResampler(format="fltp", rate=sr)
            cursor: int | None = None  # file-local sample index of the next resampled sample
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= local_b:
                    break
                for piece in resampler.resample(frame):
                    cursor = _place(piece, cursor, out, offset, first, stop, sr)
            for piece in resampler.resample(None):
                cursor = _place(piece, cursor, out, offset, first, stop, sr)
    except av.FFmpegError as exc:
        raise VideoError(
            f"cannot decode the audio of {f.path} at {local_a:.2f}-{local_b:.2f}s: {exc}"
        ) from exc


def _place(
    piece: Any, cursor: int | None, out: np.ndarray, offset: int, first: int, stop: int, sr: int
) -> int:
    """Copy one resampled `av.AudioFrame` to its place by timestamp; returns the next file
    sample index."""
    planes = piece.to_ndarray()
    samples = (
        planes.mean(axis=0) if planes.ndim == 2 and planes.shape[0] > 1 else planes.reshape(-1)
    )
    if piece.pts is not None and piece.time_base is not None:
        start = int(round(float(piece.pts * piece.time_base) * sr))
    else:
        start = cursor if cursor is not None else 0
    a, b = start + offset, start + offset + len(samples)
    lo, hi = max(a, first), min(b, stop)
    if hi > lo:
        out[lo:hi] = samples[lo - a : hi - a]
    return start + len(samples)


# --------------------------------------------------------------------------- helpers


def wav_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV of float samples in [-1, 1] (clipped), in memory."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Float32 mono samples and sample rate of 16-bit PCM WAV bytes (channels are averaged)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise VideoError(f"expected 16-bit PCM WAV, got {8 * w.getsampwidth()}-bit")
            channels, sr = w.getnchannels(), w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise VideoError(f"not a readable WAV: {exc}") from exc
    audio = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm
    return (audio / 32768.0).astype(np.float32), sr


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality resampling (librosa, soxr backend) for audio that arrives at another rate."""
    if sr_in == sr_out:
        return np.asarray(audio, dtype=np.float32)
    try:
        import librosa
    except ImportError as exc:
        raise missing_extra("librosa", "asr", exc) from exc
    return librosa.resample(np.asarray(audio, dtype=np.float32), orig_sr=sr_in, target_sr=sr_out)


def rms_envelope(
    audio: np.ndarray, sr: int = SAMPLE_RATE, hop_s: float = 0.05, t0: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Frame times (stream seconds, frame centres) and RMS energy per hop, via librosa."""
    try:
        import librosa
    except ImportError as exc:
        raise missing_extra("librosa", "asr", exc) from exc
    hop = max(1, int(round(hop_s * sr)))
    if len(audio) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.float32)
    rms = librosa.feature.rms(
        y=np.asarray(audio, np.float32), frame_length=2 * hop, hop_length=hop
    )[0]
    times = t0 + librosa.frames_to_time(np.arange(len(rms)), sr=sr, hop_length=hop)
    return times, rms


def loudness_db(
    audio: np.ndarray,
    sr: int = SAMPLE_RATE,
    hop_s: float = 0.05,
    t0: float = 0.0,
    floor_db: float = -80.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame times and loudness in dB relative to full scale (RMS 1.0 = 0 dB), floored."""
    import librosa

    times, rms = rms_envelope(audio, sr, hop_s, t0)
    db = librosa.amplitude_to_db(rms, ref=1.0, top_db=None) if len(rms) else rms
    return times, np.maximum(db, floor_db)


def waveform(
    audio: np.ndarray, sr: int = SAMPLE_RATE, points: int = 2000, t0: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A plottable waveform: bucket times, and the min and max sample of each of `points` buckets.

    Min/max (not plain decimation) keeps short loud events visible at any zoom level.
    """
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    audio = np.asarray(audio, dtype=np.float32)
    n = len(audio)
    if n == 0:
        empty = np.zeros(0, dtype=np.float32)
        return np.zeros(0), empty, empty
    buckets = min(points, n)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    lo = np.minimum.reduceat(audio, edges[:-1])
    hi = np.maximum.reduceat(audio, edges[:-1])
    times = t0 + (edges[:-1] + edges[1:]) / 2 / sr
    return times, lo, hi
