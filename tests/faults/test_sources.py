"""Stored perception and memory belong to one source; a kill never counts a clip twice."""

import shutil

import numpy as np
import pytest
from helpers import one_line_error

from taskmem_lab.media.stream import load_stream
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception import perceiver as stage
from taskmem_lab.perception.perceiver import PerceptionParams, StreamPerceiver
from taskmem_lab.testing.command import taskmem

NOTHING = PerceptionParams(faces=None, asr=None, voices=None)


@pytest.fixture()
def twins(media, tmp_path):
    """Two different videos with the same file name, in two folders."""
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    a.parent.mkdir()
    b.parent.mkdir()
    shutil.copy(media["silent"], a)
    shutil.copy(media["tone_27_3"], b)
    return a, b


@pytest.mark.slow
def test_same_named_videos_never_share_perception(twins, tmp_path):
    a, b = (load_stream(v) for v in twins)
    assert a.stream_id == b.stream_id == "clip"
    pa = StreamPerceiver(a, NOTHING, MemorizeParams(), tmp_path / "out")
    pb = StreamPerceiver(b, NOTHING, MemorizeParams(), tmp_path / "out")
    assert pa.path != pb.path
    assert pa.settings["sources"][0]["sha256"] != pb.settings["sources"][0]["sha256"]
    # the same content elsewhere (a moved file) keeps its perception
    moved = tmp_path / "moved" / "clip.mp4"
    moved.parent.mkdir()
    shutil.copy(twins[0], moved)
    assert (
        StreamPerceiver(load_stream(moved), NOTHING, MemorizeParams(), tmp_path / "out").path
        == pa.path
    )


@pytest.mark.slow
def test_a_memory_run_refuses_another_video_of_the_same_name(twins, tmp_path):
    out = ["--model", "fake", "--no-cache", "-q", "--out", tmp_path / "out", "--tag", "m"]
    taskmem("memorize", twins[0], *out)
    proc = taskmem("memorize", twins[1], *out, check=False)
    one_line_error(proc, r"different 'source': source file 0 \(clip\.mp4\) has a different sha256")


def _record(clip: int) -> dict:
    return {"clip": clip, "start": clip * 10.0, "end": clip * 10.0 + 10, "faces": [],
            "identities": [], "transcript": []}  # fmt: skip


def _perceiver(media, root):
    p = StreamPerceiver(load_stream(media["silent"]), NOTHING, MemorizeParams(), root)
    p._take_lock()
    return p


def _see_someone(p: StreamPerceiver) -> None:
    """What `assign` does for a clip: a character gains one clip."""
    gid = next(iter(p.registry.characters), None) or p.registry.new_voice_character(
        np.ones(8, np.float32)
    )
    p.registry.characters[gid].clips += 1


def test_a_kill_between_registry_save_and_record_counts_nothing(media, tmp_path, monkeypatch):
    p = _perceiver(media, tmp_path)
    _see_someone(p)
    p._commit(_record(0))
    p.close()

    p = _perceiver(media, tmp_path)
    _see_someone(p)

    def killed(*args, **kw):
        raise KeyboardInterrupt  # the process dies before the clip record is written

    monkeypatch.setattr(stage, "append_jsonl", killed)
    with pytest.raises(KeyboardInterrupt):
        p._commit(_record(1))
    p.close()
    monkeypatch.undo()
    assert (p.path / stage.NEXT_REGISTRY).is_dir()

    p = _perceiver(media, tmp_path)  # resume
    (char,) = p.registry.characters.values()
    assert char.clips == 1 and sorted(p.records) == [0]
    assert not (p.path / stage.NEXT_REGISTRY).exists()
    _see_someone(p)
    p._commit(_record(1))
    p.close()
    (char,) = _perceiver(media, tmp_path).registry.characters.values()
    assert char.clips == 2  # clip 1 counted once


def test_a_kill_after_the_record_promotes_its_registry(media, tmp_path, monkeypatch):
    p = _perceiver(media, tmp_path)
    _see_someone(p)
    p._commit(_record(0))
    p.close()
    p = _perceiver(media, tmp_path)
    _see_someone(p)
    real = stage.append_jsonl

    def killed_after(*args, **kw):
        real(*args, **kw)
        raise KeyboardInterrupt  # the record is stored, the registry swap is not done

    monkeypatch.setattr(stage, "append_jsonl", killed_after)
    with pytest.raises(KeyboardInterrupt):
        p._commit(_record(1))
    p.close()
    monkeypatch.undo()
    p = _perceiver(media, tmp_path)
    (char,) = p.registry.characters.values()
    assert char.clips == 2 and sorted(p.records) == [0, 1]
    assert (p.path / stage.REGISTRY_DIR).is_dir() and not (p.path / stage.OLD_REGISTRY).exists()


@pytest.mark.slow
def test_a_moved_video_resumes_its_run(twins, tmp_path):
    out = ["--model", "fake", "--no-cache", "-q", "--out", tmp_path / "out", "--tag", "m"]
    taskmem("memorize", twins[0], *out, "--end", "5")  # a first part only
    moved = tmp_path / "moved" / "clip.mp4"
    moved.parent.mkdir()
    shutil.move(twins[0], moved)
    proc = taskmem("memorize", moved, *out, "--end", "5")
    assert "files moved" in proc.stderr
    from taskmem_lab.store import RunDir

    run = RunDir(tmp_path / "out" / "clip" / "memory" / "m")
    assert run.manifest()["source"][0]["path"] == str(moved)
