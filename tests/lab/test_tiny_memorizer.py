"""The tiny memorizer builder: settings checked, built once per folder, trained weights saved."""

import json

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.lab.tiny_memorizer import (
    MARKER,
    TinyMemorizerParams,
    build_tiny_memorizer,
    entry_json,
)
from taskmem_lab.params import MemorizeParams
from taskmem_lab.schema import ClipSpec

CLIPS = [ClipSpec(0, 0.0, 4.0, 0.0), ClipSpec(1, 4.0, 8.0, 0.0)]


def test_one_specific_entry_per_clip(tmp_path):
    with pytest.raises(ConfigError, match="1 specific entries for 2 clips"):
        build_tiny_memorizer(tmp_path, CLIPS, ["only one"])
    with pytest.raises(ConfigError, match="p_vague"):
        TinyMemorizerParams(p_vague=1.0)


def test_entries_are_the_memorizers_json():
    from taskmem_lab.replies import parse_description

    assert parse_description(entry_json("A man waves.")) == "A man waves."


@pytest.mark.slow
def test_built_once_and_refused_with_other_settings(tmp_path):
    pytest.importorskip("transformers")
    params = TinyMemorizerParams(steps=3)
    memorize = MemorizeParams(frame_fps=0.5)
    path = build_tiny_memorizer(tmp_path, CLIPS, ["A man waves.", "A dog barks."], memorize, params)
    report = json.loads((path / MARKER).read_text())
    assert report["settings"]["params"]["steps"] == 3 and report["final_loss"] > 0
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_memorizer(path, CLIPS, ["A man waves.", "A dog barks."], memorize, params)
    assert weights.stat().st_mtime_ns == stamp  # not trained again
    with pytest.raises(ConfigError, match="other settings"):
        build_tiny_memorizer(path, CLIPS, ["A cat.", "A dog barks."], memorize, params)
