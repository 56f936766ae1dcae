"""A memory as the QA step sees it: entries with stream times, rendered as text.

Floor 3. Loads a stored run, a JSONL memory from another system (`clip`, `start`, `end`, `text`),
or an original TaskMem pickle through an allow-listed unpickler that builds only plain
containers, numpy arrays and inert stand-ins for allow-listed record classes; any other class
(the way a malicious pickle runs code) is refused before it is touched.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmem_lab.errors import StoreError, UnsafePickleError
from taskmem_lab.store import RunDir, read_jsonl
from taskmem_lab.timefmt import span

KINDS = ("episodic", "semantic", "both")


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
        run = run if isinstance(run, RunDir) else RunDir(Path(run))
        manifest = run.manifest()
        entries = [
            Entry(r.clip, r.start, r.end, r.episodic, tuple(r.semantic))
            for r in run.finished().values()
        ]
        return cls(entries, str(run.path), manifest)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Memory:
        """A memory from another system: one `{clip, start, end, text, knowledge}` per line.

        Every field is checked (finite times, end >= start, text as text); a bad line is one
        `StoreError` naming its line number and the field."""
        rows = read_jsonl(path)
        entries = []
        for n, row in enumerate(rows, 1):
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
            clip = row.get("clip", n - 1)
            if isinstance(clip, bool) or not isinstance(clip, int):
                raise StoreError(f"{at}: clip must be an integer, got {clip!r}")
            knowledge = row.get("knowledge") or row.get("semantic") or []
            if not isinstance(knowledge, list) or not all(isinstance(k, str) for k in knowledge):
                raise StoreError(f"{at}: knowledge must be a list of strings")
            entries.append(Entry(clip, start, end, row["text"], tuple(knowledge)))
        return cls(sorted(entries, key=lambda e: e.start), str(path))

    @classmethod
    def from_taskmem_pickle(
        cls, path: str | Path, interval: float = 10.0, allow: Iterable[str] = ()
    ) -> Memory:
        """An original TaskMem memory pickle; `allow` adds `module.Class` record types."""
        data = safe_unpickle(Path(path).read_bytes(), allow)
        return cls(_entries_from_pickle(data, interval, str(path)), str(path))

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

_SAFE_GLOBALS = {
    ("builtins", n)
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
        "bytes",
        "bytearray",
        "complex",
        "object",
    )
} | {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("copyreg", "_reconstructor"),
    ("datetime", "datetime"),
    ("datetime", "timedelta"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class PickledRecord:
    """Inert stand-in for an allow-listed record class: keeps its state, runs none of its code."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def _stand_in(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (PickledRecord,), {"_qualname": qualname})


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allow: set[str]) -> None:
        super().__init__(io.BytesIO(data))
        self.allow = allow

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if f"{module}.{name}" in self.allow:
            return _stand_in(f"{module}.{name}")
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from a pickle: only plain data and allow-listed "
            "record classes are loaded (pass allow=['module.Class'] for a file you created)"
        )


def safe_unpickle(data: bytes, allow: Iterable[str] = ()) -> Any:
    try:
        return _AllowListUnpickler(data, set(allow)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"not a readable memory pickle: {exc}") from exc


_TEXT_KEYS = ("text", "description", "episodic", "content", "memory")
_LIST_KEYS = ("clips", "entries", "episodic", "memory", "memories")


def _state(obj: Any) -> Any:
    return obj.__dict__ if isinstance(obj, PickledRecord) else obj


def _entries_from_pickle(data: Any, interval: float, where: str) -> list[Entry]:
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
        clip = int(clip_value)
        start = float(item.get("start", clip * interval))
        end = float(item.get("end", start + interval))
        knowledge = item.get("semantic") or item.get("knowledge") or ()
        entries.append(Entry(clip, start, end, text, tuple(str(k) for k in knowledge)))
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
