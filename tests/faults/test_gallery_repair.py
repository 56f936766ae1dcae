"""Perception repairs its gallery on open: a kill at any step of the last clip's commit leaves a
folder that every later reader sees with the gallery that matches its stored clips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from taskmem_lab.media.stream import load_stream
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception import perceiver as perceiver_mod
from taskmem_lab.perception.params import PerceptionChoices
from taskmem_lab.perception.perceiver import StreamPerceiver, perception_params
from taskmem_lab.pipeline import perceive_stream

PARAMS = MemorizeParams(interval=6, context_duration=6)
CHOICES = PerceptionChoices(asr_backend="vlm", asr_model="fake", voices=False)


class Killed(BaseException):
    """The process died here (nothing catches it, as nothing survives a SIGKILL)."""


def _perceive(video: Path, root: Path) -> StreamPerceiver:
    params = perception_params(False, True, CHOICES)
    perceiver, _ = perceive_stream(video, params, PARAMS, root, cache=False, progress=False)
    return perceiver


def _kill_last_commit_at(monkeypatch, step: int, last: int) -> dict[str, int]:
    """From the last clip's commit on, the `step`-th file operation never happens: the process
    dies there. That clip also finds a new (voice-only) character, so its gallery differs."""
    calls = {"n": 0, "armed": 0}
    original = StreamPerceiver._commit

    def fatal(fn):
        def call(*args, **kwargs):
            if calls["armed"]:
                calls["n"] += 1
                if calls["n"] == step:
                    raise Killed(f"killed at file operation {step}")
            return fn(*args, **kwargs)

        return call

    def commit(self, record):
        if record["clip"] == last:
            self.registry.new_voice_character(np.ones((1, 4), np.float32))
            calls["armed"] = 1
        try:
            return original(self, record)
        finally:
            calls["armed"] = 0

    monkeypatch.setattr(StreamPerceiver, "_commit", commit)
    monkeypatch.setattr(perceiver_mod, "append_jsonl", fatal(perceiver_mod.append_jsonl))
    monkeypatch.setattr(perceiver_mod, "atomic_write_json", fatal(perceiver_mod.atomic_write_json))
    monkeypatch.setattr(shutil, "rmtree", fatal(shutil.rmtree))
    monkeypatch.setattr(Path, "rename", fatal(Path.rename))
    monkeypatch.setattr(Path, "mkdir", fatal(Path.mkdir))
    return calls


@pytest.mark.slow
def test_a_kill_at_each_commit_step_of_the_last_clip_is_repaired_on_open(media, tmp_path):
    video = media["silent"]
    stream = load_stream(video)
    steps_killed = 0
    for step in range(1, 40):
        root = tmp_path / f"k{step}"
        with pytest.MonkeyPatch.context() as mp:
            _kill_last_commit_at(mp, step, last=1)
            try:
                _perceive(video, root)
            except Killed:
                steps_killed += 1
            else:
                break  # the commit has fewer file operations than `step`: every one was tried
        (folder,) = (root / "silent" / "perception").iterdir()
        stored = {r["clip"] for r in perceiver_mod.read_jsonl(folder / "clips.jsonl")}
        # Opening alone (no clip computed) settles the gallery to the stored clips.
        opened = StreamPerceiver(stream, perception_params(False, True, CHOICES), PARAMS, root)
        opened.close()
        assert len(opened.registry) == (1 if 1 in stored else 0), (step, stored)
        left = sorted(p.name for p in folder.iterdir() if p.name.startswith("identities"))
        if 1 in stored:
            assert left == ["identities"], (step, left)
            assert (folder / "identities" / "identities.json").is_file(), step
        _perceive(video, root)  # a later perceive finishes what is missing
        left = sorted(p.name for p in folder.iterdir() if p.name.startswith("identities"))
        assert left == ["identities"], (step, left)
        assert {r["clip"] for r in perceiver_mod.read_jsonl(folder / "clips.jsonl")} == {0, 1}
    assert steps_killed >= 5, "the commit was not killed at each of its steps"
