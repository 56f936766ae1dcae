"""The exit statuses that docs/cli.md, docs/memorize.md and docs/runs.md list, one case each:
2 for an error the user can fix before anything runs, 1 for a failed model call or clip (run
again to resume), 130 after Ctrl-C. Run in-process through `cli.main`."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmem_lab import cli

DEAD = "endpoints:\n  dead:\n    base_url: http://127.0.0.1:9/v1\n    api_key: k\n"


def memorize(video: Path, out: Path, *extra: str) -> int:
    return cli.main(["memorize", str(video), "--out", str(out), "--no-cache", *extra])


def test_a_missing_video_exits_2(tmp_path, capsys):
    assert memorize(tmp_path / "nope.mp4", tmp_path, "--model", "fake") == 2
    assert capsys.readouterr().err.startswith("taskmem: error:")


def test_an_unknown_model_spec_exits_2(media, tmp_path, capsys):
    assert memorize(media["silent"], tmp_path, "--model", "nosuch:model") == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_missing_endpoint_config_exits_2(media, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TASKMEM_API_CONFIG", raising=False)
    assert memorize(media["silent"], tmp_path, "--model", "openai:gpt-4o") == 2
    assert "TASKMEM_API_CONFIG" in capsys.readouterr().err


def test_a_missing_key_exits_2(media, tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "endpoints:\n  k:\n    base_url: http://127.0.0.1:9/v1\n    api_key_env: NO_KEY\n"
    )
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(cfg))
    monkeypatch.delenv("NO_KEY", raising=False)
    assert memorize(media["silent"], tmp_path, "--model", "openai:k") == 2
    assert "NO_KEY" in capsys.readouterr().err


def test_a_server_that_stays_unreachable_exits_1(media, tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(DEAD + "    max_retries: 0\n    timeout: 1\n")
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(cfg))
    assert memorize(media["silent"], tmp_path, "--model", "openai:dead", "-q") == 1
    err = capsys.readouterr().err
    assert "taskmem: error:" in err and "Traceback" not in err


def test_a_failed_clip_exits_1(media, tmp_path, server, api_config, capsys):
    server.fail_if = lambda body: True  # every call gets a 500
    assert memorize(media["silent"], tmp_path, "--model", "openai:local-vlm", "-q") == 1
    assert "run again" in capsys.readouterr().err


def test_ctrl_c_exits_130(media, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("taskmem_lab.pipeline.build_memory", interrupted)
    assert memorize(media["silent"], tmp_path, "--model", "fake") == 130
    assert "run again to resume" in capsys.readouterr().err


@pytest.mark.parametrize("page", ["cli.md", "memorize.md", "runs.md"])
def test_the_docs_list_these_statuses(page):
    """The pages say what the cases above check (and nothing says an unreachable server is 2)."""
    text = " ".join((Path(__file__).parents[1] / "docs" / page).read_text().split())
    assert "status 2" in text and (
        "status 1" in text or "status 2 (1 for a failed model call" in text
    )
    assert "unreachable) print one line" not in text  # the old claim: exit 2
    assert "unreachable after retries) print" not in text
