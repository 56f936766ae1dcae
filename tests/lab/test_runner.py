"""Notebook parameters versus dataclasses, profile planning and parameter validation."""

from pathlib import Path

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.lab.nbparams import (
    NOTEBOOK_PARAMS,
    AblationsNotebook,
    AudioNotebook,
    EpisodicNotebook,
    QaNotebook,
    coerce,
    from_cell,
)
from taskmem_lab.lab.reproduce import ORDER, check_notebook, notebooks_dir, parameters_cell, plan
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import PerceptionChoices


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


def test_list_parameters_are_lists_never_comma_strings(tmp_path):
    p = coerce(AblationsNotebook, {"intervals": "[10, 20.5]", "faces": "[false, true]"})
    assert p.intervals == [10.0, 20.5] and p.faces == [False, True]
    one = coerce(AblationsNotebook, {"models": "openai:qwen?tp=2,x"})
    assert one.models == ["openai:qwen?tp=2,x"]  # a single value, not split at its comma
    assert coerce(QaNotebook, {"benchmarks": ["videomme"]}).benchmarks == ["videomme"]
    with pytest.raises(ConfigError, match="cannot read"):
        coerce(AblationsNotebook, {"intervals": "[ten]"})
    with pytest.raises(ConfigError, match="cannot read"):
        coerce(AblationsNotebook, {"faces": "[maybe]"})
    steps = dict(plan("demo", tmp_path))
    assert steps["05_ablations"]["faces"] == [False, True]


def test_notebook_params_are_built_by_field_name():
    cell = {"video": "", "asr_backend": "vlm", "asr_model": "openai:x", "end": 5.0}
    cell |= {"out": "o", "figures": "f", "unrelated": 1}
    nb = from_cell(AudioNotebook, cell)
    assert (nb.asr_backend, nb.asr_model, nb.end) == ("vlm", "openai:x", 5.0)
    with pytest.raises(ConfigError, match=r"does not define \['figures'\]"):
        from_cell(AudioNotebook, {k: v for k, v in cell.items() if k != "figures"})


def test_notebook_defaults_are_the_stage_defaults():
    assert AudioNotebook().asr_model == PerceptionChoices().asr_model == "tiny.en"
    assert EpisodicNotebook().interval == MemorizeParams().interval
    assert QaNotebook().context == QAParams().context
