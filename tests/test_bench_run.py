"""`run_benchmark` in process with the `fake` model: memorize, evaluate, resume, plan only."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from taskmem_lab.bench_run import CallCounter, Tally, finished_run
from taskmem_lab.errors import ConfigError
from taskmem_lab.params import MemorizeParams
from taskmem_lab.pipeline import run_benchmark
from taskmem_lab.testing import media as gen

PARAMS = MemorizeParams(interval=5, context_duration=10)


@pytest.fixture()
def bench(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    videos = tmp_path / "videos"
    videos.mkdir()
    rows = []
    for i, seconds in enumerate((7, 12)):
        gen.test_video(videos / f"v{i}.mp4", seconds, size="64x48", fps=5, audio=False)
        rows.append(
            {
                "video_id": str(i),
                "duration": "short",
                "domain": "d",
                "sub_category": "s",
                "videoID": f"v{i}",
                "question_id": f"q{i}",
                "task_type": "t",
                "question": "Which?",
                "options": ["A. x", "B. y"],
                "answer": "A",
            }  # fmt: skip
        )
    source = tmp_path / "mme.json"
    source.write_text(json.dumps(rows))
    return source, videos


def test_run_benchmark_memorizes_evaluates_and_resumes(bench, tmp_path):
    source, videos = bench
    out = tmp_path / "runs"
    kw = dict(params=PARAMS, out=out, progress=False, cache=False)
    result = run_benchmark("videomme", source, videos, "fake", "fake", **kw)
    assert {o.status for o in result.outcomes.values()} == {"complete"}
    assert result.evaluation is not None and result.evaluation.summary["evaluated"] == 2
    if importlib.util.find_spec("matplotlib"):  # the figure needs the notebooks extra
        assert (result.evaluation.out / "figure.png").stat().st_size > 0
    assert finished_run(out / "v1" / "memory" / "fake") == (True, 3, 3)
    status = json.loads((result.folder / "bench.json").read_text())
    assert status["model_calls"] == 2 + 3 and status["streams"]["v0"]["status"] == "complete"
    again = run_benchmark("videomme", source, videos, "fake", "fake", **kw)
    assert {o.status for o in again.outcomes.values()} == {"skipped"}
    assert json.loads((again.folder / "bench.json").read_text())["model_calls"] == 0
    assert again.evaluation.summary["this_run"]["model_calls"] == 0


def test_a_finished_stream_whose_video_changed_is_not_skipped_silently(bench, tmp_path):
    source, videos = bench
    kw = dict(params=PARAMS, out=tmp_path / "runs", progress=False, cache=False)
    run_benchmark("videomme", source, videos, "fake", **kw)
    touched = videos / "v0.mp4"
    os.utime(touched)  # the same bytes, a new mtime: hashed again, and still the same video
    again = run_benchmark("videomme", source, videos, "fake", **kw)
    assert {o.status for o in again.outcomes.values()} == {"skipped"}
    gen.test_video(videos / "v1.mp4", 12, size="64x48", fps=7, audio=False)  # another video
    third = run_benchmark("videomme", source, videos, "fake", **kw)
    assert third.outcomes["v0"].status == "skipped"
    v1 = third.outcomes["v1"]
    assert v1.status == "failed" and "different 'source'" in v1.error and "(v1.mp4)" in v1.error


def test_plan_only_calls_nothing_and_prices(bench, tmp_path):
    source, videos = bench
    result = run_benchmark(
        "videomme", source, videos, "fake", "fake", params=PARAMS, out=tmp_path / "runs",
        plan_only=True, prices={"fake": (1.0, 2.0)}, progress=False,
    )  # fmt: skip
    assert result.plan.calls == 5 and not result.outcomes
    assert not (tmp_path / "runs").exists()
    memorizer = result.estimate["rows"][0]
    assert memorizer["calls"] == 5 and memorizer["cost_usd"] > 0
    assert result.estimate["rows"][1]["calls"] == 2  # one answer per question


def test_bad_arguments_are_one_line_errors(bench, tmp_path):
    source, videos = bench
    with pytest.raises(ConfigError, match="--engine"):
        run_benchmark("videomme", source, videos, "fake", engine="spark", out=tmp_path)
    with pytest.raises(ConfigError, match="--streams"):
        run_benchmark("videomme", source, videos, "fake", streams=0, out=tmp_path)
    with pytest.raises(ConfigError, match="videos folder not found"):
        run_benchmark("videomme", source, tmp_path / "nowhere", "fake", out=tmp_path)


def test_tally_reads_only_finished_lines(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ok = {"status": "ok", "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
    (run / "clips.jsonl").write_text(
        json.dumps(ok) + "\n" + json.dumps({"status": "failed"}) + '\n{"sta'
    )
    tally = Tally()
    tally.read("s", run)
    assert (tally.clips, tally.prompt_tokens, tally.completion_tokens) == (1, 10, 2)
    with open(run / "clips.jsonl", "a") as fh:
        fh.write('tus": "ok"}\n')
    tally.read("s", run)
    assert tally.clips == 2  # the torn line is read once it is whole


def test_call_counter_counts_calls_in_flight():
    from taskmem_lab.backends import make_model
    from taskmem_lab.backends.base import Message, Request

    counter = CallCounter(make_model("fake"))
    counter.generate(Request(messages=(Message.text("user", "hi"),)))
    assert (counter.calls, counter.in_flight) == (1, 0) and counter.busy_s >= 0


def test_stream_runner_takes_the_drivers_settings_and_makes_its_client_first(
    api_config, monkeypatch
):
    """A Ray runner gets TASKMEM_* as an argument (no runtime_env, so no fresh worker) and has
    its HTTP client ready before the first stream asks."""
    import os

    from taskmem_lab.bench_run import StreamRunner

    monkeypatch.delenv("TASKMEM_API_CONFIG")
    with pytest.raises(ConfigError):
        StreamRunner("openai:local-vlm", False)
    runner = StreamRunner("openai:local-vlm", False, {"TASKMEM_API_CONFIG": str(api_config)})
    assert os.environ["TASKMEM_API_CONFIG"] == str(api_config)
    model = runner.counter.model
    assert len(model._clients) == len(model.endpoints) == 1


def test_the_bench_figure_leaves_the_callers_plotting_alone(bench, tmp_path):
    """A notebook cell that calls run_benchmark keeps its backend (inline plots) and its figures."""
    matplotlib = pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    source, videos = bench
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        figures = plt.get_fignums()
        result = run_benchmark(
            "videomme", source, videos, "fake", "fake",
            params=PARAMS, out=tmp_path / "runs", progress=False, cache=False,
        )  # fmt: skip
        assert (result.evaluation.out / "figure.png").read_bytes()[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures
    finally:
        matplotlib.use(before)


# bench notices change: a complete stream made with other inputs is refused, not skipped.


def _run_tagged(bench, tmp_path, model="fake", params=PARAMS, **kw):
    source, videos = bench
    return run_benchmark(
        "videomme", source, videos, model, "fake", params=params, only=["v0"],
        out=tmp_path / "runs", tag="t", progress=False, cache=False, **kw,
    )  # fmt: skip


@pytest.mark.slow
def test_a_complete_stream_with_other_inputs_is_refused_by_what_differs(bench, tmp_path):
    first = _run_tagged(bench, tmp_path)
    assert first.outcomes["v0"].status == "complete"
    assert _run_tagged(bench, tmp_path).outcomes["v0"].status == "skipped"

    for params, differs in (
        (MemorizeParams(interval=4, context_duration=10), r"different 'params'.*interval"),
        (MemorizeParams(interval=5, context_duration=20), r"different 'params'.*context"),
    ):
        again = _run_tagged(bench, tmp_path, params=params)
        outcome = again.outcomes["v0"]
        assert outcome.status == "failed" and again.evaluation is None
        assert re.search(differs, outcome.error), outcome.error

    changed = _run_tagged(bench, tmp_path, model="fake:reader")
    assert changed.outcomes["v0"].status == "failed"
    assert "different 'model'" in changed.outcomes["v0"].error
    assert "--allow-model-change" in changed.outcomes["v0"].error

    allowed = _run_tagged(bench, tmp_path, model="fake:reader", allow_model_change=True)
    assert allowed.outcomes["v0"].status == "complete"
    manifest = json.loads((tmp_path / "runs/v0/memory/t/manifest.json").read_text())
    assert manifest["model"] == "fake:reader" and len(manifest["model_changes"]) == 1


@pytest.mark.slow
def test_a_replaced_video_is_refused(bench, tmp_path):
    assert _run_tagged(bench, tmp_path).outcomes["v0"].status == "complete"
    _, videos = bench
    gen.test_video(videos / "v0.mp4", 7, size="80x60", fps=5, audio=False)  # other pixels
    again = _run_tagged(bench, tmp_path)
    assert again.outcomes["v0"].status == "failed"
    assert "different 'source'" in again.outcomes["v0"].error
