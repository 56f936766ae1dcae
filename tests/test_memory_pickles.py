"""A pickle corpus for the safe unpickler: original TaskMem memories load, numpy arrays load at
every protocol, and bombs, huge allocations and foreign classes are refused quickly."""

import pickle
import time

import numpy as np
import pytest

from taskmem_lab.errors import StoreError, UnsafePickleError
from taskmem_lab.memory import Memory, PickleLimits, load_any, safe_unpickle
from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.original import fake_original_classes

# --------------------------------------------------------------------------- original records


@pytest.fixture
def fake_original_module():
    """Record classes under the original's module path, so pickles name them as it does."""
    with fake_original_classes() as mod:
        yield mod


def original_memory(mod, interval=10, clips=3):
    m = mod.LongTermMemory(interval)
    for k in range(clips):
        m.episodic.description[str(k)] = f"Clip {k}: <face_1> stirs the pot."
        m.semantic.knowledge[str(k)] = [f"<face_1> cooks (fact {k})"]
    m.semantic.characters[1] = mod.Character(1)
    m.semantic.characters[1].features["face"].append({"embedding": np.ones(4, np.float32)})
    return m


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_original_pickle_loads_with_its_clip_times(tmp_path, fake_original_module, protocol):
    path = tmp_path / "vid_taskmem_ep.pkl"
    path.write_bytes(pickle.dumps(original_memory(fake_original_module), protocol=protocol))
    mem = Memory.from_taskmem_pickle(path)
    assert [(e.clip, e.start, e.end) for e in mem.entries] == [
        (0, 0.0, 10.0),
        (1, 10.0, 20.0),
        (2, 20.0, 30.0),
    ]
    assert mem.entries[2].knowledge == ("<face_1> cooks (fact 2)",)
    assert mem.meta == {"format": "memory.long_term_memory.LongTermMemory", "interval": 10.0}
    text = mem.to_text("both")
    assert text.startswith("[00:00:00-00:00:10]\nClip 0: <face_1> stirs the pot.\n- <face_1>")


def test_original_interval_comes_from_the_pickle(tmp_path, fake_original_module):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(original_memory(fake_original_module, interval=30, clips=2)))
    assert [e.end for e in Memory.from_taskmem_pickle(path).entries] == [30.0, 60.0]
    assert [e.end for e in load_any(path).until(30).entries] == [30.0]
    assert Memory.load(path).entries == Memory.from_taskmem_pickle(path).entries


def test_show_renders_an_original_pickle(tmp_path, fake_original_module):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(original_memory(fake_original_module, clips=2)))
    proc = taskmem("show", path)
    assert proc.stdout.splitlines()[0] == "[00:00:00-00:00:10]"
    assert "[00:00:10-00:00:20]\nClip 1: <face_1> stirs the pot." in proc.stdout


def test_other_classes_are_still_refused(tmp_path, fake_original_module):
    class Other:
        pass

    Other.__module__ = "memory.long_term_memory"
    Other.__qualname__ = "ShortTermMemory"
    fake_original_module.ShortTermMemory = Other
    data = pickle.dumps({"x": Other()})
    with pytest.raises(UnsafePickleError, match="memory.long_term_memory.ShortTermMemory"):
        safe_unpickle(data)


# --------------------------------------------------------------------------- benign numpy

ARRAYS = [
    np.arange(6, dtype=np.float64),
    np.arange(12, dtype=np.int32).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    np.array([True, False]),
    np.zeros((0, 3)),
    np.array(["ab", "c"]),
]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_numpy_arrays_load_at_every_protocol(array, protocol):
    data = pickle.dumps({"embedding": array, "scalar": array.dtype.type(0)}, protocol=protocol)
    got = safe_unpickle(data)
    np.testing.assert_array_equal(got["embedding"], array)
    assert got["embedding"].dtype == array.dtype and got["embedding"].shape == array.shape
    assert got["scalar"] == array.dtype.type(0)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_containers_load_at_every_protocol(protocol):
    import collections
    import datetime

    value = {
        "s": {1, 2},
        "f": frozenset("ab"),
        "t": (1.5, "x", b"raw", bytearray(b"ba"), 3 + 1j),
        "o": collections.OrderedDict(a=1),
        "d": collections.defaultdict(list, {"k": [1]}),
        "when": datetime.datetime(2025, 1, 2, 3, 4, 5),
        "big": 10**30,
    }
    assert safe_unpickle(pickle.dumps(value, protocol=protocol)) == value


# --------------------------------------------------------------------------- hostile corpus


def sharing_bomb(levels=50):
    """~350 bytes: each level a tuple holding the previous one twice (2**levels leaves)."""
    body = b"\x80\x02]q\x00" + b"h\x00h\x00\x86q\x00" * levels
    return body + b"."


def long1(n):
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


N = 20_000_000_000  # 20 GB


HOSTILE = {
    "bytes(2e10)": b"\x80\x02cbuiltins\nbytes\n" + long1(N) + b"\x85R.",
    "bytearray(2e10)": b"\x80\x02cbuiltins\nbytearray\n" + long1(N) + b"\x85R.",
    "bytes via NEWOBJ": b"\x80\x02cbuiltins\nbytes\n" + long1(N) + b"\x85\x81.",
    "copyreg._reconstructor(bytes)": b"\x80\x02ccopyreg\n_reconstructor\ncbuiltins\nbytes\n"
    b"cbuiltins\nbytes\n" + long1(N) + b"\x87R.",
    "numpy.ndarray((2e10,))": b"\x80\x02cnumpy\nndarray\n" + long1(N) + b"\x85\x85R.",
    "numpy _reconstruct": b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    + long1(N)
    + b"\x85C\x01b\x87R.",
    "numpy _frombuffer shape": b"\x80\x02cnumpy._core.numeric\n_frombuffer\n(C\x08aaaaaaaa"
    b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R" + long1(N) + b"\x85X\x01\x00\x00\x00C\x94tR.",
    "_codecs.encode(int)": b"\x80\x02c_codecs\nencode\n"
    + long1(N)
    + b"X\x06\x00\x00\x00latin1\x86R.",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_allocations_are_refused_before_they_happen(name):
    start = time.perf_counter()
    with pytest.raises((UnsafePickleError, StoreError)) as info:
        safe_unpickle(HOSTILE[name])
    assert time.perf_counter() - start < 2.0
    if name == "bytes via NEWOBJ":  # pickle itself refuses: our guarded bytes is not a type
        assert "NEWOBJ class argument must be a type" in str(info.value)
    else:
        assert isinstance(info.value, UnsafePickleError)


def test_sharing_bomb_is_refused_quickly(tmp_path):
    data = sharing_bomb()
    assert len(data) <= 360
    start = time.perf_counter()
    with pytest.raises(UnsafePickleError, match="more than"):
        safe_unpickle(data)
    assert time.perf_counter() - start < 2.0
    (tmp_path / "bomb.pkl").write_bytes(data)
    proc = taskmem("show", tmp_path / "bomb.pkl", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("taskmem: error: refusing to load a pickle that unfolds")


def test_cycles_and_deep_nesting_are_refused():
    cyclic = []
    cyclic.append(cyclic)
    with pytest.raises(UnsafePickleError, match="contains a cycle"):
        safe_unpickle(pickle.dumps(cyclic))
    deep = b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."
    with pytest.raises(UnsafePickleError, match="nests deeper"):
        safe_unpickle(deep)


def test_large_benign_pickles_are_not_refused():
    # Face embeddings kept as plain lists: a million floats, shared dicts counted per use.
    feature = {"embedding": [0.5] * 512}
    data = pickle.dumps({"characters": [[feature] * 40 for _ in range(50)]})
    start = time.perf_counter()
    got = safe_unpickle(data)
    assert time.perf_counter() - start < 5.0
    assert len(got["characters"]) == 50 and got["characters"][0][0]["embedding"][0] == 0.5
    with pytest.raises(UnsafePickleError, match="unfolds into more than 1,000"):
        safe_unpickle(data, limits=PickleLimits(max_nodes=1_000))


def test_a_big_structure_where_text_belongs_is_refused(tmp_path):
    nested = ()
    for _ in range(20):  # 2**20 leaves, a few hundred bytes pickled: fine to hold, not to print
        nested = (nested, nested)
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"clips": [{"text": "ok", "knowledge": [nested]}]}))
    assert isinstance(safe_unpickle(path.read_bytes())["clips"][0]["knowledge"][0], tuple)
    with pytest.raises(UnsafePickleError, match="unfolds into more than 100,000"):
        Memory.from_taskmem_pickle(path)
    path.write_bytes(pickle.dumps({"clips": [{"text": "ok", "knowledge": [["x"] * 3]}]}))
    assert Memory.from_taskmem_pickle(path).entries[0].knowledge == ("['x', 'x', 'x']",)


def test_truncated_and_garbage_pickles_are_one_clear_error():
    good = pickle.dumps({"clips": ["a", "b"]})
    for data in (good[: len(good) // 2], b"not a pickle", b""):
        with pytest.raises(StoreError, match="not a readable memory pickle"):
            safe_unpickle(data)
