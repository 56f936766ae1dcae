"""The fake model answers by `Request.purpose`: reworded prompts and re-asks get the same answers."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from taskmem_lab import prompts
from taskmem_lab.asking import ask
from taskmem_lab.backends.base import Message, Reply, Request
from taskmem_lab.backends.fake import PURPOSES, FakeModel
from taskmem_lab.backends.openai_compat import to_openai_messages
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import ParseError
from taskmem_lab.evaluation.attribution import attribution_request, parse_presence
from taskmem_lab.evaluation.judge import judge_request, parse_verdict
from taskmem_lab.evaluation.qa import QAParams, build_context, parse_reply, qa_request
from taskmem_lab.face_ids import IdMap
from taskmem_lab.media.audio import SAMPLE_RATE
from taskmem_lab.media.video import Frame
from taskmem_lab.memorize import episodic_request, semantic_request
from taskmem_lab.memory import Entry, Memory
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.asr import AsrParams, VlmAsr, parse_asr_reply
from taskmem_lab.perception.records import Segment
from taskmem_lab.perception.voices import parse_speakers_reply, speakers_request
from taskmem_lab.replies import parse_description, parse_knowledge
from taskmem_lab.schema import ClipSpec, Task
from taskmem_lab.testing.fake_openai_server import MARK, reply_for
from taskmem_lab.training.pairs import pair_request
from taskmem_lab.training.reward_rules import (
    RewardParams,
    parse_pair_verdict,
    parse_ranking,
    parse_text_verdict,
    parse_video_verdict,
)
from taskmem_lab.training.rewards import (
    ClipContext,
    richness_request,
    text_judge_request,
    video_judge_request,
)

CLIP = ClipSpec(1, 10.0, 20.0, 0.0)
FRAMES = tuple(Frame(10.0 + i, np.full((8, 8, 3), 30 * i, np.uint8)) for i in range(3))
MEMORY = Memory(
    [
        Entry(0, 0.0, 10.0, "Jake puts strawberries in the fridge."),
        Entry(1, 10.0, 20.0, "Lucia trims flowers next to the vase."),
    ]
)


def _record(kind: str) -> QARecord:
    return QARecord(
        id="q",
        benchmark="egolife",
        video_id="A1",
        question="What did Jake put in the fridge?",
        options=("Milk", "Strawberries", "Eggs", "Cola") if kind == "choice" else (),
        answer="B" if kind == "choice" else "strawberries in the fridge",
        answer_kind=kind,
        task_type="EventRecall",
        query_time=45.0,
    )


def _speech() -> bytes:
    from taskmem_lab.media.audio import wav_bytes

    t = np.arange(int(3 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * ((t > 0.5) & (t < 1.5))
    return wav_bytes(tone)


def _strict(record: QARecord):
    """QA replies as the re-ask loop sees them: an unreadable reply is a `ParseError`."""

    def parse(text: str):
        parsed = parse_reply(text, record)
        if parsed.status == "unparseable":
            raise ParseError("no answer in the reply")
        return parsed

    return parse


def build_requests() -> dict[str, tuple[Request, object]]:
    """One request per purpose, built by the code that builds it for real, with its parser."""
    params = MemorizeParams()
    ctx = ClipContext("s", CLIP, "Jake walks in.", "(no speech)", FRAMES, 1.0, 85)
    reward = RewardParams()
    entries = ("a red cup is moved", "a red cup is moved to the left of the blue plate")
    qa = QAParams(context="full")
    audio = np.frombuffer(_speech()[44:], dtype="<i2") / 32768.0
    segments = [Segment(10.0, 11.0, "hello"), Segment(11.0, 12.0, "hi"), Segment(12.0, 13.0, "bye")]
    visible = ["<face_1>", "<face_2>"]
    tasks = [Task("t1", "Where is the cup?", 5.0)]
    choice, open_ = _record("choice"), _record("open")
    return {
        "episodic": (
            episodic_request(CLIP, FRAMES, (), tasks, IdMap(), params),
            parse_description,
        ),
        "semantic": (semantic_request(CLIP, FRAMES, "Jake waves.", params), parse_knowledge),
        "asr": (VlmAsr(AsrParams(), FakeModel()).request(audio, 10.0), parse_asr_reply),
        "speakers": (
            speakers_request(segments, FRAMES, visible, 1.0),
            lambda t: parse_speakers_reply(t, 3, visible),
        ),
        "qa_choice": (
            qa_request(choice, build_context(choice, MEMORY, qa), qa),
            _strict(choice),
        ),
        "qa_open": (
            qa_request(open_, build_context(open_, MEMORY, qa), qa),
            _strict(open_),
        ),
        "judge": (
            judge_request("What?", "strawberries in the fridge", "Strawberries, in the fridge"),
            parse_verdict,
        ),
        "attribute": (
            attribution_request(choice, MEMORY.to_text(), "the notes at the evidence"),
            parse_presence,
        ),
        "reward_video": (video_judge_request(ctx, entries[0], reward), parse_video_verdict),
        "reward_text": (text_judge_request(ctx, "Overall a red cup.", reward), parse_text_verdict),
        "reward_richness": (
            richness_request(ctx, entries, reward),
            lambda t: parse_ranking(t, 2),
        ),
        "pairs": (pair_request(ctx, tasks, *entries, 256), parse_pair_verdict),
    }


def answers() -> dict[str, tuple[str, str]]:
    """Per purpose: the in-process fake model's answer and the test server's, for the requests
    the current prompt files build."""
    out = {}
    for purpose, (request, _) in build_requests().items():
        body = {"messages": to_openai_messages(request, "frames", "low")}
        out[purpose] = (FakeModel().generate(request).text, reply_for(body, request.purpose))
    return out


def test_every_purpose_has_a_request_and_a_readable_meaningful_answer() -> None:
    requests = build_requests()
    assert set(requests) == set(PURPOSES)
    got = {}
    for purpose, (request, parse) in requests.items():
        assert request.purpose == purpose
        for text in answers()[purpose]:
            got[purpose] = parse(text)  # every answer reads with the real parser
    # and the answers follow the rules, not a constant
    assert got["qa_choice"].value == "B"  # the option the memory mentions
    assert "strawberries" in got["qa_open"].value.lower()
    assert got["judge"][0] is True
    assert got["attribute"][0] is True  # the memory names the strawberries
    assert got["pairs"] == "B"  # the entry with more distinct words
    assert got["reward_richness"] == [[2], [1]]
    assert got["reward_text"].flags["conclusion_statement"] is True
    assert got["speakers"].labels == ("<face_1>", "<face_2>", "<face_1>")
    assert len(got["asr"]) == 1
    assert "00:00:10-00:00:20" in got["episodic"]


def test_rewording_every_prompt_file_gives_the_same_fake_answers(monkeypatch) -> None:
    names = sorted(
        p.name[: -len(".txt")]
        for p in resources.files(prompts).iterdir()
        if p.name.endswith(".txt")
    )
    original = answers()
    real = prompts.load_prompt

    def reworded(name: str) -> str:
        assert name in names
        return "Please read all of the following with great care.\n\n" + real(name)

    monkeypatch.setattr(prompts, "load_prompt", reworded)
    assert build_requests()["judge"][0].messages[0].parts[0].text.startswith("Please read")
    assert answers() == original


@pytest.mark.parametrize("purpose", PURPOSES)
def test_a_re_ask_keeps_its_purpose_and_gets_the_same_answer(purpose: str) -> None:
    request, parse = build_requests()[purpose]

    class Garbled:
        """The fake model, except that its first reply cannot be read."""

        model_id = "fake:garbled"

        def __init__(self) -> None:
            self.requests: list[Request] = []
            self.inner = FakeModel()

        def generate(self, r: Request) -> Reply:
            self.requests.append(r)
            if len(self.requests) == 1:
                return Reply(text="", model=self.model_id)
            return self.inner.generate(r)

    model = Garbled()
    asked = ask(model, request, parse, "{...}", 1)  # type: ignore[arg-type]
    reask = model.requests[1]
    assert reask.purpose == purpose and reask.messages[-2] == Message.text("assistant", "")
    assert asked.replies[-1].text == FakeModel().generate(request).text
    body = {"messages": to_openai_messages(reask, "frames", "low")}
    assert reply_for(body, purpose) == reply_for(
        {"messages": to_openai_messages(request, "frames", "low")}, purpose
    )


def test_marks_and_fallback() -> None:
    request, _ = build_requests()["episodic"]
    text = FakeModel().generate(request).text
    assert json.loads(text)["description"].startswith("[fake model] entry for")
    body = {"messages": to_openai_messages(request, "frames", "low")}
    assert MARK in reply_for(body, "episodic")
    # a request without a purpose gets a memory entry (the most common kind)
    assert "description" in json.loads(reply_for(body, ""))


def test_a_flip_judge_turns_verdicts_over_and_nothing_else() -> None:
    from taskmem_lab.backends import make_model
    from taskmem_lab.errors import ConfigError

    request, parse = build_requests()["judge"]
    assert parse(make_model("fake").generate(request).text)[0] is True
    assert parse(make_model("fake:flip1").generate(request).text)[0] is False
    for purpose in ("qa_open", "attribute"):
        other, _ = build_requests()[purpose]
        assert make_model("fake:flip1").generate(other).text == FakeModel().generate(other).text
    with pytest.raises(ConfigError, match="N >= 1"):
        make_model("fake:flip0")
