"""Notebook parameters versus dataclasses, profile planning and parameter validation."""

from pathlib import Path

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.lab.nbparams import NOTEBOOK_PARAMS, EpisodicNotebook, coerce
from taskmem_lab.lab.reproduce import ORDER, check_notebook, notebooks_dir, parameters_cell, plan


@pytest.mark.parametrize("name", ORDER)
def test_parameters_cell_matches_dataclass(name):
    check_notebook(name, notebooks_dir() / f"{name}.ipynb")


def test_parameters_cell_mismatch_is_reported(tmp_path):
    import json

    src = notebooks_dir() / "03_episodic.ipynb"
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = "".join(cell["source"]).replace(
                "interval: float = 10.0", "interval: int = 10"
            )
    bad = tmp_path / "03_episodic.ipynb"
    bad.write_text(json.dumps(nb))
    assert parameters_cell(bad)["interval"] == ("int", 10)
    with pytest.raises(ConfigError, match="different \\['interval'\\]"):
        check_notebook("03_episodic", bad)


def test_coerce_types_and_unknown_names():
    p = coerce(EpisodicNotebook, {"interval": "5", "faces": "true", "model": "fake"})
    assert p.interval == 5.0 and p.faces is True
    with pytest.raises(ConfigError, match="unknown parameter.*intervall"):
        coerce(EpisodicNotebook, {"intervall": "5"})
    with pytest.raises(ConfigError, match="cannot read"):
        coerce(EpisodicNotebook, {"faces": "maybe"})


def test_plan_orders_and_validates_overrides(tmp_path):
    steps = plan("smoke", tmp_path, overrides={"03_episodic.interval": "5", "end": "20"})
    names = [n for n, _ in steps]
    assert names == list(ORDER)
    params = dict(steps)
    assert params["03_episodic"]["interval"] == 5.0 and params["01_audio"]["end"] == 20.0
    assert params["03_episodic"]["model"] == "fake"
    with pytest.raises(ConfigError, match="belong to none"):
        plan("smoke", tmp_path, only=["06_paper"], overrides={"interval": "5"})
    with pytest.raises(ConfigError, match="unknown profile"):
        plan("fast", tmp_path)
    with pytest.raises(ConfigError, match="unknown notebook"):
        plan("smoke", tmp_path, only=["07_extra"])


def test_every_notebook_has_a_params_dataclass():
    assert set(NOTEBOOK_PARAMS) == set(ORDER)
    assert all((notebooks_dir() / f"{n}.ipynb").is_file() for n in ORDER) or pytest.fail(
        f"missing notebooks in {Path(notebooks_dir())}"
    )


def test_plan_passes_absolute_paths_under_work(tmp_path):
    steps = dict(plan("smoke", tmp_path))
    for name, params in steps.items():
        for key in ("out", "figures", "memories", "results"):
            if key in params:
                assert Path(params[key]).is_absolute(), (name, key)
                assert Path(params[key]).is_relative_to(tmp_path), (name, key)
    assert steps["05_ablations"]["asr"] == [False, True]
    assert steps["04_qa"]["answerer"] == "fake:reader"


def test_paper_profile_writes_figures_to_the_repository(tmp_path):
    steps = dict(plan("paper", tmp_path))
    assert Path(steps["06_paper"]["figures"]) == notebooks_dir().parent / "figures"
    assert Path(steps["03_episodic"]["out"]).is_relative_to(tmp_path)


def test_work_dir_is_taken_against_the_working_directory(tmp_path, monkeypatch):
    from taskmem_lab.lab.reproduce import work_dir_for

    monkeypatch.chdir(tmp_path)
    assert work_dir_for("smoke", "out") == tmp_path / "out"
    assert work_dir_for("smoke", None) == tmp_path / "runs" / "reproduce" / "smoke"
    assert work_dir_for("smoke", tmp_path / "x") == tmp_path / "x"


def test_static_outputs_drop_widget_views_but_keep_html(tmp_path):
    import json

    from taskmem_lab.lab.reproduce import WIDGET_VIEW, static_outputs

    nb = {
        "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": "MemoryBrowser(run)",
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {
                            "text/plain": "MemoryBrowser(...)",
                            "text/html": "<h3>Memory</h3>",
                            WIDGET_VIEW: {"model_id": "abc"},
                        },
                    },
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {WIDGET_VIEW: {"model_id": "only"}},
                    },
                ],
            }
        ],
    }
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    static_outputs(path)
    out = json.loads(path.read_text())
    assert "widgets" not in out["metadata"]
    first, second = out["cells"][0]["outputs"]
    assert set(first["data"]) == {"text/plain", "text/html"}
    assert WIDGET_VIEW in second["data"]  # nothing else to show: kept as it was


def test_smoke_kernels_keep_their_cache_under_work(tmp_path, monkeypatch):
    import os

    from taskmem_lab.lab.reproduce import _reproducing

    monkeypatch.delenv("TASKMEM_CACHE", raising=False)
    with _reproducing("smoke", tmp_path):
        assert os.environ["TASKMEM_CACHE"] == str(tmp_path / "cache.sqlite")
        assert os.environ["TASKMEM_REPRODUCE"] == "1"
    assert "TASKMEM_CACHE" not in os.environ and "TASKMEM_REPRODUCE" not in os.environ
    monkeypatch.setenv("TASKMEM_CACHE", "/elsewhere.sqlite")
    with _reproducing("smoke", tmp_path):
        assert os.environ["TASKMEM_CACHE"] == "/elsewhere.sqlite"
    monkeypatch.delenv("TASKMEM_CACHE")
    with _reproducing("paper", tmp_path):
        assert "TASKMEM_CACHE" not in os.environ  # real endpoints share the user's cache
