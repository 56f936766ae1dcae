"""`taskmem publish`: a dry run `datasets` loads back, a card whose YAML parses, the HfApi seam."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from taskmem_lab import cli
from taskmem_lab.bench.hub import load_benchmark, publish, read_card
from taskmem_lab.errors import BenchmarkError

datasets = pytest.importorskip("datasets")
pytest.importorskip("pyarrow")

SAMPLES = Path(__file__).resolve().parents[2] / "benchmarks"
SOURCES = {
    "videomme": SAMPLES / "videomme" / "sample",
    "egolife": SAMPLES / "egolife" / "sample",
    "egotempo": SAMPLES / "egotempo" / "sample" / "egotempo_openQA.json",
}


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    """Keep `datasets` caches inside the test and never reach the Hub."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_dry_run_writes_a_dataset_that_datasets_loads_back(tmp_path, name):
    out = tmp_path / "pub"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskmem_lab.cli",
            "publish",
            name,
            "--source",
            SOURCES[name],
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dry run, nothing uploaded" in proc.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md",
        f"{name}/test-00000-of-00001.parquet",
    ]
    records = load_benchmark(name, SOURCES[name])
    loaded = datasets.load_dataset(str(out), name, split="test", cache_dir=str(tmp_path / "c"))
    assert loaded.num_rows == len(records)
    assert loaded.to_list() == [r.to_row() for r in records]
    assert load_benchmark(name, out) == records  # the published folder is a source too
    # The card's YAML header parses and declares the config that was written.
    text = (out / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["configs"] == [
        {"config_name": name, "data_files": [{"split": "test", "path": f"{name}/test-*"}]}
    ]
    assert header["license"] and "**No video" in text  # what is not redistributed
    assert "@inproceedings" in text  # the original benchmark's citation


def test_cards_in_the_repository_are_valid():
    for name in SOURCES:
        text, header = read_card(SAMPLES / name / "README.md", name)
        assert "## Fields" in text and "streaming conversion" in text.lower()
        assert header["pretty_name"]


def test_a_card_that_does_not_match_the_files_is_refused(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: mit\nconfigs:\n- config_name: other\n---\n# x\n")
    with pytest.raises(BenchmarkError, match="must declare configs"):
        publish("egolife", SOURCES["egolife"], tmp_path / "out", card=card)
    card.write_text("# no header\n")
    with pytest.raises(BenchmarkError, match="starts with a YAML header"):
        publish("egolife", SOURCES["egolife"], tmp_path / "out", card=card)


class FakeHfApi:
    """Test double at the `huggingface_hub.HfApi` seam: records the calls, uploads nothing."""

    instances: list["FakeHfApi"] = []

    def __init__(self, token=None):
        self.token = token
        self.calls = []
        FakeHfApi.instances.append(self)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        self.calls.append(("upload_folder", files, kwargs))

        class Info:
            commit_url = f"https://huggingface.co/datasets/{kwargs['repo_id']}/commit/abc"

        return Info()


def test_push_uploads_the_folder_with_the_token_from_the_environment(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    FakeHfApi.instances.clear()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    out = tmp_path / "pub"
    code = cli.main(
        [
            "publish",
            "egotempo",
            "--source",
            str(SOURCES["egotempo"]),
            "--out",
            str(out),
            "--push",
            "me/egotempo-stream",
            "--private",
        ]
    )
    assert code == 0
    (api,) = FakeHfApi.instances
    assert api.token == "hf_test_token_not_real"
    (create, upload) = api.calls
    assert create == (
        "create_repo",
        "me/egotempo-stream",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert upload[1] == ["README.md", "egotempo/test-00000-of-00001.parquet"]
    assert upload[2]["repo_id"] == "me/egotempo-stream" and upload[2]["repo_type"] == "dataset"
    assert Path(upload[2]["folder_path"]) == out
    printed = capsys.readouterr().out
    assert "pushed to https://huggingface.co/datasets/me/egotempo-stream" in printed
    assert "hf_test_token_not_real" not in printed


def test_push_without_a_token_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    code = cli.main(
        [
            "publish",
            "egolife",
            "--source",
            str(SOURCES["egolife"]),
            "--out",
            str(tmp_path / "p"),
            "--push",
            "me/egolife-stream",
        ]
    )
    assert code == 2
    assert "HF_TOKEN" in capsys.readouterr().err
    assert (tmp_path / "p" / "README.md").exists()  # the dry-run part still happened
