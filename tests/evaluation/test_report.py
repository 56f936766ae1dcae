"""The paper's reported table (loaded and checked) and the two readings of unparseable replies."""

import csv
import math

import pytest

from taskmem_lab.errors import BenchmarkError
from taskmem_lab.evaluation.report import PAPER_TABLE, paper_table, paper_wide, readings

SHARED = "TaskMem paper (arXiv:2605.31075), main table"


def test_paper_table_has_the_eight_systems_with_all_three_metrics():
    rows = paper_table()
    assert len(rows) == 24
    systems = [line["system"] for line in paper_wide(rows)]
    assert systems == [
        "EgoGPT",
        "HippoMM",
        "M3-Agent",
        "Gemini-1.5-Pro",
        "Gemini-2.5-Pro",
        "GPT-5.2",
        "Qwen3-VL-30B-A3B",
        "TaskMem",
    ]
    taskmem = paper_wide(rows)[-1]
    assert taskmem["videomme/accuracy"] == 67.9 and taskmem["egolife/coverage"] == 56.4
    assert taskmem["egotempo/precision"] == 63.2 and taskmem["source"] == SHARED
    for r in rows:
        assert math.isclose(r.accuracy, r.coverage * r.precision / 100, abs_tol=0.15)


def write(path, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system", "benchmark", "accuracy", "coverage", "precision", "source"])
        w.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["X", "videomme", "50.0", "60.0", "70.0", "s"], "is not coverage x precision"),
        (["X", "videomme", "abc", "60.0", "70.0", "s"], "must be numbers"),
        (["X", "videomme", "120", "120", "100", "s"], r"percentages in \[0, 100\]"),
        (["X", "videomme", "42.0", "60.0", "70.0", ""], "needs a system and a source"),
    ],
)
def test_a_bad_paper_row_names_the_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "p.csv", [["Y", "egolife", "42.0", "60.0", "70.0", "s"], row])
    with pytest.raises(BenchmarkError, match=message) as info:
        paper_table(path)
    assert str(info.value).startswith(f"{path} line 3: ")


def test_the_shipped_table_is_the_file_the_notebook_reads():
    assert PAPER_TABLE.name == "paper_results.csv" and PAPER_TABLE.is_file()
    header = PAPER_TABLE.read_text().splitlines()[0]
    assert header == "system,benchmark,accuracy,coverage,precision,source"


def result_row(qid, video, status, correct=False, task="t", duration="short"):
    return {
        "id": qid,
        "benchmark": "videomme",
        "video_id": video,
        "task_type": task,
        "status": status,
        "correct": correct,
        "groups": {"duration": duration},
    }


def test_readings_lists_the_lines_that_differ():
    rows = [
        result_row("1", "v1", "answered", True),
        result_row("2", "v1", "unparseable"),
        result_row("3", "v2", "abstained", duration="long"),
        result_row("4", "v2", "answered", True, duration="long"),
    ]
    diffs = readings(rows, groups=("duration",))
    assert [(d["group"], d["value"]) for d in diffs] == [
        ("all", "all"),
        ("task_type", "t"),
        ("duration", "short"),
    ]
    overall = diffs[0]
    assert (overall["coverage (wrong)"], overall["precision (wrong)"]) == (0.75, 2 / 3)
    assert (overall["coverage (abstain)"], overall["precision (abstain)"]) == (0.5, 1.0)
    assert overall["accuracy"] == 0.5


def test_egolife_intervals_resample_questions_videomme_videos():
    from taskmem_lab.evaluation.evaluate import outcome_of

    row = result_row("1", "v1", "answered", True)
    assert outcome_of(row).video == "v1"
    assert outcome_of({**row, "benchmark": "egolife", "video_id": "A1_JAKE"}).video == ""
    assert outcome_of({**row, "benchmark": "my_questions"}).video == "v1"
