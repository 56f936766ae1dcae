"""ResultsBrowser: filters, one question's context/replies/verdicts, disagreements, frames at the
evidence times, the live widget and the static export."""

import json
import shutil
from pathlib import Path

import pytest

from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.bench.hub import load_benchmark
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.agreement import judge_agreement
from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.lab.results_browser import ResultsBrowser, outcome

SAMPLE = Path(__file__).resolve().parents[2] / "benchmarks" / "egolife" / "sample"


@pytest.fixture()
def egolife(tmp_path, egolife_memories):
    mem = egolife_memories
    out = tmp_path / "eval"
    evaluate(
        load_benchmark("egolife", SAMPLE), MemoryLocator(mem), FakeModel(), FakeModel(),
        QAParams(), out, EvalParams(attribute="evidence", n_boot=10), progress=False,
    )  # fmt: skip
    return out


def test_filters_and_one_question(egolife):
    b = ResultsBrowser(egolife)
    assert b.select("correct") == ["A1_JAKE_3", "A1_JAKE_4"]
    assert b.select("wrong") == ["A1_JAKE_1", "A1_JAKE_2"]
    assert b.select("abstained", error_class="memorization_miss") == ["A1_JAKE_5"]
    assert b.select(task_type="EventRecall") == ["A1_JAKE_1"]
    assert b.select(error_class="answering_miss") == ["A1_JAKE_1"]
    page = b.question_html("A1_JAKE_1")
    # the answerer saw the cola (after the evidence) too; only the strawberries entry is marked
    marked = [line for line in page.split("<li") if "taskmem-evidence" in line]
    assert len(marked) == 1 and "strawberries" in marked[0]
    assert "cola on the sofa" in page and "answering miss" in page
    assert "&quot;answer&quot;: &quot;D&quot;" in page and "→ answered D" in page
    assert "the memory holds it" in page and "taskmem-noframes" in page  # a JSONL memory


def test_static_export_and_live_widget(egolife, tmp_path):
    b = ResultsBrowser(egolife, max_details=2)
    html = b.static_html()
    assert all(f">{q}<" in html for q in b.by_id)  # every question has its line
    assert html.count("class='taskmem-result'") == 2 and "3 more questions" in html
    saved = b.save(tmp_path / "export" / "results.html").read_text()
    assert saved.startswith("<!doctype html>") and "A1_JAKE_5" in saved

    view = b.widget()
    (pick_outcome, pick_type, pick_class), pick_question = (
        view.children[0].children,
        view.children[1],
    )
    details = view.children[3]
    assert list(pick_question.options) == list(b.by_id)
    pick_outcome.value = "abstained"
    assert list(pick_question.options) == ["A1_JAKE_5"]
    assert "data-id='A1_JAKE_5'" in details.value
    pick_class.value = "answering_miss"
    assert list(pick_question.options) == [] and "no question matches" in details.value
    pick_outcome.value = "(any)"
    assert "data-id='A1_JAKE_1'" in details.value
    assert pick_type.options[0] == "(any)"


@pytest.mark.slow  # scikit-learn takes seconds to import
def test_disagreements_of_a_second_judge_are_shown(tmp_path):
    mem = tmp_path / "mem"
    mem.mkdir()
    lines = ["Jake puts strawberries in the fridge.", "Lucia leaves the scissors on the sofa."]
    (mem / "v.jsonl").write_text(
        "".join(
            json.dumps({"clip": i, "start": 10.0 * i, "end": 10.0 * i + 10, "text": x}) + "\n"
            for i, x in enumerate(lines)
        )
    )
    records = [
        QARecord("a", "mine", "v", "What does Jake put in the fridge?", (), "strawberries",
                 "open", "recall", None),
        QARecord("b", "mine", "v", "Where does Lucia leave the scissors?", (), "in the drawer",
                 "open", "recall", None),
    ]  # fmt: skip
    out = tmp_path / "eval"
    evaluate(records, MemoryLocator(mem), FakeModel(), FakeModel(), QAParams(), out,
             EvalParams(n_boot=10), progress=False)  # fmt: skip
    judge_agreement(out, FakeModel("flip1"), progress=False)
    b = ResultsBrowser(out)
    assert [outcome(b.by_id[q]) for q in ("a", "b")] == ["correct", "wrong"]
    for q in ("a", "b"):
        page = b.question_html(q)
        assert "taskmem-judge" in page and "Second judge fake:flip1 disagrees" in page


def test_not_a_results_folder(tmp_path):
    with pytest.raises(ConfigError, match="not an evaluation results folder"):
        ResultsBrowser(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
def test_frames_at_the_evidence_times_from_a_run_with_its_video(tmp_path):
    from taskmem_lab.lab.samples import stand_in_memories

    records = [
        QARecord("q1", "mine", "clip", "What is on screen?", ("a cup", "a clock"), "A",
                 "choice", "recall", 18.0, ((4.0, 6.0), (12.0, 12.0))),
    ]  # fmt: skip
    stand_in_memories(records, tmp_path, "t", seconds=20.0)
    out = tmp_path / "eval"
    evaluate(records, MemoryLocator(tmp_path, "t"), FakeModel(), FakeModel(), QAParams(), out,
             EvalParams(n_boot=10, attribute="evidence"), progress=False)  # fmt: skip
    page = ResultsBrowser(out).question_html("q1")
    assert page.count("class='taskmem-evidence-frame'") == 2
    assert "00:00:05" in page and "00:00:12" in page
