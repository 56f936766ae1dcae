import numpy as np
import pytest

from taskmem_lab.errors import VideoError
from taskmem_lab.media.video import (
    StreamFrames,
    encode_mp4,
    probe,
    sample_frames,
    sample_times,
    thin,
)
from taskmem_lab.params import MemorizeParams
from taskmem_lab.schema import Stream, StreamFile


def grey(frame: np.ndarray) -> int:
    return int(round(float(frame.mean()) / 16))


def test_probe_tone_video(media):
    info = probe(media["tone_27_3"])
    assert info.duration == pytest.approx(27.3, abs=0.11)
    assert info.fps == pytest.approx(10)
    assert info.frame_count == 273
    assert (info.width, info.height) == (160, 120)
    assert info.has_audio and info.rotation == 0


def test_probe_silent_and_rotated(media):
    assert probe(media["silent"]).has_audio is False
    rot = probe(media["rotated"])
    assert rot.rotation == 90
    assert (rot.width, rot.height) == (120, 160)  # as displayed


def test_rotated_frames_are_upright_in_both_decoders(media):
    a = sample_frames(media["rotated"], [1.0], max_side=1000, backend="decord")[0]
    b = sample_frames(media["rotated"], [1.0], max_side=1000, backend="pyav")[0]
    assert a.shape == b.shape == (160, 120, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_exact_frame_by_timestamp_constant_rate(media, backend):
    frames = sample_frames(media["index"], [0.0, 0.05, 0.1, 0.95, 1.0, 9.9], backend=backend)
    assert [grey(f) for f in frames] == [0, 0, 1, 9, 10, 99 % 16]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_exact_frame_by_timestamp_variable_rate(media, backend):
    # frames start at 0, .5, .6, .7, 2.0, 2.1, 3.5, 5.0
    frames = sample_frames(media["vfr"], [0.0, 0.49, 0.5, 1.9, 2.0, 3.4, 3.6, 5.0], backend=backend)
    assert [grey(f) for f in frames] == [0, 0, 1, 3, 4, 5, 6, 7]


def test_forward_reader_keeps_its_place_and_seeks_back(media):
    from taskmem_lab.media.video import open_reader

    reader = open_reader(media["vfr"], 640, "pyav")
    try:
        # clip by clip, forward: no seek between requests
        assert [grey(f) for f in reader.frames_at([0.0, 0.49])] == [0, 0]
        assert [grey(f) for f in reader.frames_at([0.5, 1.9])] == [1, 3]
        assert [grey(f) for f in reader.frames_at([1.95, 2.0, 3.4])] == [3, 4, 5]
        assert reader.seeks == 0
        # unsorted and repeated times come back in the order asked
        assert [grey(f) for f in reader.frames_at([5.0, 3.6, 5.0])] == [7, 6, 7]
        # a request before the current place seeks again
        assert [grey(f) for f in reader.frames_at([0.6, 0.7])] == [2, 3]
        assert reader.frames_at([]) == []
    finally:
        reader.close()


def test_stream_frames_forward_equals_decord(media):
    stream = Stream("s", (StreamFile(str(media["index"]), 0.0, 10.0),))
    times = [round(0.1 * k, 6) for k in range(40)]
    a, b = StreamFrames(stream, 64, "decord"), StreamFrames(stream, 64, "pyav")
    try:
        for k in range(0, 40, 10):
            wa, wb = a.window(times[k : k + 10]), b.window(times[k : k + 10])
            assert [grey(f.image) for f in wa] == [grey(f.image) for f in wb]
    finally:
        a.close()
        b.close()


def test_downscaled_frames_have_even_size(media):
    (frame,) = sample_frames(media["tone_27_3"], [3.0], max_side=81)
    h, w = frame.shape[:2]
    assert max(h, w) <= 82 and h % 2 == 0 and w % 2 == 0


@pytest.mark.parametrize("name", ["corrupt"])
def test_corrupt_video_is_a_clear_error(media, name):
    with pytest.raises(VideoError, match="cannot decode|no video stream"):
        probe(media[name])


def test_missing_and_empty_video(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe(tmp_path / "empty.mp4")


def test_sample_times_global_grid():
    assert sample_times(0, 3, 1.0) == [0.0, 1.0, 2.0]
    assert sample_times(2.5, 4.0, 2.0) == [2.5, 3.0, 3.5]
    assert sample_times(0.3, 1.3, 1.0) == [1.0]
    # windows that overlap share their grid points
    assert set(sample_times(10, 20, 1.0)) <= set(sample_times(0, 20, 1.0))


def test_thin_keeps_newest_and_bounds():
    times = [float(i) for i in range(50)]
    out = thin(times, 32)
    assert len(out) == 32 and out[0] == 0.0 and out[-1] == 49.0
    assert thin(times[:5], 32) == times[:5]
    assert thin(times, 1) == [49.0]


def test_stream_frames_decode_each_frame_once_and_stay_bounded(media):
    info = probe(media["index"])
    stream = Stream("index", (StreamFile(str(media["index"]), 0.0, info.duration),))
    frames = StreamFrames(stream, max_side=64)
    requested: set[float] = set()
    for end in (2.0, 4.0, 6.0, 8.0, 9.9):
        window_start = max(0.0, end - 5.0)
        frames.evict_before(window_start)
        times = sample_times(window_start, end, 2.0)
        got = frames.window(times)
        assert [f.time for f in got] == times
        assert len(frames) <= len(sample_times(0, 5.0, 2.0))
        requested |= set(times)
    assert frames.decoded == len(requested)


def test_stream_frames_span_two_files(media):
    info = probe(media["index"])
    d = info.duration
    stream = Stream(
        "two",
        (StreamFile(str(media["index"]), 100.0, d), StreamFile(str(media["index"]), 100.0 + d, d)),
    )
    frames = StreamFrames(stream, max_side=64)
    got = frames.window([100.0, 100.5, 100.0 + d + 0.5])
    assert [grey(f.image) for f in got] == [0, 5, 5]


def test_encode_mp4_roundtrip(media, tmp_path):
    stream = Stream("t", (StreamFile(str(media["tone_27_3"]), 0.0, 27.3),))
    frames = StreamFrames(stream, max_side=81).window([0.0, 1.0, 2.0])
    data = encode_mp4(frames, fps=1.0)
    out = tmp_path / "w.mp4"
    out.write_bytes(data)
    info = probe(out)
    assert info.frame_count == 3 and info.width % 2 == 0 and info.height % 2 == 0


def test_pyav_reader_decodes_forward_and_keeps_its_place(media):
    from taskmem_lab.media.video import _PyAVReader

    reader = _PyAVReader(media["index"], 64)
    try:
        grey = [int(f.mean()) for f in reader.frames_at([0.0, 0.15, 0.3])]
        assert grey == [0, 16, 48]
        later = [int(f.mean()) for f in reader.frames_at([0.55, 2.0])]
        assert later == [(5 * 16) % 256, (20 * 16) % 256]
        assert reader.seeks == 0  # windows in order continue where the last one stopped
        back = [int(f.mean()) for f in reader.frames_at([1.0, 1.05, 2.5, 9.9])]
        assert back == [(n * 16) % 256 for n in (10, 10, 25, 99)]
        assert reader.seeks == 1  # times before the current frame: one seek, in a side decoder
        assert int(reader.frames_at([9.95])[0].mean()) == (99 * 16) % 256
        assert reader.seeks == 1  # ... and the main decoder kept its place
    finally:
        reader.close()


def test_decoder_env_picks_the_backend(media, monkeypatch):
    from taskmem_lab.media.video import _PyAVReader, open_reader

    monkeypatch.setenv("TASKMEM_DECODER", "pyav")
    reader = open_reader(media["index"], 64)
    assert isinstance(reader, _PyAVReader)
    reader.close()
    monkeypatch.setenv("TASKMEM_DECODER", "nonsense")
    with pytest.raises(VideoError, match="TASKMEM_DECODER"):
        open_reader(media["index"], 64)


def _without_decord(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import decord` fail, as on machines where decord has no wheel (not x86)."""
    import builtins
    import sys

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "decord" or name.startswith("decord."):
            raise ImportError("No module named 'decord'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "decord", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_probe_without_decord_reports_real_sizes(media, monkeypatch):
    with_decord = probe(media["tone_27_3"]), probe(media["rotated"])
    _without_decord(monkeypatch)
    with pytest.raises(ImportError):
        import decord  # noqa: F401
    info = probe(media["tone_27_3"])
    assert (info.width, info.height) == (160, 120)  # not the 2x2 of a zero max_side
    assert info.frame_count == 273 and info.fps == pytest.approx(10)
    assert info.duration == pytest.approx(27.3, abs=0.11)
    rot = probe(media["rotated"])
    assert (rot.width, rot.height) == (120, 160) and rot.rotation == 90
    assert (info.width, info.height, info.frame_count) == (
        with_decord[0].width,
        with_decord[0].height,
        with_decord[0].frame_count,
    )
    assert (rot.width, rot.height) == (with_decord[1].width, with_decord[1].height)
    frames = sample_frames(media["tone_27_3"], [1.0], max_side=80)  # auto falls back to PyAV
    assert frames[0].shape == (60, 80, 3)


def test_pyav_readers_in_threads_return_exact_frames(media):
    """Many forward readers decoding at once (as streams do in one process) never hand back a
    frame they converted earlier in place of the one asked for."""
    import threading

    from taskmem_lab.media.video import _PyAVReader

    times = [round(0.3 * i, 1) for i in range(33)]
    expected = [int(round(t * 10)) % 16 for t in times]  # frame n is grey level 16 n
    wrong: list[tuple[float, int]] = []

    def read() -> None:
        reader = _PyAVReader(media["index"], 64)
        try:
            for k in range(0, len(times), 4):
                chunk = times[k : k + 4]
                for t, frame in zip(chunk, reader.frames_at(chunk), strict=True):
                    if grey(frame) != expected[times.index(t)]:
                        wrong.append((t, grey(frame)))
        finally:
            reader.close()

    for _ in range(4):
        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not wrong


def test_passing_times_cover_every_later_window_inside_the_span():
    from taskmem_lab.media.video import clip_schedule, passing_times, window_times

    schedule = clip_schedule([(0.0, 60.0)], 10.0, 50.0)
    for k, clip in enumerate(schedule):
        kept = passing_times(schedule, k, 1.0, 32)
        assert all(clip.start <= t < clip.end for t in kept)
        for later in schedule[k:]:
            inside = [t for t in window_times(later, 1.0, 32) if clip.start <= t < clip.end]
            assert set(inside) <= set(kept)
    # thinning shifts between overlapping windows: a later window wants a time this one skipped
    assert not set(window_times(schedule[5], 1.0, 32)) <= set(window_times(schedule[4], 1.0, 32))


@pytest.mark.parametrize("ahead", [True, False])
def test_thinned_overlapping_windows_never_seek_back(media, ahead):
    """Kept passing frames let every window of a stream come from one forward decode."""
    from taskmem_lab.media.video import clip_schedule
    from taskmem_lab.memorize import prepare_clip

    info = probe(media["index"])
    stream = Stream("index", (StreamFile(str(media["index"]), 0.0, info.duration),))
    params = MemorizeParams(
        interval=1.0, context_duration=5.0, frame_fps=10.0, max_frames=7, max_side=64
    )
    schedule = clip_schedule([(0.0, info.duration)], 1.0, 5.0)
    frames = StreamFrames(stream, params.max_side, "pyav")
    try:
        for clip in schedule:
            prepared = prepare_clip(frames, clip, params, None, schedule if ahead else ())
            # frame n of the index video shows grey n*16 from n*0.1 s
            assert [grey(f.image) for f in prepared.frames] == [
                (round(f.time * 10) * 16 % 256) // 16 for f in prepared.frames
            ]
        seeks = frames._readers[0].seeks
    finally:
        frames.close()
    assert (seeks == 0) if ahead else (seeks > 0)
