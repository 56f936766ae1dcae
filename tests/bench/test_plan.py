"""Planning a benchmark's streams from the three published layouts, on generated folder trees."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from taskmem_lab.bench import egolife, videomme
from taskmem_lab.bench import plan as plan_module
from taskmem_lab.bench.plan import KnownFiles, plan_streams, question_tasks, write_sources
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import ConfigError
from taskmem_lab.media import stream as stream_module
from taskmem_lab.media.stream import load_stream, segments
from taskmem_lab.media.video import StreamFrames, clip_schedule
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import STAMP_FIELDS, file_stamp
from taskmem_lab.testing import media as gen

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
PARAMS = MemorizeParams(interval=5, context_duration=10)


def _mme_row(vid: str, n: int) -> dict:
    return {
        "video_id": f"{n:03d}", "duration": "short", "domain": "d", "sub_category": "s",
        "url": "", "videoID": vid, "question_id": f"{n:03d}-1", "task_type": "Counting",
        "question": "How many?", "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "A",
    }  # fmt: skip


@needs_ffmpeg
def test_videomme_plan_finds_videos_at_any_depth_and_counts_calls(tmp_path: Path) -> None:
    data = tmp_path / "videos" / "data"
    data.mkdir(parents=True)
    gen.test_video(data / "abc.mp4", 12, size="64x48", fps=5, audio=False)
    gen.test_video(data / "xyz.mp4", 21, size="64x48", fps=5, audio=False)
    rows = [_mme_row("abc", 1), _mme_row("xyz", 2), _mme_row("gone", 3)]
    records = videomme.from_rows(rows, "test")
    plan = plan_streams("videomme", records, tmp_path / "videos", PARAMS)
    assert [s.stream_id for s in plan.streams] == ["abc", "xyz"]
    assert "gone" in plan.missing and "no video gone.mp4" in plan.missing["gone"]
    abc, xyz = plan.streams
    assert (abc.clips, xyz.clips) == (3, 5)  # 21 s: 0-5, 5-10, 10-15, 15-20, 20-21 kept
    assert abc.calls == 3 and abc.single_file and abc.questions == ["001-1"]
    semantic = plan_streams(
        "videomme", records, tmp_path / "videos", MemorizeParams(5, 10, semantic=True)
    )
    assert semantic.calls == 2 * plan.calls
    assert [s.stream_id for s in plan_streams(
        "videomme", records, tmp_path / "videos", PARAMS, only=["xyz"]
    ).streams] == ["xyz"]  # fmt: skip
    assert len(plan_streams("videomme", records, tmp_path / "videos", PARAMS, limit=1).streams) == 1
    with pytest.raises(ConfigError, match="no stream nope"):
        plan_streams("videomme", records, tmp_path / "videos", PARAMS, only=["nope"])
    table = plan.table()
    assert "total: 2 streams" in table and "not planned: gone" in table
    sources = write_sources(plan, tmp_path / "bench")
    assert sources["abc"] == (str((data / "abc.mp4").resolve()), None)  # no copy, no manifest


def _egolife_row(n: int, date: str, clock: str) -> dict:
    return {
        "ID": n, "query_time": {"date": date, "time": clock}, "type": "EventRecall",
        "question": f"Question {n}?", "choice_a": "a", "choice_b": "b", "choice_c": "c",
        "choice_d": "d", "answer": "A", "target_time": {"date": "DAY1", "time": "11000100"},
    }  # fmt: skip


@needs_ffmpeg
def test_egolife_plan_lays_days_end_to_end_and_skips_gaps(tmp_path: Path) -> None:
    day1 = tmp_path / "videos" / "A1_JAKE" / "DAY1"
    day2 = tmp_path / "videos" / "A1_JAKE" / "DAY2"
    day1.mkdir(parents=True)
    day2.mkdir(parents=True)
    names = [
        (day1, "DAY1_A1_JAKE_11000000"),  # 11:00:00, 6 s
        (day1, "DAY1_A1_JAKE_11000600"),  # 11:00:06, abuts the first
        (day1, "DAY1_A1_JAKE_11300000"),  # 11:30:00, after a gap
        (day2, "DAY2_A1_JAKE_09000000"),  # next day 09:00:00
    ]
    for folder, name in names:
        gen.test_video(folder / f"{name}.mp4", 6, size="64x48", fps=5, audio=False)
    rows = [
        _egolife_row(1, "DAY1", "11300300"),
        _egolife_row(2, "DAY2", "09000100"),
        _egolife_row(3, "DAY1", "11000900"),
    ]
    records = egolife.from_rows(rows, "EgoLifeQA_A1_JAKE.json")
    plan = plan_streams("egolife", records, tmp_path / "videos", PARAMS, tasks="questions")
    (s,) = plan.streams
    assert s.stream_id == "A1_JAKE"
    assert [f["start"] for f in s.files] == [39600.0, 39606.0, 41400.0, 86400.0 + 32400.0]
    stream = s.stream()
    assert len(segments(stream)) == 3  # two abutting files make one segment; gaps are skipped
    assert s.clips == len(clip_schedule(segments(stream), 5, 10))
    assert abs(s.duration - 24.0) < 0.5
    # questions become tasks at their query times, in arrival order
    assert [t["id"] for t in s.tasks] == ["A1_JAKE_3", "A1_JAKE_1", "A1_JAKE_2"]
    assert [t["time"] for t in s.tasks] == sorted(r.query_time for r in records)
    source, task_file = write_sources(plan, tmp_path / "bench")[s.stream_id]
    loaded = load_stream(source)
    assert loaded.stream_id == "A1_JAKE" and len(loaded.files) == 4
    assert json.loads(Path(task_file).read_text()) == s.tasks
    # the DAYn folders may also sit directly under --videos
    flat = plan_streams("egolife", records, tmp_path / "videos" / "A1_JAKE", PARAMS)
    assert [f["start"] for f in flat.streams[0].files] == [f["start"] for f in s.files]


@needs_ffmpeg
def test_a_replan_opens_only_changed_videos(tmp_path: Path, monkeypatch) -> None:
    day = tmp_path / "videos" / "A1_JAKE" / "DAY1"
    day.mkdir(parents=True)
    for clock in ("11000000", "11000600"):
        gen.test_video(day / f"DAY1_A1_JAKE_{clock}.mp4", 6, size="64x48", fps=5, audio=False)
    records = egolife.from_rows([_egolife_row(1, "DAY1", "11000900")], "EgoLifeQA_A1_JAKE.json")
    known_path = tmp_path / "files.json"
    first = plan_streams(
        "egolife", records, tmp_path / "videos", PARAMS, known=KnownFiles(known_path)
    )
    probed: list[str] = []
    real_end = plan_module.decodable_end
    monkeypatch.setattr(plan_module, "decodable_end", lambda p: probed.append(p) or real_end(p))
    again = plan_streams(
        "egolife", records, tmp_path / "videos", PARAMS, known=KnownFiles(known_path)
    )
    assert again.streams[0].files == first.streams[0].files and probed == []
    # a stream manifest written from the plan loads without probing its files either
    source, _ = write_sources(again, tmp_path / "bench")["A1_JAKE"]
    monkeypatch.setattr(stream_module, "decodable_end", _no_probe)
    assert load_stream(source).files == again.streams[0].stream().files
    # a touched file is probed again, and only that one; its stale stamp no longer vouches
    touched = day / "DAY1_A1_JAKE_11000600.mp4"
    os.utime(touched)
    plan_streams("egolife", records, tmp_path / "videos", PARAMS, known=KnownFiles(known_path))
    assert probed == [str(touched.resolve())]
    with pytest.raises(AssertionError, match="probed"):
        load_stream(source)


def _no_probe(path: object) -> float:
    raise AssertionError(f"{path} was probed although its stamp matched")


def _tempo(uid: str, start: float, end: float) -> QARecord:
    return QARecord(
        id=f"{uid}_{start}_{end}_0", benchmark="egotempo", video_id=f"{uid}_{start}_{end}",
        question="What happens?", options=(), answer="Something.", answer_kind="open",
        task_type="action", query_time=round(end - start, 6),
        meta={"ego4d_uid": uid, "clip_start": start, "clip_end": end},
    )  # fmt: skip


def test_egotempo_plan_reads_ranges_in_place_even_below_zero(tmp_path: Path) -> None:
    videos = tmp_path / "ego4d"
    videos.mkdir()
    # 100 frames, frame n (grey (16 n) % 256) shown from n / 10 s
    gen.index_video(videos / "uid1.mp4", [i * 0.1 for i in range(100)])
    records = [_tempo("uid1", 2.0, 6.0), _tempo("uid1", -1.5, 3.0), _tempo("nouid", 1.0, 2.0)]
    plan = plan_streams("egotempo", records, videos, PARAMS, tasks="questions")
    ranged, negative = sorted(plan.streams, key=lambda s: s.files[0]["offset"], reverse=True)
    stamp = {k: ranged.files[0][k] for k in STAMP_FIELDS}  # the file's, so loads trust it
    assert stamp == file_stamp(videos / "uid1.mp4")
    assert ranged.files[0] | {"path": ""} == {
        **stamp,
        "path": "",
        "start": 0.0,
        "offset": 2.0,
        "duration": 4.0,
    }
    assert negative.files[0] | {"path": ""} == {
        **stamp,
        "path": "",
        "start": 1.5,
        "offset": 0.0,
        "duration": 3.0,
    }
    assert "nouid_1.0_2.0" in plan.missing
    sources = write_sources(plan, tmp_path / "bench")
    assert not (videos / "uid1_2.0_6.0.mp4").exists()  # read in place, nothing re-encoded
    # stream time 1.0 of the 2.0-6.0 clip is file time 3.0: frame 30
    frames = StreamFrames(load_stream(sources[ranged.stream_id][0]), 64)
    assert int(frames.window([1.0])[0].image.mean()) == (30 * 16) % 256
    # the clip starting 1.5 s before the video: stream time 2.0 is file time 0.5 (frame 5),
    # and the question at 4.5 s (its end) stays at the end of the stream
    stream = load_stream(sources[negative.stream_id][0])
    assert stream.start == 1.5 and stream.end == 4.5
    assert int(StreamFrames(stream, 64).window([2.0])[0].image.mean()) == (5 * 16) % 256
    assert negative.tasks == [] or negative.tasks[0]["time"] == 4.5


def test_question_tasks_leave_out_questions_asked_at_the_end() -> None:
    asked = _tempo("u", 0.0, 8.0)
    at_end = QARecord(
        id="q", benchmark="videomme", video_id="v", question="Q?", options=("a", "b"),
        answer="A", answer_kind="choice", task_type="t", query_time=None,
    )  # fmt: skip
    assert [t["id"] for t in question_tasks([at_end, asked])] == [asked.id]
