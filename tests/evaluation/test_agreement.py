"""`judge-agreement`: a second judge re-grades a finished free-form evaluation."""

import json

import pytest

from taskmem_lab.backends.fake import FakeModel, judge_flipped
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.agreement import agreement_stats, judge_agreement, read_agreements
from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.memory import Entry, Memory, dumps_jsonl

LINES = [
    "Jake puts strawberries in the fridge.",
    "Lucia leaves the scissors on the sofa.",
    "Katrina carries a red box upstairs.",
    "Shure plays the guitar in the yard.",
    "Alice waters the basil on the balcony.",
    "Tasha bakes a lemon cake for dinner.",
]
# (question, reference): the fake answerer quotes the memory line sharing most words with the
# question; the fake judge says yes when every content word of the reference is in the answer.
QUESTIONS = [
    ("What does Jake put in the fridge?", "strawberries"),
    ("Where does Lucia leave the scissors?", "on the sofa"),
    ("What colour is the box Katrina carries upstairs?", "red"),
    ("What does Shure play in the yard?", "the violin"),
    ("What does Alice water on the balcony?", "the basil"),
    ("What does Tasha bake for dinner?", "an apple pie"),
    ("Where does Jake put the strawberries?", "in the fridge"),
    ("Who plays the guitar in the yard?", "Shure"),
    ("What does Katrina carry upstairs?", "a blue bag"),
    ("Where does Alice water the basil?", "in the kitchen"),
]


@pytest.fixture()
def results(tmp_path):
    (tmp_path / "mem").mkdir()
    memory = Memory([Entry(i, 10.0 * i, 10.0 * i + 10, t) for i, t in enumerate(LINES)])
    (tmp_path / "mem" / "v1.jsonl").write_text(dumps_jsonl(memory))
    records = [
        QARecord(f"q{i}", "mine", "v1", q, (), ref, "open", "recall", None)
        for i, (q, ref) in enumerate(QUESTIONS)
    ]
    out = tmp_path / "eval"
    result = evaluate(
        records, MemoryLocator(tmp_path / "mem"), FakeModel(), FakeModel(), QAParams(), out,
        EvalParams(n_boot=10), progress=False,
    )  # fmt: skip
    judged = [r for r in result.rows if r["judge"]]
    labels = [r["correct"] for r in judged]
    assert len(judged) == len(QUESTIONS) and 0 < sum(labels) < len(labels)  # both labels occur
    return out, judged


def expected_kappa(first: list[bool], second: list[bool]) -> float:
    """Cohen's kappa from its definition (p_o - p_e) / (1 - p_e)."""
    n = len(first)
    p_o = sum(a == b for a, b in zip(first, second, strict=True)) / n
    p1, p2 = sum(first) / n, sum(second) / n
    p_e = p1 * p2 + (1 - p1) * (1 - p2)
    return (p_o - p_e) / (1 - p_e)


def test_a_judge_that_turns_every_verdict_over_disagrees_everywhere(results):
    out, judged = results
    agreement = judge_agreement(out, FakeModel("flip1"), progress=False).summary
    first = [r["correct"] for r in judged]
    assert agreement["compared"] == len(judged) and agreement["agreement"] == 0.0
    assert agreement["kappa"] == pytest.approx(expected_kappa(first, [not x for x in first]))
    yes = sum(first)
    assert agreement["confusion"] == [[0, yes], [len(first) - yes, 0]]
    assert len(agreement["disagreements"]) == len(judged)


def test_a_judge_that_turns_a_known_subset_over(results):
    out, judged = results
    flipped = {
        r["id"] for r in judged if judge_flipped(r["question"], r["reference"], r["prediction"], 2)
    }
    assert 0 < len(flipped) < len(judged)  # the subset is neither empty nor everything
    second = FakeModel("flip2")
    result = judge_agreement(out, second, progress=False)
    s = result.summary
    assert {d["id"] for d in s["disagreements"]} == flipped
    assert s["agreement"] == pytest.approx(1 - len(flipped) / len(judged))
    first = [r["correct"] for r in judged]
    other = [c != (r["id"] in flipped) for r, c in zip(judged, first, strict=True)]
    assert s["kappa"] == pytest.approx(expected_kappa(first, other))
    assert s["usage"][0]["calls"] == len(judged) and s["this_run"]["model_calls"] == len(judged)
    on_disk = json.loads((result.out / "agreement.json").read_text())
    assert on_disk["kappa"] == s["kappa"] and read_agreements(out)[0]["kappa"] == s["kappa"]

    again = FakeModel("flip2")
    rerun = judge_agreement(out, again, progress=False).summary
    assert again.calls == 0 and rerun["this_run"]["model_calls"] == 0
    assert rerun["kappa"] == s["kappa"]


def test_the_same_judge_agrees_fully(results):
    out, _ = results
    s = judge_agreement(out, FakeModel(), progress=False).summary
    assert s["agreement"] == 1.0 and s["kappa"] == pytest.approx(1.0) and not s["disagreements"]


def test_kappa_is_undefined_when_both_judges_give_one_label():
    s = agreement_stats([("yes", "yes"), ("yes", "yes"), (None, "no")])
    assert s["agreement"] == 1.0 and s["kappa"] is None and "undefined" in s["note"]
    assert s["unparseable"] == {"first": 1, "second": 0}


def test_results_without_judged_answers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not an evaluation results folder"):
        judge_agreement(tmp_path, FakeModel("flip1"), progress=False)


def test_the_command_prints_kappa_and_cost(results, tmp_path, capsys):
    from taskmem_lab.cli import main

    out, judged = results
    args = ["judge-agreement", str(out), "--judge", "fake:flip1", "--no-cache", "-q"]
    assert main([*args, "--price", "fake:flip1=2.5,10"]) == 0
    printed = capsys.readouterr().out
    assert "raw agreement 0.0%" in printed and "Cohen's kappa -" in printed
    assert f"{len(judged)} disagreement(s)" in printed and "$" in printed
