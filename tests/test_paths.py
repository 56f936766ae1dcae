"""Repository and input paths resolve the same from any working directory."""

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.paths import input_path, output_path, repo_path, repo_root


def test_repo_paths_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = repo_root()
    assert root is not None and (root / "notebooks").is_dir()
    assert repo_path("benchmarks/paper_results.csv").is_file()
    assert (
        input_path("benchmarks/paper_results.csv", "table") == root / "benchmarks/paper_results.csv"
    )
    assert output_path("runs") == root / "runs"
    assert output_path(tmp_path / "x") == tmp_path / "x"


def test_input_in_the_working_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "paper_results.csv").write_text("x")
    assert (
        input_path("benchmarks/paper_results.csv", "t") == tmp_path / "benchmarks/paper_results.csv"
    )


def test_missing_input_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"the video not found: clip\.mp4 \(looked for .*clip\.mp4 or .*clip\.mp4\)",
    ):
        input_path("clip.mp4", "the video")
