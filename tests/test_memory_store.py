import collections
import json
import os
import pickle

import pytest

from taskmem_lab.errors import StoreError, UnsafePickleError
from taskmem_lab.memory import Memory, load_any, safe_unpickle
from taskmem_lab.schema import ClipRecord
from taskmem_lab.store import RunDir, open_run


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/taskmem_pwned_marker",))


def test_unpickler_refuses_code_execution(tmp_path):
    marker = "/tmp/taskmem_pwned_marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"text": "hi"}, Evil()]))
    with pytest.raises(UnsafePickleError, match="refusing to load (posix|os).system"):
        Memory.from_taskmem_pickle(path)
    assert not os.path.exists(marker)


def test_unpickler_refuses_eval_via_builtins():
    payload = b"cbuiltins\neval\n(S'1+1'\ntR."
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_unpickle(payload)


class ClipMemory:  # stands for a record class of the original tool
    def __init__(self, clip, text):
        self.clip_id, self.description = clip, text


def test_taskmem_pickle_layouts(tmp_path):
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"episodic": ["first", "second"]}))
    mem = Memory.from_taskmem_pickle(tmp_path / "a.pkl", interval=5)
    assert [(e.start, e.end, e.text) for e in mem.entries] == [(0, 5, "first"), (5, 10, "second")]

    rows = collections.OrderedDict(
        {1: {"text": "b", "start": 30.0, "end": 40.0, "semantic": ["k"]}, 0: {"text": "a"}}
    )
    (tmp_path / "b.pkl").write_bytes(pickle.dumps(rows))
    mem = Memory.from_taskmem_pickle(tmp_path / "b.pkl")
    assert [e.text for e in mem.entries] == ["a", "b"] and mem.entries[1].knowledge == ("k",)

    (tmp_path / "c.pkl").write_bytes(
        pickle.dumps({"clips": [ClipMemory(0, "x"), ClipMemory(1, "y")]})
    )
    with pytest.raises(UnsafePickleError, match="ClipMemory"):
        Memory.from_taskmem_pickle(tmp_path / "c.pkl")
    allowed = f"{ClipMemory.__module__}.ClipMemory"
    mem = Memory.from_taskmem_pickle(tmp_path / "c.pkl", allow=[allowed])
    assert [(e.clip, e.text) for e in mem.entries] == [(0, "x"), (1, "y")]

    (tmp_path / "d.pkl").write_bytes(pickle.dumps({"weird": 1}))
    with pytest.raises(StoreError, match="unrecognized"):
        Memory.from_taskmem_pickle(tmp_path / "d.pkl")


def test_jsonl_import_and_text(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(
        '{"clip": 1, "start": 10, "end": 20, "text": "later"}\n{"clip": 0, "start": 0, "end": 10, "text": "first"}\n'
    )
    mem = load_any(p)
    assert mem.to_text() == "[00:00:00-00:00:10]\nfirst\n\n[00:00:10-00:00:20]\nlater"
    assert mem.until(15).to_text() == "[00:00:00-00:00:10]\nfirst"
    p.write_text('{"clip": 0, "text": "no times"}\n')
    with pytest.raises(StoreError, match="lacks"):
        load_any(p)


def record(i, status="ok", text="t"):
    return ClipRecord(
        clip=i,
        start=i * 10.0,
        end=i * 10.0 + 10,
        window=(0.0, i * 10.0 + 10),
        status=status,
        episodic=text if status == "ok" else "",
    )


def test_torn_tail_is_cut_and_latest_ok_record_wins(tmp_path):
    run = open_run(tmp_path / "r", {"stream_id": "s", "model": "m", "params": {}})
    run.append(record(0))
    run.append(record(1, "failed"))
    run.append(record(1, text="fixed"))
    with open(run.clips_path, "a") as fh:
        fh.write('{"clip": 2, "start": 20')  # killed mid-write
    assert sorted(run.finished()) == [0, 1] and run.finished()[1].episodic == "fixed"
    open_run(tmp_path / "r", {"stream_id": "s", "model": "m", "params": {}})
    assert run.clips_path.read_text().endswith("}\n")
    assert len(run.records()) == 3


def test_open_run_refuses_other_inputs_and_manifest_is_atomic(tmp_path):
    open_run(tmp_path / "r", {"stream_id": "s", "model": "m", "params": {"interval": 10}})
    with pytest.raises(StoreError, match="different 'model'"):
        open_run(tmp_path / "r", {"stream_id": "s", "model": "other", "params": {"interval": 10}})
    leftovers = [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["status"] == "running"
    with pytest.raises(StoreError, match="not a run directory"):
        RunDir(tmp_path / "nothing").manifest()
