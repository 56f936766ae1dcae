"""Window audio from real files (PyAV decode + resample) and the audio notebook's helpers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from taskmem_lab.errors import NoAudioError, VideoError
from taskmem_lab.media.audio import (
    SAMPLE_RATE,
    loudness_db,
    read_wav,
    resample,
    rms_envelope,
    stream_has_audio,
    wav_bytes,
    waveform,
    window_audio,
)
from taskmem_lab.schema import Stream, StreamFile
from taskmem_lab.testing import media
from taskmem_lab.testing.media import _ffmpeg

BEEPS = (1.0, 3.5, 7.25)  # onsets of 0.2 s 1 kHz beeps
BEEP_S = 0.2


def beep_video(path: Path, duration: float, beeps=BEEPS, audio_only: bool = False) -> Path:
    """Stereo 44.1 kHz AAC beeps at known onsets (exercises resampling and down-mixing)."""
    gate = "+".join(f"between(t,{b},{b + BEEP_S})" for b in beeps)
    expr = f"0.5*sin(2*PI*1000*t)*({gate})"
    args = []
    if not audio_only:
        args += ["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10"]
    args += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{expr}|{expr}':s=44100:d={duration}"]
    args += ["-t", str(duration)]
    if not audio_only:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    _ffmpeg(*args, "-c:a", "aac", str(path))
    return path


def onsets(audio: np.ndarray, t0: float, threshold: float = 0.1) -> list[float]:
    """Stream times where loud runs start (runs separated by >= 50 ms of quiet)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if len(loud) == 0:
        return []
    starts = [loud[0]] + [b for a, b in zip(loud[:-1], loud[1:], strict=True) if b - a > 800]
    return [t0 + s / SAMPLE_RATE for s in starts]


def one(path: Path, duration: float, start: float = 0.0) -> Stream:
    return Stream(path.stem, (StreamFile(str(path), start, duration),))


@pytest.fixture(scope="module")
def beeps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return beep_video(tmp_path_factory.mktemp("audio") / "beeps.mp4", 10.0)


@pytest.mark.parametrize(
    ("t0", "t1", "expected"),
    [
        (0.0, 10.0, [1.0, 3.5, 7.25]),
        (3.0, 8.0, [3.5, 7.25]),  # seeks into the file
        (7.0, 7.4, [7.25]),
        (1.1, 3.0, [1.1]),  # starts inside a beep
        (4.0, 7.0, []),
    ],
)
def test_window_has_exact_length_and_beeps_at_stream_times(beeps, t0, t1, expected):
    audio = window_audio(one(beeps, 10.0), t0, t1)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == round((t1 - t0) * SAMPLE_RATE)
    found = onsets(audio, t0)
    assert len(found) == len(expected)
    for got, want in zip(found, expected, strict=True):
        assert got == pytest.approx(want, abs=0.005)


def test_window_in_stream_time_of_a_file_that_starts_late(beeps):
    audio = window_audio(one(beeps, 10.0, start=100.0), 102.0, 108.0)
    assert onsets(audio, 102.0) == pytest.approx([103.5, 107.25], abs=0.005)


def test_time_past_the_end_of_the_track_is_silence(beeps):
    audio = window_audio(one(beeps, 10.0), 7.0, 14.0)
    assert len(audio) == 7 * SAMPLE_RATE
    assert onsets(audio, 7.0) == pytest.approx([7.25], abs=0.005)
    assert not np.any(audio[int(3.5 * SAMPLE_RATE) :])


def test_gap_between_files_is_silence_and_second_file_is_shifted(beeps):
    stream = Stream("two", (StreamFile(str(beeps), 0.0, 10.0), StreamFile(str(beeps), 12.0, 10.0)))
    audio = window_audio(stream, 6.0, 20.0)
    assert len(audio) == 14 * SAMPLE_RATE
    assert onsets(audio, 6.0) == pytest.approx([7.25, 13.0, 15.5, 19.25], abs=0.005)
    gap = audio[int(4.05 * SAMPLE_RATE) : int(5.95 * SAMPLE_RATE)]  # stream 10.05-11.95
    assert not np.any(gap)


def test_video_without_audio_is_a_specific_error(tmp_path):
    silent = media.test_video(tmp_path / "silent.mp4", 3, audio=False)
    stream = one(silent, 3.0)
    assert not stream_has_audio(stream)
    with pytest.raises(NoAudioError, match="no audio track"):
        window_audio(stream, 0.0, 2.0)
    assert issubclass(NoAudioError, VideoError)


def test_a_file_without_audio_in_a_stream_with_audio_is_silence(tmp_path, beeps):
    silent = media.test_video(tmp_path / "silent.mp4", 4, audio=False)
    stream = Stream("mix", (StreamFile(str(beeps), 0.0, 10.0), StreamFile(str(silent), 10.0, 4.0)))
    assert stream_has_audio(stream)
    audio = window_audio(stream, 5.0, 14.0)
    assert onsets(audio, 5.0) == pytest.approx([7.25], abs=0.005)
    with pytest.raises(NoAudioError):
        window_audio(stream, 10.5, 13.0)  # only the silent file covers it


def corrupt_audio_copy(src: Path, dst: Path) -> Path:
    """Overwrite the audio packets (from the 10th on) with noise; video stays intact."""
    import av

    with av.open(str(src)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.audio[0]) if p.size]
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for pos, size in packets[10:]:
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_corrupt_audio_stream_is_a_clear_video_error(tmp_path, beeps):
    bad = corrupt_audio_copy(beeps, tmp_path / "bad.mp4")
    with pytest.raises(VideoError, match=r"cannot decode the audio of .*bad\.mp4"):
        window_audio(one(bad, 10.0), 0.0, 8.0)


def test_missing_file_and_bad_window(tmp_path, beeps):
    with pytest.raises(VideoError):
        window_audio(one(tmp_path / "nope.mp4", 5.0), 0.0, 1.0)
    with pytest.raises(ValueError, match="before its start"):
        window_audio(one(beeps, 10.0), 5.0, 4.0)


@pytest.mark.slow
def test_a_short_window_deep_in_a_long_file_decodes_only_that_span(tmp_path):
    long = beep_video(tmp_path / "long.m4a", 120.0, beeps=(105.0,), audio_only=True)
    stream = one(long, 120.0)
    started = time.perf_counter()
    full = window_audio(stream, 0.0, 120.0)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    part = window_audio(stream, 104.0, 106.0)
    part_s = time.perf_counter() - started
    assert onsets(part, 104.0) == pytest.approx([105.0], abs=0.005)
    # Same samples up to the resampler's sub-sample phase after a seek.
    assert np.corrcoef(part, full[104 * SAMPLE_RATE : 106 * SAMPLE_RATE])[0, 1] > 0.98
    assert part_s < full_s / 5, (part_s, full_s)


# --------------------------------------------------------------------------- helpers


def test_wav_round_trip_and_clipping():
    audio = np.array([0.0, 0.5, -0.5, 1.5, -2.0], np.float32)
    back, sr = read_wav(wav_bytes(audio, 8000))
    assert sr == 8000
    assert back == pytest.approx([0.0, 0.5, -0.5, 1.0, -1.0], abs=1e-3)
    with pytest.raises(VideoError, match="WAV"):
        read_wav(b"RIFF not a wav")


@pytest.mark.slow
def test_loudness_rms_and_waveform_follow_the_beeps(beeps):
    pytest.importorskip("librosa")
    audio = window_audio(one(beeps, 10.0), 0.0, 10.0)
    times, rms = rms_envelope(audio, hop_s=0.05)
    assert len(times) == len(rms) and times[1] - times[0] == pytest.approx(0.05)
    loud = times[rms > 0.1]
    assert loud.min() == pytest.approx(1.0, abs=0.1) and loud.max() == pytest.approx(7.45, abs=0.1)
    _, db = loudness_db(audio)
    assert db.max() == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=1.0)
    assert db.min() == -80.0
    t, lo, hi = waveform(audio, points=500, t0=2.0)
    assert len(t) == len(lo) == len(hi) == 500
    assert t[0] == pytest.approx(2.01) and hi.max() == pytest.approx(audio.max())
    assert lo.min() == pytest.approx(audio.min())
    assert len(waveform(audio[:10], points=500)[0]) == 10
    assert len(resample(audio, 16000, 8000)) == len(audio) // 2
