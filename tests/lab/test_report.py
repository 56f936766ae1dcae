"""04's metrics file, the paper's table, the main-table assembly and the figures' conventions."""

import json
import math
import shutil

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.lab.report import (
    delta_table,
    main_table,
    metrics_path,
    paper_table,
    plot_ablations,
    plot_main_table,
    plot_metrics,
    read_metrics,
    write_metrics,
)

ROWS = [
    {"group": "all", "value": "all", "n": 4, "accuracy": 0.25, "coverage": 0.5, "precision": 0.5},
    {
        "group": "task_type",
        "value": "OCR",
        "n": 2,
        "accuracy": 0.0,
        "coverage": 0.0,
        "precision": float("nan"),
    },
]


def test_metrics_file_round_trip(tmp_path):
    path = write_metrics(tmp_path, "videomme", ROWS, "fake:reader", "fake", "notebook", True, "x")
    assert path == metrics_path(tmp_path, "videomme")
    (data,) = read_metrics(tmp_path)
    assert data["benchmark"] == "videomme" and data["answerer"] == "fake:reader"
    assert data["fake_model"] is True and data["overall"]["accuracy"] == 0.25
    assert data["path"] == str(path)


def test_metrics_without_an_overall_row_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no overall"):
        write_metrics(tmp_path, "egolife", ROWS[1:], "a", None, "t", False, "x")


def test_read_metrics_names_the_folder_and_the_bad_file(tmp_path):
    with pytest.raises(ConfigError, match=f"no metrics files .* in {tmp_path}"):
        read_metrics(tmp_path)
    (tmp_path / "egolife.metrics.json").write_text('{"rows": []}')
    with pytest.raises(ConfigError, match="egolife.metrics.json: not a metrics file"):
        read_metrics(tmp_path)


def test_paper_table_is_the_checked_table_in_percent(tmp_path, monkeypatch):
    from taskmem_lab.errors import TaskmemError

    monkeypatch.chdir(tmp_path)  # relative paths resolve against the repository
    table = paper_table()
    assert list(table.columns) == [
        "system",
        "benchmark",
        "accuracy",
        "coverage",
        "precision",
        "source",
    ]
    taskmem = table[(table.system == "TaskMem") & (table.benchmark == "videomme")].iloc[0]
    assert taskmem.accuracy == 67.9 and taskmem.source
    bad = tmp_path / "bad.csv"
    bad.write_text("system,benchmark,accuracy,coverage,precision,source\nX,videomme,50,80,80,s\n")
    with pytest.raises(TaskmemError, match="not coverage x precision"):
        paper_table(bad)
    with pytest.raises(ConfigError, match="results table not found: nowhere.csv"):
        paper_table("nowhere.csv")


@pytest.mark.slow
def test_main_table_in_percent_keeps_undefined_as_missing(tmp_path):
    write_metrics(tmp_path, "videomme", ROWS, "fake:reader", "fake", "nb", True, "x")
    nan_rows = [{**ROWS[0], "precision": float("nan")}]
    write_metrics(tmp_path, "egolife", nan_rows, "fake:reader", "fake", "nb", True, "x")
    wide = tmp_path / "p.csv"
    wide.write_text(
        "system,benchmark,accuracy,coverage,precision,source\n"
        "TaskMem (Qwen3-VL-30B-A3B),videomme,67.9,79.3,85.6,the paper\n"
    )
    table = main_table(paper_table(wide), read_metrics(tmp_path))
    assert table.cited.iloc[0] == "the paper"
    ours = table[table.source == "reproduced"].iloc[0]
    assert "videomme.metrics.json" in ours.cited and "egolife.metrics.json" in ours.cited
    assert ours["videomme/accuracy"] == 25.0 and ours["videomme/precision"] == 50.0
    assert math.isnan(ours["egolife/precision"])  # undefined, not 0
    deltas = delta_table(table, "TaskMem")  # unique prefix of the reported name
    assert deltas["videomme/accuracy"].iloc[0] == pytest.approx(25.0 - 67.9)
    with pytest.raises(ConfigError, match="not a reported system"):
        delta_table(table, "GPT-9")
    fig = plot_main_table(table)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "n/a" in texts and "25.0" in texts  # egotempo missing on both rows; videomme drawn
    assert "reproduced here (red)" in fig._suptitle.get_text()
    # rows from a fake model: the title and labels say it checks the pipeline, and a 0.0 is
    # drawn (a tick where its bar would start)
    zero = table.copy()
    zero.loc[zero.source == "reproduced", "videomme/accuracy"] = 0.0
    fig = plot_main_table(zero, fake=True)
    assert "not a reproduction" in fig._suptitle.get_text()
    assert "reproduced here" not in fig._suptitle.get_text()
    assert any("(fake model)" in t.get_text() for t in fig.axes[0].get_yticklabels())
    ticks = [line for line in fig.axes[0].lines if list(line.get_xdata()) == [0]]
    assert ticks and "0.0" in [t.get_text() for t in fig.axes[0].texts]


def test_ablation_figure_says_why_a_panel_is_flat():
    import pandas as pd

    rows = [
        {"model": "fake", "interval": 10.0, "context": c, "faces": False, "asr": a,
         "tasks": False, "memory_tokens": 60, "cost_tokens": 1000 + 100 * c + a,
         "accuracy": 25.0 * a, "coverage": 50.0, "precision": 50.0}
        for c in (10.0, 20.0) for a in (False, True)
    ]  # fmt: skip
    fig = plot_ablations(pd.DataFrame(rows))
    top, bottom = fig.axes[0], fig.axes[1]
    assert any("fixed length" in t.get_text() for t in top.texts)  # every x is 60 tokens
    assert not bottom.texts  # the cost axis spreads the settings: nothing to explain


def test_plot_metrics_marks_undefined_precision_and_real_zeros():
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                "benchmark": "videomme",
                "group": "all",
                "value": "all",
                "n": 4,
                "accuracy": 25.0,
                "accuracy_lo": 0.0,
                "accuracy_hi": 50.0,
                "coverage": 50.0,
                "precision": 50.0,
            },
            {
                "benchmark": "videomme",
                "group": "task_type",
                "value": "OCR",
                "n": 2,
                "accuracy": 0.0,
                "accuracy_lo": 0.0,
                "accuracy_hi": 0.0,
                "coverage": 0.0,
                "precision": float("nan"),
            },
        ]
    )
    fig = plot_metrics(table)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("n/a") == 1 and texts.count("0") == 2
    assert fig.axes[0].get_ylabel() == "percent"


def test_saved_table_is_the_table_shown_and_leaves_missing_cells_empty(tmp_path):
    import json

    import pandas as pd

    from taskmem_lab.lab.report import Provenance, save_table

    table = pd.DataFrame({"system": ["a", "b"], "videomme/precision": [85.64, float("nan")]})
    shown = save_table(
        table, "t", Provenance("06_paper", {"api_key": "sk-" + "x" * 20}, [], True), tmp_path
    )
    assert shown is table
    md = (tmp_path / "t.md").read_text()
    assert "| a        |                 85.6 |" in md and "nan" not in md
    assert "fake model" in md and "--" in (tmp_path / "t.tex").read_text()
    assert json.loads((tmp_path / "t.json").read_text())["parameters"]["api_key"] == "<redacted>"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
def test_evaluate_benchmarks_writes_the_metrics_06_reads(tmp_path, monkeypatch):
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.lab.report import evaluate_benchmarks

    monkeypatch.setenv("TASKMEM_CACHE", str(tmp_path / "cache.sqlite"))
    results = evaluate_benchmarks(
        ["videomme"], [], tmp_path, "nb", "fake:reader", "fake", QAParams(), True, True, False
    )
    (data,) = read_metrics(tmp_path / "results")
    assert data["benchmark"] == "videomme" and data["results_dir"] == str(results["videomme"].out)
    assert data["overall"]["coverage"] > 0  # the reader answers from the stand-in memories
    # table.md says what summary.json says: a fake model made these numbers
    out = results["videomme"].out
    assert json.loads((out / "summary.json").read_text())["fake_models"] is True
    assert (out / "table.md").read_text().startswith("*Made with a fake model")
    assert results["videomme"].markdown == (out / "table.md").read_text()
    with pytest.raises(ConfigError, match="source of egolife not found"):
        evaluate_benchmarks(
            ["egolife"], ["nowhere.json"], tmp_path, "nb", "fake", "fake", QAParams()
        )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
def test_evaluate_benchmarks_can_start_from_the_videos(tmp_path, monkeypatch):
    """04_qa's `videos`: memorize the benchmark's streams with run_benchmark, then evaluate."""
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.lab.report import evaluate_benchmarks
    from taskmem_lab.store import RunDir
    from taskmem_lab.testing.media import test_video

    monkeypatch.setenv("TASKMEM_CACHE", str(tmp_path / "cache.sqlite"))
    videos = tmp_path / "videos"
    videos.mkdir()
    ids = ["tmSmpl0001a", "tmSmpl0002b", "tmSmpl0003c"]  # the sample's Video-MME videos
    for vid in ids:
        test_video(videos / f"{vid}.mp4", 12, size="64x48", fps=5, audio=False)
    common = dict(videos=[str(videos)], model="fake", progress=False)
    part = tmp_path / "part"
    evaluate_benchmarks(
        ["videomme"], [], part, "nb", "fake:reader", "fake", QAParams(), limit_streams=1, **common
    )
    assert len(list(part.glob("*/memory/nb"))) == 1
    assert not (part / "results").exists()  # a partial run never feeds 06's table

    results = evaluate_benchmarks(
        ["videomme"], [], tmp_path / "all", "nb", "fake:reader", "fake", QAParams(), **common
    )
    for vid in ids:
        assert RunDir(tmp_path / "all" / vid / "memory" / "nb").finished()
    (data,) = read_metrics(tmp_path / "all" / "results")
    assert data["benchmark"] == "videomme" and data["results_dir"] == str(results["videomme"].out)
    assert data["fake_model"] is True
    with pytest.raises(ConfigError, match="2 video folders given for 1 benchmarks"):
        evaluate_benchmarks(
            ["videomme"], [], tmp_path, "nb", "fake", "fake", QAParams(), videos=["a", "b"]
        )
