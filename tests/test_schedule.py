import json

import pytest

from taskmem_lab.media.stream import load_stream, segments
from taskmem_lab.media.video import clip_schedule, window_size, window_times


def spans(clips):
    return [(c.start, c.end) for c in clips]


def test_default_schedule_on_27_3_seconds():
    clips = clip_schedule([(0.0, 27.3)], 10, 50)
    assert spans(clips) == [(0, 10), (10, 20), (20, 27.3)]
    assert [c.window_start for c in clips] == [0, 0, 0]
    assert [c.index for c in clips] == [0, 1, 2]


def test_window_is_context_duration_back_from_new_end():
    clips = clip_schedule([(0.0, 100.0)], 10, 50)
    assert clips[6].start == 60 and clips[6].window_start == 20 and clips[6].window_end == 70


def test_trailing_span_under_one_second_is_merged():
    clips = clip_schedule([(0.0, 30.5)], 10, 50)
    assert spans(clips) == [(0, 10), (10, 20), (20, 30.5)]
    clips = clip_schedule([(0.0, 31.0)], 10, 50)
    assert spans(clips)[-1] == (30, 31.0)


def test_short_segment_is_kept_not_dropped():
    assert spans(clip_schedule([(0.0, 0.4)], 10, 50)) == [(0, 0.4)]


def test_start_and_end_clip_the_stream():
    clips = clip_schedule([(0.0, 100.0)], 10, 30, start=25, end=61)
    assert spans(clips) == [(25, 35), (35, 45), (45, 55), (55, 61)]
    assert clips[0].window_start == 25 and clips[-1].window_start == 31


def test_gaps_between_segments_are_skipped_and_windows_stay_inside_a_segment():
    clips = clip_schedule([(0.0, 20.0), (100.0, 125.0)], 10, 50)
    assert spans(clips) == [(0, 10), (10, 20), (100, 110), (110, 120), (120, 125)]
    assert [c.segment for c in clips] == [0, 0, 1, 1, 1]
    assert clips[2].window_start == 100


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        clip_schedule([(0, 10)], 0, 50)
    with pytest.raises(ValueError):
        clip_schedule([(0, 10)], 10, 5)


def test_manifest_stream_with_gap(media, tmp_path):
    manifest = {
        "stream_id": "egoday",
        "files": [
            {"path": str(media["silent"]), "start": 1000.0},
            {"path": str(media["silent"]), "start": 1012.2},
            {"path": str(media["silent"]), "start": 2000.0, "duration": 12.0},
        ],
    }
    path = tmp_path / "stream.json"
    path.write_text(json.dumps(manifest))
    stream = load_stream(path)
    assert stream.stream_id == "egoday"
    segs = segments(stream)
    assert len(segs) == 2 and segs[0][0] == 1000.0 and segs[0][1] == pytest.approx(1024.2, abs=0.1)
    clips = clip_schedule(segs, 10, 50)
    assert clips[0].start == 1000.0 and all(not (1025 < c.start < 2000) for c in clips)


def test_manifest_errors_are_clear(tmp_path):
    from taskmem_lab.errors import ConfigError, VideoError

    bad = tmp_path / "bad.yaml"
    bad.write_text("files: []\n")
    with pytest.raises(ConfigError, match="non-empty 'files'"):
        load_stream(bad)
    with pytest.raises(VideoError, match="not found"):
        load_stream(tmp_path / "missing.mp4")


def test_window_size_counts_what_window_times_lists():
    schedule = clip_schedule([(0.0, 61.3), (100.0, 100.4), (200.05, 263.0)], 10, 50)
    for fps, max_frames in ((1.0, 32), (2.0, 16), (0.3, 4), (7.0, 1)):
        for clip in schedule:
            assert window_size(clip, fps, max_frames) == len(window_times(clip, fps, max_frames))
