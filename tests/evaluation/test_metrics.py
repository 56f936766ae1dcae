"""Metrics on hand-computed cases: Acc = Cov x Prec, intervals around the point, breakdowns."""

import math
import random

import pytest

from taskmem_lab.evaluation.metrics import (
    ABSTAINED,
    ANSWERED,
    UNPARSEABLE,
    Outcome,
    metric_row,
    metrics_table,
    reading_differences,
    to_markdown,
    to_records,
)


def outcomes(answered_correct, answered_wrong, abstained, unparseable, bench="b", task="t", **kw):
    return (
        [Outcome(bench, task, ANSWERED, True, **kw)] * answered_correct
        + [Outcome(bench, task, ANSWERED, False, **kw)] * answered_wrong
        + [Outcome(bench, task, ABSTAINED, **kw)] * abstained
        + [Outcome(bench, task, UNPARSEABLE, **kw)] * unparseable
    )


def test_hand_computed_case():
    # 10 questions: 6 answered (4 correct, 2 wrong), 3 abstained, 1 unparseable. By default the
    # unparseable reply did not abstain: it is answered and wrong (7 answered).
    row = metric_row(outcomes(4, 2, 3, 1), "b", "all", "all")
    assert (row.n, row.answered, row.correct, row.abstained, row.unparseable) == (10, 7, 4, 3, 1)
    assert row.coverage == 0.7 and row.reading == "wrong"
    assert row.precision == pytest.approx(4 / 7)
    assert row.accuracy == 0.4
    assert math.isclose(row.accuracy, row.coverage * row.precision, rel_tol=1e-12)
    for value, (lo, hi) in [
        (row.coverage, row.coverage_ci),
        (row.precision, row.precision_ci),
        (row.accuracy, row.accuracy_ci),
    ]:
        assert 0 <= lo <= value <= hi <= 1
    assert row.score is None and row.score_ci is None  # multiple choice has no judge score


def test_the_abstain_reading_of_unparseable_replies():
    row = metric_row(outcomes(4, 2, 3, 1), "b", "all", "all", unparseable="abstain")
    assert (row.answered, row.coverage, row.accuracy) == (6, 0.6, 0.4)
    assert row.precision == pytest.approx(2 / 3) and row.reading == "abstain"
    assert math.isclose(row.accuracy, row.coverage * row.precision, rel_tol=1e-12)
    with pytest.raises(ValueError, match="unparseable must be one of"):
        metric_row(outcomes(1, 0, 0, 0), "b", "all", "all", unparseable="skip")


def test_reading_differences_lists_only_lines_with_unparseable_replies():
    data = outcomes(4, 2, 3, 1, task="x") + outcomes(2, 0, 0, 0, task="y")
    diffs = reading_differences(data, by=("task_type",))
    assert [(d["group"], d["value"]) for d in diffs] == [("all", "all"), ("task_type", "x")]
    x = diffs[1]
    assert (x["coverage (wrong)"], x["coverage (abstain)"]) == (0.7, 0.6)
    assert x["precision (wrong)"] == pytest.approx(4 / 7)
    assert x["precision (abstain)"] == pytest.approx(4 / 6)
    assert reading_differences(outcomes(2, 1, 1, 0)) == []


def test_bootstrap_resamples_videos_not_questions():
    # Two videos of 5 questions: one all right, one all wrong. Resampling videos can only give
    # 0, 0.5 or 1; resampling questions would give intermediate values.
    data = [Outcome("b", "t", ANSWERED, True, video="v1")] * 5 + [
        Outcome("b", "t", ANSWERED, False, video="v2")
    ] * 5
    row = metric_row(data, "b", "all", "all", n_boot=500)
    assert row.clusters == 2 and row.accuracy == 0.5
    assert row.accuracy_ci == (0.0, 1.0)
    flat = metric_row(
        [Outcome(o.benchmark, o.task_type, o.status, o.correct) for o in data],
        "b",
        "all",
        "all",
        n_boot=500,
    )
    assert flat.clusters == 0 and 0.0 < flat.accuracy_ci[0] < 0.5 < flat.accuracy_ci[1] < 1.0
    # Videos of different sizes: the interval is of the question-weighted accuracy.
    uneven = [Outcome("b", "t", ANSWERED, True, video="big")] * 9 + [
        Outcome("b", "t", ANSWERED, False, video="small")
    ]
    row = metric_row(uneven, "b", "all", "all", n_boot=500)
    assert row.accuracy == 0.9 and row.accuracy_ci[0] == 0.0 and row.accuracy_ci[1] == 1.0


def test_nothing_answered_has_undefined_precision_and_zero_accuracy():
    row = metric_row(outcomes(0, 0, 2, 1), "b", "all", "all", unparseable="abstain")
    assert row.coverage == 0 and row.accuracy == 0 and math.isnan(row.precision)
    assert all(math.isnan(x) for x in row.precision_ci)
    assert "–" in to_markdown([row])


def test_all_correct_has_degenerate_intervals():
    row = metric_row(outcomes(5, 0, 0, 0), "b", "all", "all")
    assert row.accuracy_ci == (1.0, 1.0) and row.coverage_ci == (1.0, 1.0)


def test_judge_score_variant_is_mean_score_over_answered():
    group = [
        Outcome("e", "t", ANSWERED, True, score=5),
        Outcome("e", "t", ANSWERED, False, score=2),
        Outcome("e", "t", ANSWERED, False, score=None, judge_unparseable=True),
        Outcome("e", "t", ABSTAINED),
    ]
    row = metric_row(group, "e", "all", "all")
    assert row.score == pytest.approx((5 / 5 + 2 / 5) / 2)  # unjudged answers have no score
    assert row.judge_unparseable == 1 and row.answered == 3 and row.correct == 1
    lo, hi = row.score_ci
    assert lo <= row.score <= hi


@pytest.mark.parametrize("seed", range(20))
def test_acc_is_cov_times_prec_and_intervals_cover_the_estimate(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 200)
    statuses = rng.choices([ANSWERED, ABSTAINED, UNPARSEABLE], weights=[6, 3, 1], k=n)
    group = [Outcome("b", "t", s, s == ANSWERED and rng.random() < 0.6) for s in statuses]
    row = metric_row(group, "b", "all", "all", n_boot=500)
    if row.answered:
        assert math.isclose(row.accuracy, row.coverage * row.precision, rel_tol=1e-12)
        assert row.precision_ci[0] <= row.precision <= row.precision_ci[1]
    assert row.accuracy_ci[0] <= row.accuracy <= row.accuracy_ci[1]
    assert row.coverage_ci[0] <= row.coverage <= row.coverage_ci[1]


def test_summarize_breaks_down_by_task_type_and_groups():
    data = (
        outcomes(2, 1, 1, 0, task="Counting", groups={"duration": "short"})
        + outcomes(1, 0, 0, 1, task="OCR", groups={"duration": "long"})
        + outcomes(3, 0, 0, 0, bench="other")
    )
    rows = metrics_table(data, by=("task_type", "duration"), n_boot=200, missing={"b": 2})
    keys = [(r.benchmark, r.group, r.value, r.n) for r in rows]
    assert keys == [
        ("b", "all", "all", 6),
        ("b", "task_type", "Counting", 4),
        ("b", "task_type", "OCR", 2),
        ("b", "duration", "long", 2),
        ("b", "duration", "short", 4),
        ("other", "all", "all", 3),
        ("other", "task_type", "t", 3),
    ]
    overall = rows[0]
    assert overall.missing == 2 and overall.accuracy == pytest.approx(3 / 6)
    counting = rows[1]
    assert (counting.coverage, counting.precision) == (pytest.approx(3 / 4), pytest.approx(2 / 3))


def test_intervals_do_not_depend_on_row_order():
    data = outcomes(7, 5, 4, 2, task="a") + outcomes(3, 3, 1, 1, task="b")
    one = metrics_table(data, n_boot=300, seed=1)
    two = metrics_table(list(reversed(data)), n_boot=300, seed=1)
    assert [r.accuracy_ci for r in one] == [r.accuracy_ci for r in two]
    three = metrics_table(data, n_boot=300, seed=2)
    assert [r.accuracy_ci for r in one] != [r.accuracy_ci for r in three]


def test_markdown_and_parquet_records():
    rows = metrics_table(outcomes(4, 2, 3, 1), n_boot=200, missing={"b": 1})
    md = to_markdown(rows)
    lines = md.splitlines()
    assert lines[0].startswith("| benchmark | group") and "Acc" in lines[0] and "Prec" in lines[0]
    assert "| 40.0 [" in lines[2] and "70.0 [" in lines[2]  # Acc and Cov in percent
    assert lines[2].rstrip().endswith("1 |")  # missing memories on the overall line
    records = to_records(rows)
    assert {"accuracy_lo", "accuracy_hi", "coverage_lo", "precision_hi", "score_lo"} <= set(
        records[0]
    )
    assert records[0]["accuracy"] == 0.4


def test_outcome_rules():
    with pytest.raises(ValueError, match="only an answered question can be correct"):
        Outcome("b", "t", ABSTAINED, True)
    with pytest.raises(ValueError, match="status must be one of"):
        Outcome("b", "t", "skipped")


def test_one_video_or_one_question_has_no_interval():
    """Resampling a single unit gives the point estimate back: n/a, not [100, 100]."""
    one_video = [Outcome("b", "t", ANSWERED, True, video="v1")] * 3
    one_question = outcomes(1, 0, 0, 0)
    for data in (one_video, one_question):
        row = metric_row(data, "b", "t", "x", n_boot=200)
        assert row.accuracy == 1.0
        assert all(math.isnan(v) for v in (*row.accuracy_ci, *row.coverage_ci, *row.precision_ci))
        assert "100.0 [n/a]" in to_markdown([row]) and "[100.0, 100.0]" not in to_markdown([row])
    two = metric_row(outcomes(2, 0, 0, 0), "b", "t", "x", n_boot=200)
    assert two.accuracy_ci == (1.0, 1.0)  # two questions, both right: a real (narrow) interval
