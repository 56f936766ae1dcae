"""The perception cache key: settings, models by name + file hash, prompts; never a local path."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from taskmem_lab.errors import ConfigError, MissingExtraError
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.asr import AsrParams
from taskmem_lab.perception.perceiver import (
    PerceptionParams,
    model_identity,
    settings_hash,
    settings_of,
)


def _model_dir(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "model.bin").write_bytes(weights)
    (root / "config.json").write_text("{}")
    return root


def _key(params: PerceptionParams) -> str:
    return settings_hash(settings_of(params, MemorizeParams()))


def test_a_model_directory_is_keyed_by_its_files_not_its_place(tmp_path):
    a = _model_dir(tmp_path / "machine_a" / "venv" / "whisper", b"weights-1")
    b = _model_dir(tmp_path / "machine_b" / "elsewhere" / "whisper", b"weights-1")
    c = _model_dir(tmp_path / "machine_c" / "whisper", b"weights-2")
    base = PerceptionParams(faces=None)
    keys = [_key(replace(base, asr=AsrParams(model=str(p)))) for p in (a, b, c)]
    assert keys[0] == keys[1] != keys[2]
    settings = settings_of(replace(base, asr=AsrParams(model=str(a))), MemorizeParams())
    assert settings["models"]["asr"]["name"] == "whisper"
    # The stored settings keep the path (to rebuild the params); the key does not use it.
    assert str(a) in json.dumps(settings)
    assert model_identity(str(a)) == model_identity(str(b))


def test_hub_names_and_settings_still_change_the_key():
    base = PerceptionParams(faces=None)
    small, tiny = (_key(replace(base, asr=AsrParams(model=m))) for m in ("small", "tiny.en"))
    assert small != tiny
    assert _key(replace(base, asr=AsrParams(model="small", beam_size=1))) != small
    assert model_identity("small") == {"name": "small"}


def test_the_prompts_it_sends_are_in_the_key(monkeypatch):
    import taskmem_lab.prompts as prompts

    params = PerceptionParams(faces=None)
    before = _key(params)
    assert set(settings_of(params, MemorizeParams())["prompts"]) == {
        "speakers_system",
        "speakers_user",
    }
    real = prompts.prompt_hash
    monkeypatch.setattr(
        prompts, "prompt_hash", lambda n: "changed" if n == "speakers_user" else real(n)
    )
    assert _key(params) != before
    vlm = replace(params, asr=AsrParams(backend="vlm", model="openai:some-model"))
    assert {"asr_system", "asr_user"} <= set(settings_of(vlm, MemorizeParams())["prompts"])


def test_the_default_settings_key_holds_no_absolute_path():
    from taskmem_lab.perception.perceiver import perception_params

    params = perception_params(True, True)
    assert params is not None
    settings = settings_of(params, MemorizeParams())
    models = json.dumps(settings["models"])
    assert "/" not in models.replace('"', "")  # names and hashes only


def test_a_missing_optional_backend_is_one_line_naming_the_extra(monkeypatch):
    from taskmem_lab.perception.voices import ResemblyzerEmbedder

    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    with pytest.raises(ConfigError) as err:
        ResemblyzerEmbedder()._load()
    assert isinstance(err.value, MissingExtraError) and isinstance(err.value, ImportError)
    text = str(err.value)
    assert "\n" not in text and "pip install 'taskmem_lab[asr]'" in text and "resemblyzer" in text


def test_a_broken_dependency_of_a_backend_is_named_too(monkeypatch):
    from taskmem_lab.perception.asr import WhisperAsr

    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(MissingExtraError, match=r"faster-whisper cannot be imported .*\[asr\]"):
        WhisperAsr(AsrParams(model="tiny.en")).load()


def test_cli_prints_one_line_for_a_missing_extra(tmp_path, monkeypatch, capsys):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to generate a video")
    from taskmem_lab import cli
    from taskmem_lab.testing.media import test_video

    video = test_video(tmp_path / "v.mp4", 3.0)
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setenv("TASKMEM_RUNS", str(tmp_path / "runs"))
    code = cli.main(["perceive", str(video), "--no-faces", "--out", str(tmp_path / "runs")])
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.strip() and "clip/s" not in line
    ]
    assert code != 0
    assert len(err) == 1 and err[0].startswith("taskmem: error:"), err
    assert "taskmem_lab[asr]" in err[0] and "Traceback" not in err[0]


def test_the_asr_mode_and_the_memorizers_speaker_model_are_in_the_key(tmp_path):
    from taskmem_lab.backends.fake import FakeModel
    from taskmem_lab.perception.perceiver import StreamPerceiver
    from taskmem_lab.schema import Stream, StreamFile

    base = PerceptionParams(faces=None)
    keys = {_key(replace(base, asr=AsrParams(mode=m))) for m in ("file", "live", "clip")}
    assert len(keys) == 3
    assert _key(base) == _key(replace(base, asr=AsrParams(mode="file")))  # the default, named

    video = tmp_path / "v.mp4"
    video.write_bytes(b"not decoded here")
    stream = Stream("v", (StreamFile(str(video), 0.0, 10.0),))

    def key(model=None, identity=None) -> str:
        p = StreamPerceiver(
            stream, base, MemorizeParams(), tmp_path / "runs", model, "pyav", identity
        )
        p.close()
        return p.key

    a, b = FakeModel("model-a"), FakeModel("model-b")
    assert key(a) != key(b) != key()
    # A replay runs no model: the identity its run stored gives the same key.
    stored = StreamPerceiver(stream, base, MemorizeParams(), tmp_path / "runs", a).settings
    assert key(identity=stored["speaker"]) == key(a)
    # Without speech, no speaker is ever matched: the model does not matter.
    silent = PerceptionParams(asr=None)
    k1 = StreamPerceiver(stream, silent, MemorizeParams(), tmp_path / "r2", a).key
    assert k1 == StreamPerceiver(stream, silent, MemorizeParams(), tmp_path / "r3", b).key
