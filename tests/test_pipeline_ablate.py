"""`pipeline.ablate`: one memory per grid setting, each scored on the same questions."""

import shutil

import pytest

from taskmem_lab.pipeline import ablate

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")


def test_ablate_runs_each_setting_and_skips_contexts_shorter_than_the_interval(tmp_path):
    from taskmem_lab.lab.samples import talk_questions
    from taskmem_lab.testing.media import test_video

    video = test_video(tmp_path / "talk.mp4", 12, size="96x64", fps=5, audio=False)
    rows = ablate(
        video,
        talk_questions("talk"),
        ["fake"],
        [6.0],
        [3.0, 6.0, 12.0],
        tasks=[False],
        answerer="fake:reader",
        out=tmp_path / "runs",
        n_boot=20,
        cache=False,
    )
    assert [(r["interval"], r["context"]) for r in rows] == [(6.0, 6.0), (6.0, 12.0)]
    for r in rows:
        assert r["memory_tokens"] > 0 and r["cost_tokens"] > r["memory_tokens"]
        assert 0.0 <= r["coverage"] <= 1.0 and 0.0 <= r["accuracy"] <= r["coverage"]
        assert (tmp_path / "runs" / "talk" / "memory" / r["tag"] / "manifest.json").is_file()
    assert rows[0]["cost_tokens"] < rows[1]["cost_tokens"]  # a longer context costs more
