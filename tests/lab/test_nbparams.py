"""Notebook parameters built in the kernel: the same checks as `-p`, paths made absolute."""

from pathlib import Path

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.lab.nbparams import (
    AblationsNotebook,
    AudioNotebook,
    EpisodicNotebook,
    PaperNotebook,
    QaNotebook,
    coerce,
    from_namespace,
    shared_perception,
)
from taskmem_lab.paths import repo_root


def namespace(cls, **values):
    """What the kernel holds after the parameters cell (and papermill's injected cell)."""
    from dataclasses import fields

    from taskmem_lab.lab.nbparams import default_of

    ns = {f.name: default_of(f) for f in fields(cls)}
    ns["__annotations__"] = {f.name: str for f in fields(cls)}
    ns.update(values)
    return ns


def test_strings_from_papermill_are_read_like_dash_p():
    nb = from_namespace(EpisodicNotebook, namespace(EpisodicNotebook, faces="false", end="12"))
    assert nb.faces is False and nb.end == 12.0
    assert nb.faces == coerce(EpisodicNotebook, {"faces": "false"}).faces


def test_unknown_name_in_the_parameters_cell_is_an_error():
    ns = namespace(EpisodicNotebook)
    ns["__annotations__"]["intervall"] = float
    with pytest.raises(ConfigError, match="unknown parameter.*intervall"):
        from_namespace(EpisodicNotebook, ns)


def test_parameter_not_run_is_an_error():
    ns = namespace(EpisodicNotebook)
    del ns["model"]
    with pytest.raises(ConfigError, match="model not defined"):
        from_namespace(EpisodicNotebook, ns)


def test_missing_input_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "results"
    with pytest.raises(ConfigError, match=f"PaperNotebook.results not found: {missing}"):
        from_namespace(PaperNotebook, namespace(PaperNotebook, results=str(missing)))


def test_relative_paths_resolve_against_the_repository_not_the_kernel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # e.g. a kernel started in notebooks/ or in an output folder
    results = repo_root() / "benchmarks"  # any existing folder stands in for the results
    nb = from_namespace(PaperNotebook, namespace(PaperNotebook, results=str(results)))
    assert Path(nb.reported) == repo_root() / "benchmarks" / "paper_results.csv"
    assert Path(nb.figures) == repo_root() / "runs" / "figures"
    audio = from_namespace(AudioNotebook, namespace(AudioNotebook))
    assert Path(audio.out) == repo_root() / "runs" and audio.video == ""


def test_list_parameters_are_lists():
    nb = coerce(AblationsNotebook, {"asr": "false,true", "intervals": [5, 10], "models": "a,b"})
    assert nb.asr == [False, True] and nb.intervals == [5.0, 10.0] and nb.models == ["a", "b"]
    assert QaNotebook().benchmarks == ["videomme", "egolife", "egotempo"]
    with pytest.raises(ConfigError, match="cannot read"):
        coerce(AblationsNotebook, {"asr": "false,maybe"})
    with pytest.raises(ConfigError, match="cannot read"):
        coerce(EpisodicNotebook, {"end": True})


def test_bracketed_lists_from_the_command_line_read_like_comma_lists():
    """`-p models='[fake, openai:gpt-4o]'` (docs/cli.md) and JSON-style quotes give the items."""
    nb = coerce(
        AblationsNotebook,
        {"models": "[fake, openai:gpt-4o]", "context_durations": "[20, 40]", "asr": "[true]"},
    )
    assert nb.models == ["fake", "openai:gpt-4o"] and nb.context_durations == [20.0, 40.0]
    assert nb.asr == [True]
    qa = coerce(QaNotebook, {"videos": '["/data/mme", "/data/ego"]', "benchmarks": "['videomme']"})
    assert qa.videos == ["/data/mme", "/data/ego"] and qa.benchmarks == ["videomme"]


@pytest.mark.slow
def test_notebooks_01_02_03_share_one_perception_by_default():
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.perception.perceiver import settings_hash, settings_of

    nb3 = EpisodicNotebook()
    three = shared_perception(nb3.faces, nb3.asr, face_fps=nb3.face_fps, speaker_model=nb3.model)
    one = shared_perception(audio=AudioNotebook())
    schedule = MemorizeParams(end=24.0)
    assert settings_hash(settings_of(one, schedule)) == settings_hash(settings_of(three, schedule))
