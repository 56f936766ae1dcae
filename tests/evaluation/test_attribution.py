"""Error attribution: was a wrong answer's fact ever written to memory? (`--attribute`)."""

from pathlib import Path

import pytest

from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.bench.egolife import stream_time as t
from taskmem_lab.bench.hub import load_benchmark
from taskmem_lab.errors import ConfigError, ParseError
from taskmem_lab.evaluation.attribution import (
    ANSWERING_MISS,
    MEMORIZATION_MISS,
    UNATTRIBUTED,
    error_class,
    parse_presence,
)
from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
from taskmem_lab.evaluation.qa import QAParams

SAMPLE = Path(__file__).resolve().parents[2] / "benchmarks" / "egolife" / "sample"
STRAWBERRIES = t("DAY1", "11094000")  # the entry at question 1's evidence (`egolife_memories`)
ENTRIES = 6


class Counting(FakeModel):
    """The fake model, counting calls per purpose."""

    def __init__(self, name: str = "fake") -> None:
        super().__init__(name)
        self.purposes: list[str] = []

    def generate(self, request):
        self.purposes.append(request.purpose)
        return super().generate(request)


@pytest.fixture()
def memories(egolife_memories):
    return egolife_memories


def run(memories, out, judge, mode="evidence", answerer=None):
    records = load_benchmark("egolife", SAMPLE)
    return evaluate(
        records,
        MemoryLocator(memories),
        answerer or FakeModel(),
        judge,
        QAParams(),
        out,
        EvalParams(attribute=mode, n_boot=20),
        progress=False,
    )


def test_evidence_attribution_sums_to_the_errors_and_a_rerun_makes_no_calls(memories, tmp_path):
    judge = Counting()
    result = run(memories, tmp_path / "out", judge)
    errors, outcomes = result.summary["errors"], result.summary["outcomes"]
    assert errors == {MEMORIZATION_MISS: 2, ANSWERING_MISS: 1, UNATTRIBUTED: 0}
    assert sum(errors.values()) == outcomes["wrong"] + outcomes["abstained"] == 3
    classes = {r["id"]: error_class(r) for r in result.rows}
    assert classes == {
        "A1_JAKE_1": ANSWERING_MISS,
        "A1_JAKE_2": MEMORIZATION_MISS,
        "A1_JAKE_3": None,
        "A1_JAKE_4": None,
        "A1_JAKE_5": MEMORIZATION_MISS,  # nothing written at its window: decided without a call
    }
    assert judge.purposes == ["attribute", "attribute"]  # wrong answers only, one call each
    first = next(r for r in result.rows if r["id"] == "A1_JAKE_1")["attribution"]
    assert first["spans"] == [[STRAWBERRIES, STRAWBERRIES + 10]]
    usage = {u["role"]: u for u in result.summary["usage"]}
    assert usage["attributor"]["calls"] == 2
    table = (tmp_path / "out" / "table.md").read_text()
    assert "memorization miss" in table and "task_type: EventRecall" in table

    again = Counting()
    answerer = Counting()
    rerun = run(memories, tmp_path / "out", again, answerer=answerer)
    assert again.purposes == [] and answerer.purposes == []
    assert rerun.summary["this_run"]["model_calls"] == 0
    assert rerun.summary["errors"] == errors


def test_attribution_added_later_does_not_answer_again(memories, tmp_path):
    run(memories, tmp_path / "out", None, mode="none")
    judge, answerer = Counting(), Counting()
    result = run(memories, tmp_path / "out", judge, answerer=answerer)
    assert answerer.purposes == [] and judge.purposes == ["attribute"] * 2
    assert result.summary["this_run"]["model_calls"] == 2
    # another mode asks again, over the whole memory before each question
    wide = Counting()
    result = run(memories, tmp_path / "out", wide, mode="memory")
    assert wide.purposes == ["attribute"] * 3  # the question without window entries too
    assert sum(result.summary["errors"].values()) == 3
    five = next(r for r in result.rows if r["id"] == "A1_JAKE_5")["attribution"]
    assert five["entries"] == ENTRIES and five["key"]["mode"] == "memory"


def test_unreadable_verdicts_are_unattributed(memories, tmp_path):
    class Mumbling(Counting):
        def generate(self, request):
            reply = super().generate(request)
            if request.purpose == "attribute":
                reply.text = "hmm, hard to say"
            return reply

    result = run(memories, tmp_path / "out", Mumbling())
    assert result.summary["errors"] == {MEMORIZATION_MISS: 1, ANSWERING_MISS: 0, UNATTRIBUTED: 2}


def test_attribution_needs_a_judge_and_windows(memories, tmp_path):
    with pytest.raises(ConfigError, match="--judge"):
        run(memories, tmp_path / "a", None)
    records = [r for r in load_benchmark("egolife", SAMPLE)]
    from dataclasses import replace

    bare = [replace(r, evidence=()) for r in records]
    with pytest.raises(ConfigError, match="--attribute memory"):
        evaluate(
            bare, MemoryLocator(memories), FakeModel(), FakeModel(), QAParams(), tmp_path / "b",
            EvalParams(attribute="evidence"), progress=False,
        )  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"in_memory": "yes", "reason": "clip 2 names it"}', (True, "clip 2 names it")),
        (
            "{'in_memory': 'no', 'reason': 'nothing about scissors'}",
            (False, "nothing about scissors"),
        ),
        ('```json\n{"in_memory": true}\n```', (True, "")),
        ("in_memory: no", (False, "in_memory: no")),
    ],
)
def test_parse_presence(text, expected):
    assert parse_presence(text) == expected


@pytest.mark.parametrize("text", ["", "maybe", '{"in_memory": "perhaps"}', '{"reason": "x"}'])
def test_parse_presence_refuses(text):
    with pytest.raises(ParseError):
        parse_presence(text)


def test_the_command_line_prints_the_split_and_a_rerun_makes_no_calls(memories, tmp_path, capsys):
    from taskmem_lab.cli import main

    args = ["eval", "egolife", "--source", str(SAMPLE), "--memories", str(memories)]
    args += ["--answerer", "fake", "--judge", "fake", "--attribute", "evidence", "-q"]
    args += ["--out", str(tmp_path / "out"), "--price", "fake:fake=1,2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "memorization_miss 2, answering_miss 1, unattributed 0" in printed
    assert "attributor fake:fake: 2 calls" in printed and "$" in printed
    assert "## Why answers were wrong (--attribute evidence)" in printed
    assert main(args) == 0
    assert "this run: 0 model calls" in capsys.readouterr().out
