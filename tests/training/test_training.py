"""Training export: replay of stored runs, exact messages, media, on-policy slots, CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskmem_lab.backends.base import Reply, Request, VideoPart
from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.errors import ConfigError, ReplayError
from taskmem_lab.media.stream import load_stream
from taskmem_lab.media.video import probe
from taskmem_lab.memorize import memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.schema import Task
from taskmem_lab.store import RunDir
from taskmem_lab.training.export import (
    PRECEDING_PLACEHOLDER,
    VIDEO_TOKEN,
    ExportParams,
    export_training,
    fill_preceding,
    request_from_record,
)

pytest.importorskip("pyarrow", reason="exports write parquet: pip install 'taskmem_lab[train]'")

PARAMS = MemorizeParams(
    interval=5, context_duration=12, frame_fps=2, supplement_prompt="Note colours."
)
TASKS = [Task("a", "where is the cup?", 3.0), Task("b", "what colour is the door?", 12.0)]


class RecordingFakeModel(FakeModel):
    """The fake model, keeping every request it was sent (what the memorizer really sent)."""

    def __init__(self) -> None:
        super().__init__("recording")
        self.requests: list[Request] = []

    def generate(self, request: Request) -> Reply:
        self.requests.append(request)
        return super().generate(request)


@pytest.fixture()
def recorded_run(media, tmp_path):
    model = RecordingFakeModel()
    run = memorize(
        load_stream(media["tone_27_3"]),
        model,
        PARAMS,
        str(tmp_path / "run"),
        tasks=TASKS,
        progress=False,
    )
    return run, model


def load_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_export_round_trip_matches_what_the_memorizer_sent(recorded_run, tmp_path):
    import pyarrow.parquet as pq

    run, model = recorded_run
    out = tmp_path / "out"
    summary = export_training([run.path], out, progress=False)
    sent = [r for r in model.requests if r.purpose == "episodic"]
    assert summary.records == len(sent) == 6
    rows = pq.read_table(out / "episodic.parquet").to_pylist()
    lines = load_jsonl(out / "episodic.jsonl")
    verl = ("prompt", "videos", "response", "id", "type", "need_rollout", "data_source")
    assert [{k: r[k] for k in verl} for r in rows] == [{k: r[k] for k in verl} for r in lines]
    records = run.finished()
    for row, request in zip(rows, sent, strict=True):
        clip = row["clip"]
        assert row["id"] == f"tone_27_3*{clip}" and row["type"] == "episodic"
        assert row["need_rollout"] is False and row["step"] == clip
        # The rebuilt request is the sent one: same texts, same JPEG bytes, same sampling.
        rebuilt = request_from_record(row, out)
        assert rebuilt.fingerprint("m") == request.fingerprint("m")
        assert (
            rebuilt.fingerprint(row["model"])[:16]
            == row["request_hash"]
            == records[clip].request_hash
        )
        # verl's chat list: the text blocks around a <video> placeholder.
        texts = [
            [p.text for p in m.parts if not isinstance(p, VideoPart)] for m in request.messages
        ]
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["prompt"][0]["content"] == texts[0][0]
        assert row["prompt"][1]["content"].split(f"\n{VIDEO_TOKEN}\n") == texts[1]
        assert json.loads(row["response"]) == {"description": records[clip].episodic}
        assert row["tasks"] == [
            {"id": t.task_id, "question": t.question, "time": t.time}
            for t in TASKS
            if t.time < row["end"]
        ]
        video = [p for p in request.messages[1].parts if isinstance(p, VideoPart)][0]
        assert row["frame_times"] == [f.time for f in video.frames]
        info = probe(out / row["videos"][0]["video"])
        assert info.frame_count == len(video.frames)
        # The new span alone, for judges.
        assert row["new_frame_times"] == [t for t in row["frame_times"] if t >= row["start"]]
        assert set(row["new_frames"]) <= set(row["frames"])
        assert probe(out / row["new_video"]).frame_count == len(row["new_frames"])
    # Overlapping windows share frame files: each sampled frame is written once.
    all_frames = {f for r in rows for f in r["frames"]}
    assert summary.frames_written == len(all_frames) < sum(len(r["frames"]) for r in rows)
    card = (out / "README.md").read_text()
    assert "config_name: off_policy" in card and "Made with a fake model" in card


def test_parquet_loads_with_datasets(recorded_run, tmp_path):
    datasets = pytest.importorskip("datasets")
    run, _ = recorded_run
    export_training([run.path], tmp_path / "out", progress=False)
    ds = datasets.load_dataset(
        "parquet",
        data_files=str(tmp_path / "out" / "episodic_on_policy.parquet"),
        cache_dir=str(tmp_path / "hf"),
    )["train"]
    assert len(ds) == 6 and ds[0]["need_rollout"] is True
    assert {"prompt", "videos", "response", "id", "type", "need_rollout"} <= set(ds.column_names)


def test_on_policy_records_leave_the_preceding_slot_open(recorded_run, tmp_path):
    run, _ = recorded_run
    export_training([run.path], tmp_path / "out", progress=False)
    off = load_jsonl(tmp_path / "out" / "episodic.jsonl")
    on = load_jsonl(tmp_path / "out" / "episodic_on_policy.jsonl")
    records = run.finished()
    for a, b in zip(off, on, strict=True):
        assert b["need_rollout"] is True and b["id"] == a["id"] and b["step"] == a["step"]
        user = b["prompt"][1]["content"]
        assert user.count(PRECEDING_PLACEHOLDER) == 1
        for clip in b["preceding_clips"]:
            assert records[clip].episodic not in user
        # Filling the slot with the run's own entries gives back the off-policy prompt.
        entries = [
            (records[c].start, records[c].end, records[c].episodic) for c in b["preceding_clips"]
        ]
        assert fill_preceding(user, entries, b["local_ids"]) == a["prompt"][1]["content"]
    assert on[0]["preceding_clips"] == [] and on[3]["preceding_clips"] == [2]


def test_frames_only_and_mp4_only_media(recorded_run, tmp_path):
    run, _ = recorded_run
    export_training(
        [run.path], tmp_path / "f", ExportParams(media="frames", on_policy=False), progress=False
    )
    row = load_jsonl(tmp_path / "f" / "episodic.jsonl")[0]
    assert row["new_video"] is None and row["videos"][0]["video"] == row["frames"]
    assert not (tmp_path / "f" / "episodic_on_policy.jsonl").exists()
    export_training(
        [run.path], tmp_path / "m", ExportParams(media="mp4", absolute_paths=True), progress=False
    )
    row = load_jsonl(tmp_path / "m" / "episodic.jsonl")[0]
    assert row["frames"] == [] and Path(row["videos"][0]["video"]).is_absolute()
    with pytest.raises(ReplayError, match="without frame files"):
        request_from_record(row, tmp_path / "m")
    with pytest.raises(ConfigError, match="'media'"):
        ExportParams(media="gif")


def test_a_changed_run_is_refused_naming_the_clip(recorded_run, tmp_path):
    run, _ = recorded_run
    lines = run.clips_path.read_text().splitlines()
    first = json.loads(lines[1])
    first["episodic"] = "edited by hand"  # clip 2's prompt shows clip 1's entry
    lines[1] = json.dumps(first)
    run.clips_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReplayError, match=r"clip 2 \(00:00:10-00:00:15\).*request_hash"):
        export_training([run.path], tmp_path / "out", progress=False)


def test_tasks_are_stored_beside_the_run_and_checked(recorded_run, tmp_path):
    run, _ = recorded_run
    stored = json.loads((run.path / "tasks.json").read_text())
    assert [t["id"] for t in stored] == ["a", "b"]
    (run.path / "tasks.json").unlink()
    with pytest.raises(ReplayError, match="--run-tasks"):
        export_training([run.path], tmp_path / "x", progress=False)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"id": "a", "question": "other?", "time": 3.0}]))
    with pytest.raises(ReplayError, match="not the ones"):
        export_training([run.path], tmp_path / "x", tasks_path=wrong, progress=False)
    right = tmp_path / "right.json"
    right.write_text(json.dumps(stored))
    assert (
        export_training([run.path], tmp_path / "x", tasks_path=right, progress=False).records == 6
    )


def test_moved_source_video_and_changed_prompt(media, tmp_path):
    video = shutil.copy(media["silent"], tmp_path / "clip.mp4")
    run = memorize(
        load_stream(video), FakeModel(), MemorizeParams(), str(tmp_path / "run"), progress=False
    )
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    os.replace(video, moved / "clip.mp4")
    with pytest.raises(ReplayError, match="--source-dir"):
        export_training([run.path], tmp_path / "out", progress=False)
    assert (
        export_training([run.path], tmp_path / "out", source_dir=moved, progress=False).records == 2
    )
    manifest = run.manifest()
    manifest["prompts"]["episodic_user"] = "000000000000"
    RunDir(run.path).write_manifest(manifest)
    with pytest.raises(ReplayError, match="prompt 'episodic_user' changed"):
        export_training([run.path], tmp_path / "out2", source_dir=moved, progress=False)


def test_two_runs_of_one_stream_would_collide(media, tmp_path):
    stream = load_stream(media["silent"])
    a = memorize(stream, FakeModel(), MemorizeParams(), str(tmp_path / "a"), progress=False)
    b = memorize(stream, FakeModel("other"), MemorizeParams(), str(tmp_path / "b"), progress=False)
    with pytest.raises(ConfigError, match="would collide"):
        export_training([a.path, b.path], tmp_path / "out", progress=False)


@pytest.mark.slow
def test_export_training_cli(recorded_run, tmp_path):
    run, _ = recorded_run
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskmem_lab.cli",
            "export-training",
            str(run.path),
            "--out",
            str(tmp_path / "o"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 records, 6 on-policy" in proc.stdout
    info = json.loads((tmp_path / "o" / "export.json").read_text())
    assert info["records"] == 6 and info["runs"][0]["fake"] is True
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskmem_lab.cli",
            "export-training",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "not a run directory" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_runs_with_perception_replay_from_the_stored_perception(tmp_path):
    """ASR-only perception (Whisper tiny.en on espeak speech): subtitles drawn on the frames and
    the transcript in the prompt are reproduced from disk, so the request hashes still match."""
    pytest.importorskip("faster_whisper")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from taskmem_lab.testing.media import speech_video

    speech_video(
        tmp_path / "speech.mp4", [(1.0, "Hello everyone, welcome to the meeting.", "male")], 12.0
    )
    proc = subprocess.run(
        [sys.executable, "-m", "taskmem_lab.cli", "memorize", str(tmp_path / "speech.mp4"), "--model", "fake",
         "--out", str(tmp_path / "runs"), "--tag", "a", "--asr", "--no-voices", "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0 and "tiny.en" in proc.stderr:
        pytest.skip(f"no local Whisper model: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "speech" / "memory" / "a"
    assert RunDir(run).manifest()["perception"]
    summary = export_training([run], tmp_path / "out", progress=False)
    row = load_jsonl(tmp_path / "out" / "episodic.jsonl")[0]
    assert summary.records == 2 and "welcome" in row["prompt"][1]["content"].lower()
    assert "welcome" in row["transcript"][0]["text"].lower()
    (perception,) = (tmp_path / "runs" / "speech" / "perception").iterdir()
    (perception / "clips.jsonl").write_text("")
    with pytest.raises(ReplayError, match="lacks clips"):
        export_training([run], tmp_path / "out2", progress=False)


class FakeFacePerceiver:
    """A test double: every clip 'sees' [face_7] then [face_2] (no frames are changed)."""

    def perceive(self, clip, window):
        from taskmem_lab.perception.base import Perception

        ids = ["[face_7]", "[face_2]"]
        return Perception(identities=ids, window_ids=ids)


class FaceEchoModel(FakeModel):
    def generate(self, request):
        return Reply(
            '{"description": "<face_1> hands a cup to <face_2>"}', model=self.model_id, fake=True
        )


def test_face_ids_in_responses_and_on_policy_slots(media, tmp_path):
    stream = load_stream(media["tone_27_3"])
    run = memorize(
        stream,
        FaceEchoModel(),
        MemorizeParams(),
        str(tmp_path / "run"),
        perceiver=FakeFacePerceiver(),
        progress=False,
    )
    assert run.finished()[0].episodic == "[face_7] hands a cup to [face_2]"
    export_training([run.path], tmp_path / "out", perceiver=FakeFacePerceiver(), progress=False)
    off = load_jsonl(tmp_path / "out" / "episodic.jsonl")
    on = load_jsonl(tmp_path / "out" / "episodic_on_policy.jsonl")
    assert json.loads(off[1]["response"]) == {"description": "<face_1> hands a cup to <face_2>"}
    assert off[1]["entry"] == "[face_7] hands a cup to [face_2]"
    assert on[1]["local_ids"] == [["[face_7]", "<face_1>"], ["[face_2]", "<face_2>"]]
    records = run.finished()
    entries = [
        (records[c].start, records[c].end, records[c].episodic) for c in on[2]["preceding_clips"]
    ]
    filled = fill_preceding(on[2]["prompt"][1]["content"], entries, on[2]["local_ids"])
    assert filled == off[2]["prompt"][1]["content"] and "[face_" not in filled
