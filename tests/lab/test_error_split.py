"""04's error split per memorizer (table and stacked bars) and 06's kappa beside a number."""

import json
import math
from pathlib import Path

import pytest

from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.bench.egolife import stream_time as t
from taskmem_lab.bench.hub import load_benchmark
from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.lab.report import error_split_frame, kappa_table, plot_error_split

SAMPLE = Path(__file__).resolve().parents[2] / "benchmarks" / "egolife" / "sample"
# A "steered" memorizer also wrote the scissors and the shopping list: its memorization misses go.
STEERED = [
    (t("DAY1", "17452000"), "Lucia leaves the scissors next to the flower vase."),
    (t("DAY2", "20020000"), "The shopping list still shows paper cups."),
]


def evaluated(mem, out, attribute="evidence"):
    return evaluate(
        load_benchmark("egolife", SAMPLE), MemoryLocator(mem), FakeModel(), FakeModel(),
        QAParams(), out, EvalParams(attribute=attribute, n_boot=10), progress=False,
    )  # fmt: skip


@pytest.fixture()
def runs(egolife_memories, tmp_path):
    steered = tmp_path / "steered"
    steered.mkdir()
    lines = (egolife_memories / "A1_JAKE.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    rows += [{"clip": 0, "start": s, "end": s + 10, "text": x} for s, x in STEERED]
    rows.sort(key=lambda r: r["start"])
    (steered / "A1_JAKE.jsonl").write_text(
        "".join(json.dumps({**r, "clip": i}) + "\n" for i, r in enumerate(rows))
    )
    evaluated(steered, tmp_path / "steered_eval")
    return {
        "base": {"egolife": evaluated(egolife_memories, tmp_path / "base")},
        "steered": {"egolife": tmp_path / "steered_eval"},  # a results folder works too
    }


def test_error_split_per_memorizer_and_its_bars(runs):
    frame = error_split_frame(runs)
    overall = frame[frame.value == "all"].set_index("memorizer")
    assert overall.loc["base", "memorization_miss_pct"] == pytest.approx(40.0)  # 2 of 5
    assert overall.loc["base", "answering_miss_pct"] == pytest.approx(20.0)
    assert overall.loc["steered", "memorization_miss_pct"] == 0.0
    assert overall.loc["steered", "errors"] == 1
    fig = plot_error_split(frame)
    assert type(fig).__name__ == "Figure" and len(fig.axes) == 1
    heights = [p.get_height() for p in fig.axes[0].patches]
    # 6 lines x 2 memorizers x 3 classes; the stacks sum to each memorizer's error share
    assert len(heights) == 36 and sum(heights) == pytest.approx(sum(frame.errors / frame.n) * 100)
    labels = [x.get_text() for x in fig.axes[0].get_xticklabels()]
    assert labels[0] == "all (n=5)" and "EventRecall (n=1)" in labels


def test_no_split_without_attribution(egolife_memories, tmp_path):
    result = evaluated(egolife_memories, tmp_path / "plain", attribute="none")
    frame = error_split_frame({"base": {"egolife": result}})
    assert frame.empty
    with pytest.raises(ConfigError, match="--attribute"):
        plot_error_split(frame)


def test_kappa_beside_a_reproduced_number(tmp_path):
    results = tmp_path / "eval"
    (results / "agreement" / "openai_gpt-4o").mkdir(parents=True)
    summary = {"first_judge": ["fake"], "second_judge": "openai:gpt-4o", "compared": 4,
               "agreement": 0.75, "kappa": 0.5, "disagreements": [{"id": "q1"}]}  # fmt: skip
    (results / "agreement" / "openai_gpt-4o" / "agreement.json").write_text(json.dumps(summary))
    metrics = [
        {"benchmark": "egotempo", "answerer": "fake", "tag": "t", "results_dir": str(results),
         "overall": {"accuracy": 0.4}},
        {"benchmark": "egolife", "answerer": "fake", "tag": "t", "results_dir": str(tmp_path),
         "overall": {"accuracy": 0.2}},
    ]  # fmt: skip
    table = kappa_table(metrics)
    assert len(table) == 1
    line = table.iloc[0]
    assert line.benchmark == "egotempo" and line.accuracy == pytest.approx(40.0)
    assert line.kappa == 0.5 and line.agreement == 75.0 and line.disagreements == 1
    assert kappa_table(metrics[1:]).empty and not math.isnan(line.kappa)


def test_04_refuses_an_unknown_attribution_mode():
    from taskmem_lab.lab.nbparams import QaNotebook, coerce

    assert coerce(QaNotebook, {"attribute": "memory"}).attribute == "memory"
    with pytest.raises(ConfigError, match="attribute must be one of"):
        coerce(QaNotebook, {"attribute": "always"})
