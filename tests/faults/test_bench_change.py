"""`bench` notices change: a complete stream made with other inputs is refused, not skipped."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

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
    gen.test_video(videos / "v0.mp4", 7, size="64x48", fps=5, audio=False)
    row = {
        "video_id": "0", "duration": "short", "domain": "d", "sub_category": "s",
        "videoID": "v0", "question_id": "q0", "task_type": "t", "question": "Which?",
        "options": ["A. x", "B. y"], "answer": "A",
    }  # fmt: skip
    source = tmp_path / "mme.json"
    source.write_text(json.dumps([row]))
    return source, videos


def _run(bench, tmp_path, model="fake", params=PARAMS, **kw):
    source, videos = bench
    return run_benchmark(
        "videomme", source, videos, model, "fake", params=params, out=tmp_path / "runs",
        tag="t", progress=False, cache=False, **kw,
    )  # fmt: skip


@pytest.mark.slow
def test_a_complete_stream_with_other_inputs_is_refused_by_what_differs(bench, tmp_path):
    first = _run(bench, tmp_path)
    assert first.outcomes["v0"].status == "complete"
    assert _run(bench, tmp_path).outcomes["v0"].status == "skipped"

    for params, differs in (
        (MemorizeParams(interval=4, context_duration=10), r"different 'params'.*interval"),
        (MemorizeParams(interval=5, context_duration=20), r"different 'params'.*context"),
    ):
        again = _run(bench, tmp_path, params=params)
        outcome = again.outcomes["v0"]
        assert outcome.status == "failed" and again.evaluation is None
        assert re.search(differs, outcome.error), outcome.error

    changed = _run(bench, tmp_path, model="fake:reader")
    assert changed.outcomes["v0"].status == "failed"
    assert "different 'model'" in changed.outcomes["v0"].error
    assert "--allow-model-change" in changed.outcomes["v0"].error

    allowed = _run(bench, tmp_path, model="fake:reader", allow_model_change=True)
    assert allowed.outcomes["v0"].status == "complete"
    manifest = json.loads((tmp_path / "runs/v0/memory/t/manifest.json").read_text())
    assert manifest["model"] == "fake:reader" and len(manifest["model_changes"]) == 1


@pytest.mark.slow
def test_a_replaced_video_is_refused(bench, tmp_path):
    assert _run(bench, tmp_path).outcomes["v0"].status == "complete"
    _, videos = bench
    gen.test_video(videos / "v0.mp4", 7, size="80x60", fps=5, audio=False)  # other pixels
    again = _run(bench, tmp_path)
    assert again.outcomes["v0"].status == "failed"
    assert "different 'source'" in again.outcomes["v0"].error
