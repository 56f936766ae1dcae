"""A memory as the QA step sees it: entries with stream times, rendered as text.

Floor 4. Loads a stored run, a JSONL memory from another system (`clip`, `start`, `end`, `text`),
or an original TaskMem pickle (`memory.long_term_memory.LongTermMemory`, clip k at
`[k * interval, (k + 1) * interval)`) through an allow-listed unpickler that builds only plain
containers, numpy arrays and inert stand-ins for the original's record classes; any other class
(the way a malicious pickle runs code) is refused before it is touched, and allocations, object
count and nesting are bounded (`PickleLimits`). `import_memories` turns a folder of original
pickles into run directories.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import datetime
import io
import json
import math
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmem_lab.errors import StoreError, UnsafePickleError
from taskmem_lab.store import RunDir, numbered_jsonl
from taskmem_lab.timefmt import span

KINDS = ("episodic", "semantic", "both")
DEFAULT_INTERVAL = 10.0  # seconds per clip in the original TaskMem scripts


@dataclass(frozen=True)
class Entry:
    clip: int
    start: float
    end: float
    text: str
    knowledge: tuple[str, ...] = ()


@dataclass
class Memory:
    """Entries in stream order plus where they came from."""

    entries: list[Entry]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run: str | Path | RunDir) -> Memory:
        """A stored run directory; a `.jsonl` or original `.pkl` memory file also loads."""
        if not isinstance(run, RunDir) and Path(run).is_file():
            return load_any(run)
        run = run if isinstance(run, RunDir) else RunDir(Path(run))
        manifest = run.manifest()
        entries = [
            Entry(
                r["clip"],
                r["start"],
                r["end"],
                r.get("episodic", ""),
                tuple(r.get("semantic") or ()),
            )
            for r in run.latest_rows().values()
            if r.get("status") == "ok"
        ]
        return cls(entries, str(run.path), manifest)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Memory:
        """A memory from another system: one `{clip, start, end, text, knowledge}` per line.

        Every field is checked (finite times, end >= start, text as text); a bad line is one
        `StoreError` naming its line number and the field."""
        entries = []
        for n, row in numbered_jsonl(path, last_line=True):
            at = f"{path}:{n}"
            if not isinstance(row, dict):
                raise StoreError(f"{at}: a memory line must be a JSON object")
            missing = {"start", "end", "text"} - set(row)
            if missing:
                raise StoreError(f"{at}: lacks {sorted(missing)}")
            start, end = _time(row["start"], at, "start"), _time(row["end"], at, "end")
            if end < start:
                raise StoreError(f"{at}: end {end} is before start {start}")
            if not isinstance(row["text"], str):
                raise StoreError(f"{at}: text must be a string, got {type(row['text']).__name__}")
            clip = row.get("clip", len(entries))
            if isinstance(clip, bool) or not isinstance(clip, int):
                raise StoreError(f"{at}: clip must be an integer, got {clip!r}")
            knowledge = row.get("knowledge") or row.get("semantic") or []
            if not isinstance(knowledge, list) or not all(isinstance(k, str) for k in knowledge):
                raise StoreError(f"{at}: knowledge must be a list of strings")
            entries.append(Entry(clip, start, end, row["text"], tuple(knowledge)))
        return cls(sorted(entries, key=lambda e: e.start), str(path))

    @classmethod
    def from_taskmem_pickle(
        cls,
        path: str | Path,
        interval: float | None = None,
        allow: Iterable[str] = (),
        limits: PickleLimits | None = None,
    ) -> Memory:
        """An original TaskMem memory pickle (`memory.long_term_memory.LongTermMemory`).

        Clip k covers `[k * interval, (k + 1) * interval)`: `interval` is the pickle's own when
        it has one, else the given one, else 10 s (the original scripts' value). `allow` adds
        `module.Class` record types to the original's four classes.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read memory pickle {p}: {exc.strerror}") from exc
        obj = safe_unpickle(data, (*ORIGINAL_CLASSES, *allow), limits or PickleLimits())
        state = _state(obj)
        own = state.get("interval") if isinstance(state, dict) else None
        if isinstance(own, int | float) and not isinstance(own, bool) and own > 0:
            step = float(own)
        else:
            step = float(interval) if interval else DEFAULT_INTERVAL
        if not math.isfinite(step) or step <= 0:
            raise StoreError(f"{p}: clip interval must be a positive number, got {step}")
        entries = _entries_from_pickle(obj, step, str(p))
        meta = {"format": _format_of(obj), "interval": step}
        return cls(entries, str(p), meta)

    def until(self, t: float) -> Memory:
        """Entries finished by stream time `t` (what an agent has when a question arrives)."""
        return Memory([e for e in self.entries if e.end <= t + 1e-6], self.source, self.meta)

    def to_text(self, kind: str = "episodic") -> str:
        """`HH:MM:SS-HH:MM:SS` headed entries; `semantic` shows knowledge, `both` shows both."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        blocks = []
        for e in self.entries:
            lines = [f"[{span(e.start, e.end)}]"]
            if kind in ("episodic", "both"):
                lines.append(e.text)
            if kind in ("semantic", "both") and e.knowledge:
                lines += [f"- {k}" for k in e.knowledge]
            if len(lines) > 1:
                blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def __len__(self) -> int:
        return len(self.entries)


def _time(value: Any, at: str, name: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or abs(value) > 1e12 or not math.isfinite(value):
        raise StoreError(f"{at}: {name} must be a finite number of seconds, got {value!r:.40}")
    return float(value)


# --------------------------------------------------------------------------- safe unpickling

ORIGINAL_CLASSES = (
    "memory.long_term_memory.LongTermMemory",
    "memory.long_term_memory.Episodic",
    "memory.long_term_memory.Semantic",
    "memory.long_term_memory.Character",
)
"""The record classes of the original TaskMem scripts, loaded by default as inert records."""

MAX_ALLOC_BYTES = 1 << 30  # one array or byte string built while unpickling
MAX_NODES = 50_000_000  # objects in the result unfolded as a tree (shared ones counted each time)
MAX_DEPTH = 200  # nesting of containers and records


@dataclass(frozen=True)
class PickleLimits:
    """Bounds on what an untrusted pickle may cost.

    Attributes:
        max_alloc_bytes: largest array or byte string one call may allocate.
        max_nodes: objects in the result counted as a tree (a shared object counts once per
            reference, so a small pickle of nested shared lists cannot make a later walk hang).
        max_depth: deepest nesting of containers and records.
    """

    max_alloc_bytes: int = MAX_ALLOC_BYTES
    max_nodes: int = MAX_NODES
    max_depth: int = MAX_DEPTH


_PLAIN = {
    ("builtins", n): getattr(builtins, n)
    for n in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "int",
        "float",
        "bool",
        "complex",
        "object",
    )
}
_PLAIN.update(
    {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("datetime", "datetime"): datetime.datetime,
        ("datetime", "date"): datetime.date,
        ("datetime", "timedelta"): datetime.timedelta,
    }
)
_NUMPY_CORE = ("numpy.core", "numpy._core")


class PickledRecord:
    """Inert stand-in for an allow-listed record class: keeps its state, runs none of its code."""

    _qualname = ""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def _stand_in(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (PickledRecord,), {"_qualname": qualname})


def _refuse(what: str) -> UnsafePickleError:
    return UnsafePickleError(f"refusing to load a pickle that {what}")


class _AllowListUnpickler(pickle.Unpickler):
    """Builds plain data, numpy arrays and stand-ins; every allocating call is size-checked."""

    def __init__(self, data: bytes, allow: set[str], limits: PickleLimits) -> None:
        super().__init__(io.BytesIO(data))
        self.allow = allow
        self.limits = limits
        self._stand_ins: dict[str, type] = {}
        self._guarded: dict[str, Any] = {
            "builtins.bytes": self._bytes_like(bytes),
            "builtins.bytearray": self._bytes_like(bytearray),
            "_codecs.encode": self._codecs_encode,
            "copyreg._reconstructor": self._reconstructor,
            "numpy.ndarray": self._ndarray,
            "numpy.dtype": _numpy_dtype,
        }
        _find_scalar()
        for core in _NUMPY_CORE:
            self._guarded[f"{core}.multiarray._reconstruct"] = self._reconstruct
            self._guarded[f"{core}.multiarray.scalar"] = _numpy_scalar
            self._guarded[f"{core}.numeric._frombuffer"] = self._frombuffer

    # Guarded constructors: the names a pickle may call that could allocate without bound.
    def _size(self, n: int, what: str) -> None:
        if n > self.limits.max_alloc_bytes:
            raise _refuse(
                f"asks for a {n:,}-byte {what} (limit {self.limits.max_alloc_bytes:,} bytes)"
            )

    def _bytes_like(self, kind: type) -> Any:
        def build(*args: Any) -> Any:
            if args and isinstance(args[0], int) and not isinstance(args[0], bool):
                self._size(int(args[0]), kind.__name__)
            if args and not isinstance(args[0], str | bytes | bytearray | list | tuple):
                raise _refuse(f"builds {kind.__name__} from a {type(args[0]).__name__}")
            return kind(*args)

        return build

    def _codecs_encode(self, text: Any, encoding: str = "utf-8", *rest: Any) -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _refuse(f"calls _codecs.encode with {type(text).__name__}, {encoding!r}")
        return text.encode("latin1")

    def _array_bytes(self, shape: Any, dtype: Any) -> None:
        import numpy as np

        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise _refuse(f"gives an array the shape {shape!r}")
        self._size(math.prod(dims) * np.dtype(dtype).itemsize, "array")

    def _ndarray(self, shape: Any = (0,), dtype: Any = float, *rest: Any) -> Any:
        import numpy as np

        self._array_bytes(shape, dtype)
        if rest:
            raise _refuse("calls numpy.ndarray with a buffer")
        return np.ndarray(shape, dtype)

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> Any:
        import numpy as np

        if subtype is not np.ndarray and subtype is not self._guarded["numpy.ndarray"]:
            raise _refuse(f"reconstructs an array of type {subtype!r}")
        self._array_bytes(shape, b"b" if isinstance(dtype, bytes) else dtype)
        return np.ndarray(shape, dtype)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: str) -> Any:
        import numpy as np

        if not isinstance(buf, bytes | bytearray | pickle.PickleBuffer):
            raise _refuse(f"builds an array from a {type(buf).__name__}")
        self._array_bytes(shape, dtype)
        array = np.frombuffer(memoryview(buf), dtype=dtype)
        return array.reshape(shape, order="F" if order == "F" else "C")

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        if base is not object or not (isinstance(cls, type) and issubclass(cls, PickledRecord)):
            raise _refuse(f"calls copyreg._reconstructor on {cls!r}, {base!r}")
        return object.__new__(cls)

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _PLAIN:
            return _PLAIN[(module, name)]
        qualname = f"{module}.{name}"
        if qualname in self._guarded:
            return self._guarded[qualname]
        if qualname.startswith("numpy.dtypes.") and name.endswith("DType"):
            return getattr(np.dtypes, name)  # numpy 2 dtype classes (data only)
        if qualname in self.allow:
            if qualname not in self._stand_ins:
                self._stand_ins[qualname] = _stand_in(qualname)
            return self._stand_ins[qualname]
        raise UnsafePickleError(
            f"refusing to load {qualname} from a pickle: only plain data, numpy arrays and "
            "allow-listed record classes are loaded (pass allow=['module.Class'] for a file "
            "you created)"
        )


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> Any:
    import numpy as np

    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's own scalar constructor, for plain (non-object) dtypes from their raw bytes."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _refuse(f"builds a numpy {dtype} scalar from {type(data).__name__}")
    if len(data) != dtype.itemsize:
        raise _refuse(f"gives a numpy {dtype} scalar {len(data)} bytes")
    return _SCALAR[0](dtype, data)


_SCALAR: list[Any] = []  # numpy's scalar constructor, found once


def _find_scalar() -> None:
    if not _SCALAR:
        try:
            from numpy._core.multiarray import scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import scalar  # type: ignore[no-redef]
        _SCALAR.append(scalar)


_CONTAINERS = (dict, list, tuple, set, frozenset)


def _may_hold(kind: type) -> bool:
    """Whether objects of this type can hold other objects (numpy: object arrays can)."""
    return issubclass(kind, (*_CONTAINERS, PickledRecord)) or (
        kind.__module__ == "numpy" and kind.__name__ == "ndarray"
    )


def _is_container(obj: Any) -> bool:
    if isinstance(obj, dict | list | tuple | set | frozenset | PickledRecord):
        return True
    return type(obj).__module__ == "numpy" and bool(
        getattr(obj, "dtype", None) is not None and obj.dtype.hasobject and obj.ndim > 0
    )


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, PickledRecord):
        obj = obj.__dict__
    if isinstance(obj, dict):
        return [x for kv in obj.items() for x in kv]
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    return list(obj.ravel())  # an object array: its elements are the objects themselves


def check_size(obj: Any, limits: PickleLimits = PickleLimits()) -> None:
    """Refuse a result that is cyclic, nested too deep, or too large when unfolded as a tree.

    The unfolded size (a shared object counted once per reference) is computed over distinct
    objects only, so the check itself is linear in the pickle's real size, while a small pickle
    of nested shared references, which would make any later walk or `str()` take exponential
    time, is refused.
    """
    if not _is_container(obj):
        return
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()  # containers whose children are being sized: the current path
    stack: list[tuple[Any, int, list[Any] | None]] = [(obj, 0, None)]
    while stack:
        item, depth, kids = stack[-1]
        key = id(item)
        if kids is None:
            if key in sizes:
                stack.pop()
                continue
            if depth > limits.max_depth:
                raise _refuse(f"nests deeper than {limits.max_depth} levels")
            kids = _children(item)
            if not any(map(_may_hold, set(map(type, kids)))):  # only scalars: size at once
                if 1 + len(kids) > limits.max_nodes:
                    raise _refuse(f"unfolds into more than {limits.max_nodes:,} objects")
                sizes[key] = 1 + len(kids)
                stack.pop()
                continue
            stack[-1] = (item, depth, kids)
            open_ids.add(key)
            for kid in kids:
                if _is_container(kid):
                    if id(kid) in open_ids:
                        raise _refuse("contains a cycle (an object that holds itself)")
                    if id(kid) not in sizes:
                        stack.append((kid, depth + 1, None))
            continue
        total = 1 + sum(sizes[id(k)] if _is_container(k) else 1 for k in kids)
        if total > limits.max_nodes:
            raise _refuse(
                f"unfolds into more than {limits.max_nodes:,} objects (shared references "
                "counted each time they are reached)"
            )
        sizes[key] = total
        open_ids.discard(key)
        stack.pop()


def safe_unpickle(
    data: bytes, allow: Iterable[str] = ORIGINAL_CLASSES, limits: PickleLimits = PickleLimits()
) -> Any:
    """Unpickle untrusted bytes: plain data, numpy arrays and stand-ins for `allow`ed classes.

    Any other class is refused before it is touched; allocations, object count and nesting are
    bounded by `limits`, so a small hostile file can neither run code, fill memory nor hang.
    """
    try:
        result = _AllowListUnpickler(data, set(allow), limits).load()
    except UnsafePickleError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise StoreError(f"not a readable memory pickle: {type(exc).__name__}: {exc}") from exc
    check_size(result, limits)
    return result


_TEXT_KEYS = ("text", "description", "episodic", "content", "memory")
_LIST_KEYS = ("clips", "entries", "episodic", "memory", "memories")


def _state(obj: Any) -> Any:
    return obj.__dict__ if isinstance(obj, PickledRecord) else obj


def _format_of(obj: Any) -> str:
    return getattr(obj, "_qualname", type(obj).__name__)


TEXT_LIMITS = PickleLimits(max_nodes=100_000)


def _as_text(value: Any, where: str) -> str:
    """A text field; other values (the original scripts sometimes stored lists) are written out,
    after checking they are small enough to write."""
    if isinstance(value, str):
        return value
    check_size(value, TEXT_LIMITS)
    return str(value)


def _original_entries(state: dict[str, Any], interval: float, where: str) -> list[Entry]:
    """Entries of an original `LongTermMemory`: `episodic.description` and
    `semantic.knowledge`, both keyed by the clip index as a string."""
    episodic = _state(state.get("episodic"))
    semantic = _state(state.get("semantic"))
    texts = episodic.get("description", {}) if isinstance(episodic, dict) else {}
    knowledge = semantic.get("knowledge", {}) if isinstance(semantic, dict) else {}
    if not isinstance(texts, dict) or not isinstance(knowledge, dict):
        raise StoreError(f"{where}: episodic.description and semantic.knowledge must be dicts")
    entries = []
    for key in set(texts) | set(knowledge):
        try:
            clip = int(key)
        except (TypeError, ValueError):
            raise StoreError(f"{where}: clip id {key!r} is not a clip index") from None
        if clip < 0:
            raise StoreError(f"{where}: clip id {key!r} is negative")
        text = texts.get(key, "")
        facts = knowledge.get(key) or ()
        if isinstance(facts, str):
            facts = (facts,)
        elif not isinstance(facts, list | tuple):
            raise StoreError(f"{where}: knowledge of clip {key} is a {type(facts).__name__}")
        entries.append(
            Entry(
                clip,
                clip * interval,
                (clip + 1) * interval,
                _as_text(text, where),
                tuple(_as_text(k, where) for k in facts),
            )
        )
    return sorted(entries, key=lambda e: (e.start, e.clip))


def _entries_from_pickle(data: Any, interval: float, where: str) -> list[Entry]:
    if isinstance(data, PickledRecord) and data._qualname == ORIGINAL_CLASSES[0]:
        return _original_entries(data.__dict__, interval, where)
    data = _state(data)
    items: Sequence[Any] | None = None
    if isinstance(data, list | tuple):
        items = data
    elif isinstance(data, dict):
        for key in _LIST_KEYS:
            if isinstance(data.get(key), list | tuple | dict):
                return _entries_from_pickle(data[key], interval, where)
        if data and all(isinstance(k, int) or (isinstance(k, str) and k.isdigit()) for k in data):
            items = [data[k] for k in sorted(data, key=int)]
    if items is None:
        kind = type(data).__name__
        keys = sorted(map(str, data))[:10] if isinstance(data, dict) else []
        raise StoreError(f"{where}: unrecognized TaskMem pickle layout ({kind}, keys {keys})")
    entries = []
    for n, item in enumerate(items):
        item = _state(item)
        if isinstance(item, str):
            entries.append(Entry(n, n * interval, (n + 1) * interval, item))
            continue
        if not isinstance(item, dict):
            raise StoreError(
                f"{where}: entry {n} is a {type(item).__name__}, not text or a mapping"
            )
        text = next((item[k] for k in _TEXT_KEYS if isinstance(item.get(k), str)), None)
        if text is None:
            raise StoreError(f"{where}: entry {n} has no text field (one of {_TEXT_KEYS})")
        clip_value = next((item[k] for k in ("clip", "clip_id", "index") if k in item), n)
        try:
            clip = int(clip_value)
            start = float(item.get("start", clip * interval))
            end = float(item.get("end", start + interval))
        except (TypeError, ValueError, OverflowError):
            raise StoreError(
                f"{where}: entry {n} has a clip, start or end that is not a number"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise StoreError(f"{where}: entry {n} spans [{start}, {end}]")
        knowledge = item.get("semantic") or item.get("knowledge") or ()
        if isinstance(knowledge, str):
            knowledge = (knowledge,)
        elif not isinstance(knowledge, list | tuple):
            raise StoreError(f"{where}: knowledge of entry {n} is a {type(knowledge).__name__}")
        entries.append(Entry(clip, start, end, text, tuple(_as_text(k, where) for k in knowledge)))
    return sorted(entries, key=lambda e: e.start)


def load_any(path: str | Path) -> Memory:
    """A run directory, a `.jsonl` memory or a `.pkl` TaskMem memory."""
    p = Path(path)
    if p.is_dir():
        return Memory.load(p)
    if p.suffix == ".jsonl":
        return Memory.from_jsonl(p)
    if p.suffix in (".pkl", ".pickle"):
        return Memory.from_taskmem_pickle(p)
    raise StoreError(f"not a run directory, .jsonl or .pkl memory: {p}")


def dumps_jsonl(memory: Memory) -> str:
    return "".join(
        json.dumps(
            {
                "clip": e.clip,
                "start": e.start,
                "end": e.end,
                "text": e.text,
                "knowledge": list(e.knowledge),
            }
        )
        + "\n"
        for e in memory.entries
    )


# --------------------------------------------------------------------------- importing


@dataclass(frozen=True)
class Imported:
    """One memory brought into the run layout by `import_memories`."""

    video_id: str
    source: Path
    run: Path
    entries: int
    new: bool  # False: the run already held this import (nothing written)


def original_memories(folder: str | Path, tag: str, test_time: bool = False) -> dict[str, Path]:
    """`{video_id: pickle}` of the original layout `<folder>/<video_id>/<video_id>_<tag>.pkl`
    (or `<folder>/<video_id>/test_time/<video_id>_<tag>.pkl` with `test_time`)."""
    root = Path(folder)
    if not root.is_dir():
        raise StoreError(f"memories folder not found: {root}")
    found = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        path = sub / ("test_time" if test_time else "") / f"{sub.name}_{tag}.pkl"
        if path.is_file():
            found[sub.name] = path
    if not found:
        where = f"{root}/<video_id>/{'test_time/' if test_time else ''}<video_id>_{tag}.pkl"
        raise StoreError(f"no original TaskMem memories with tag {tag!r}: nothing matches {where}")
    return found


def import_memories(
    folder: str | Path,
    tag: str,
    runs: str | Path,
    new_tag: str | None = None,
    test_time: bool = False,
    interval: float | None = None,
) -> list[Imported]:
    """Convert original TaskMem pickles into run directories `<runs>/<video_id>/memory/<tag>/`.

    Each pickle is read with the safe unpickler, its clips written as finished clip records
    (episodic text, semantic knowledge, the original's clip times), and the manifest records
    the source file and its sha256; an import already done is left as it is. Baseline
    memories converted to the same pickle layout (EgoGPT, HippoMM, M3-Agent in the paper's
    table) go through the same path.
    """
    import hashlib

    from taskmem_lab.schema import ClipRecord
    from taskmem_lab.store import memory_dir, open_run

    out_tag = new_tag or tag
    for what, name in (("--tag", tag), ("--as", out_tag)):
        if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
            raise StoreError(f"{what} {name!r} is not a plain name (a path separator or '..')")
    done = []
    for vid, path in original_memories(folder, tag, test_time).items():
        memory = Memory.from_taskmem_pickle(path, interval)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest = {
            "stream_id": vid,
            "model": "imported:taskmem-pickle",
            "params": {"interval": memory.meta.get("interval"), "format": memory.meta["format"]},
            "source": [{"path": str(path.resolve()), "sha256": digest}],
            "prompts": {},
            "tasks": None,
            "imported_from": str(path.resolve()),
        }
        target = memory_dir(runs, vid, out_tag)
        run = open_run(target, manifest)
        have = run.finished()
        for e in memory.entries:
            if e.clip in have:
                continue
            run.append(
                ClipRecord(
                    clip=e.clip,
                    start=e.start,
                    end=e.end,
                    window=(e.start, e.end),
                    status="ok",
                    episodic=e.text,
                    semantic=list(e.knowledge),
                    model="imported:taskmem-pickle",
                )
            )
        run.update_manifest(status="complete")
        done.append(Imported(vid, path, run.path, len(memory), not have))
    return done
