import json

import pytest

from taskmem_lab.backends.base import Reply, Request, VideoPart, all_text
from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.errors import ModelError
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize, schedule_for
from taskmem_lab.memory import Memory
from taskmem_lab.params import MemorizeParams
from taskmem_lab.schema import Task
from taskmem_lab.store import RunDir


class RecordingModel(FakeModel):
    """The fake model, keeping every request it saw."""

    def __init__(self, fail_at: set[int] | None = None, malformed: int = 0) -> None:
        super().__init__("recording")
        self.requests: list[Request] = []
        self.fail_at = fail_at or set()
        self.malformed = malformed

    def generate(self, request: Request) -> Reply:
        self.requests.append(request)
        if len(self.requests) in self.fail_at:
            raise ModelError("server unreachable (scripted)")
        if self.malformed:
            self.malformed -= 1
            return Reply(text="not json at all", model=self.model_id, fake=True)
        return super().generate(request)


def episodic(requests):
    return [r for r in requests if r.purpose == "episodic"]


def test_no_leakage_frames_entries_and_tasks(media, tmp_path):
    stream = load_stream(media["tone_27_3"])
    tasks = [
        Task(f"q{i}", f"question {i}?", t)
        for i, t in enumerate([0.0, 5, 9.99, 10.0, 15, 19, 21, 22, 23, 24])
    ]
    model = RecordingModel()
    params = MemorizeParams(interval=5, context_duration=12, frame_fps=2)
    run = memorize(stream, model, params, str(tmp_path / "run"), tasks=tasks, progress=False)
    clips = schedule_for(stream, params)
    reqs = episodic(model.requests)
    assert len(reqs) == len(clips) == 6
    records = run.finished()
    for clip, req in zip(clips, reqs, strict=True):
        video = [p for p in req.messages[1].parts if isinstance(p, VideoPart)][0]
        times = [f.time for f in video.frames]
        assert times and max(times) < clip.end and min(times) >= clip.window_start
        text = all_text(req.messages[1].parts)
        # preceding entries: only clips that ended by this clip's start and lie in its window
        for other in records.values():
            inside = other.clip < clip.index and other.start >= clip.window_start
            assert (other.episodic in text) == inside
        shown = [t for t in tasks if t.question in text]
        assert all(t.time < clip.end for t in shown)
        expected = [t for t in tasks if t.time < clip.end][-5:]
        assert shown == expected
        assert records[clip.index].tasks == [t.task_id for t in expected]
    assert "question 3?" not in all_text(
        reqs[1].messages[1].parts
    )  # arrives exactly at clip 1's end


def test_without_tasks_there_is_no_task_block(media, tmp_path):
    model = RecordingModel()
    memorize(
        load_stream(media["silent"]), model, MemorizeParams(), str(tmp_path / "r"), progress=False
    )
    assert all("Questions the agent" not in all_text(r.messages[1].parts) for r in model.requests)


def test_rerun_sends_byte_identical_prompts(media, tmp_path):
    stream = load_stream(media["tone_27_3"])
    tasks = [Task("a", "where is the cup?", 3.0)]
    runs = []
    for name in ("a", "b"):
        model = RecordingModel()
        memorize(
            stream,
            model,
            MemorizeParams(supplement_prompt="Note colours."),
            str(tmp_path / name),
            tasks=tasks,
            progress=False,
        )
        runs.append([r.fingerprint("m") for r in model.requests])
    assert runs[0] == runs[1] and len(set(runs[0])) == len(runs[0])


def test_reask_recovers_an_unparseable_reply(media, tmp_path):
    model = RecordingModel(malformed=1)
    run = memorize(
        load_stream(media["silent"]), model, MemorizeParams(), str(tmp_path / "r"), progress=False
    )
    first = run.finished()[0]
    assert first.attempts == 2 and first.warnings and "re-asked" in first.warnings[0]
    reask = model.requests[1]
    assert reask.purpose == "episodic" and reask.messages[-2].role == "assistant"
    assert reask.messages[-2].parts[0].text == "not json at all"


def test_failed_clip_is_recorded_and_retried_on_resume(media, tmp_path):
    stream = load_stream(media["tone_27_3"])
    out = str(tmp_path / "r")
    with pytest.raises(ModelError, match="clip 1 .* failed.*run again to resume"):
        memorize(stream, RecordingModel(fail_at={2}), MemorizeParams(), out, progress=False)
    run = RunDir(tmp_path / "r")
    recs = run.records()
    assert [(r.clip, r.status) for r in recs] == [(0, "ok"), (1, "failed")]
    assert recs[1].episodic == "" and "unreachable" in recs[1].error
    assert run.manifest()["status"] == "failed"
    assert len(Memory.load(run)) == 1  # a failed clip is never an (empty) memory entry
    again = RecordingModel()
    memorize(stream, again, MemorizeParams(), out, progress=False)
    assert len(again.requests) == 2  # clips 1 and 2 only
    assert [r.clip for r in run.finished().values()] == [0, 1, 2]
    assert run.manifest()["status"] == "complete"


def test_resume_refuses_different_params(media, tmp_path):
    from taskmem_lab.errors import StoreError

    stream = load_stream(media["silent"])
    memorize(stream, FakeModel(), MemorizeParams(), str(tmp_path / "r"), progress=False)
    with pytest.raises(StoreError, match="different 'params'"):
        memorize(
            stream, FakeModel(), MemorizeParams(interval=5), str(tmp_path / "r"), progress=False
        )


def test_semantic_memory_and_text(media, tmp_path):
    run = memorize(
        load_stream(media["silent"]),
        FakeModel(),
        MemorizeParams(semantic=True),
        str(tmp_path / "r"),
        progress=False,
    )
    mem = Memory.load(run)
    assert all(e.knowledge for e in mem.entries)
    both = mem.to_text("both")
    assert (
        both.startswith("[00:00:00-00:00:10]\n[fake model]")
        and "\n- [fake model] statement" in both
    )
    assert "- " not in mem.to_text("episodic")
    manifest = run.manifest()
    assert manifest["source"][0]["sha256"] and manifest["params"]["semantic"] is True
    line = json.loads(run.clips_path.read_text().splitlines()[0])
    assert line["fake"] is True and line["schema"] == 1


def test_memorize_through_the_http_backend(media, tmp_path, api_config, server):
    from taskmem_lab.backends import make_model

    run = memorize(
        load_stream(media["tone_27_3"]),
        make_model("openai:local-vlm"),
        MemorizeParams(),
        str(tmp_path / "r"),
        progress=False,
    )
    texts = [r.episodic for r in run.finished().values()]
    assert len(texts) == 3 and all(t.startswith("[fake server] entry for") for t in texts)
    assert len(server.requests) == 3


class FakePerceiver:
    """A test double: every clip 'sees' [face_7] then [face_2] and hears one line."""

    def __init__(self):
        self.calls = []

    def perceive(self, clip, window):
        from taskmem_lab.media.video import Frame
        from taskmem_lab.perception.base import Perception

        self.calls.append((clip.index, max(f.time for f in window)))
        seg = {
            "start": clip.start,
            "end": clip.start + 1.0,
            "text": f"hello {clip.index}",
            "speaker": "[face_2]",
        }
        marked = [Frame(f.time, f.image.copy()) for f in window]
        return Perception(
            transcript=[seg],
            identities=["[face_7]", "[face_2]"],
            window_ids=["[face_7]", "[face_2]"],
            window_transcript=[seg],
            frames=marked,
        )


class FaceEchoModel(RecordingModel):
    def generate(self, request):
        self.requests.append(request)
        return Reply(
            text='{"description": "<face_1> talks to <face_2>; <face_9> waves"}',
            model=self.model_id,
            fake=True,
        )


def test_perception_ids_subtitles_and_frames_reach_the_prompt(media, tmp_path):
    perceiver, model = FakePerceiver(), FaceEchoModel()
    run = memorize(
        load_stream(media["tone_27_3"]),
        model,
        MemorizeParams(),
        str(tmp_path / "r"),
        perceiver=perceiver,
        progress=False,
    )
    recs = run.finished()
    assert recs[0].episodic == "[face_7] talks to [face_2]; [face_unknown] waves"
    assert "unknown face id <face_9>" in recs[0].warnings[0]
    assert (
        recs[0].identities == ["[face_7]", "[face_2]"]
        and recs[0].transcript[0]["text"] == "hello 0"
    )
    text = all_text(model.requests[1].messages[1].parts)
    assert "<face_2>: hello 1" in text  # speakers shown with local ids
    assert "<face_1> talks to <face_2>" in text  # preceding entry mapped back to local ids
    assert "[face_" not in text
    assert all(
        t < clip_end for (_, t), clip_end in zip(perceiver.calls, [10, 20, 27.3], strict=True)
    )


class WatchingModel(RecordingModel):
    """Notes, at each episodic call, the newest clip already prepared; answers after 50 ms."""

    def __init__(self, prepared):
        super().__init__()
        self.prepared = prepared
        self.seen: list[tuple[int, int]] = []

    def generate(self, request):
        import time

        if request.purpose == "episodic":
            self.seen.append((len(episodic(self.requests)), max(self.prepared)))
            time.sleep(0.05)
        return super().generate(request)


@pytest.mark.parametrize("perceived", [False, True])
def test_clips_are_prepared_ahead_within_a_bound(media, tmp_path, monkeypatch, perceived):
    import taskmem_lab.memorize as memorize_module
    from taskmem_lab.memorize import PREPARE_AHEAD

    prepared: list[int] = []
    threads: set[str] = set()
    real = memorize_module.prepare_clip

    def watched(frames, clip, *args):
        import threading

        prepared.append(clip.index)
        threads.add(threading.current_thread().name.rsplit("-", 1)[0])
        return real(frames, clip, *args)

    monkeypatch.setattr(memorize_module, "prepare_clip", watched)
    model = WatchingModel(prepared)
    params = MemorizeParams(interval=2.0, context_duration=4.0)
    memorize(
        load_stream(media["tone_27_3"]), model, params, str(tmp_path / "r"),
        perceiver=FakePerceiver() if perceived else None, progress=False,
    )  # fmt: skip
    assert prepared == list(range(14))  # each clip once, in order
    # clip k's call waits with at most PREPARE_AHEAD clips prepared beyond it (1 when perceived:
    # a perceived clip holds annotated copies of its window)
    depth = 1 if perceived else PREPARE_AHEAD
    assert all(k <= newest <= k + depth for k, newest in model.seen)
    assert any(newest == k + depth for k, newest in model.seen)  # and does prepare ahead
    # the process's shared prepare threads, or (a perceiver may wait on a model) its own one
    assert threads == ({"taskmem-perceive-tone_27_3"} if perceived else {"taskmem-prepare"})
