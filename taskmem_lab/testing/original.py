"""Pickles in the original TaskMem layout, for tests: records under the original's class paths.

The original scripts pickle `memory.long_term_memory.LongTermMemory` objects (an `interval`, an
`episodic.description` dict and a `semantic.knowledge` dict keyed by the clip index as a string,
and face/voice `Character`s). `fake_original_classes()` registers look-alike record classes under
that module path for the duration of a `with` block, so `pickle` writes exactly the class names
the original files carry; loading them back never needs these classes (the safe unpickler builds
inert stand-ins).
"""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskmem_lab.params import MemorizeParams

MODULE = "memory.long_term_memory"


@contextmanager
def fake_original_classes() -> Iterator[types.ModuleType]:
    """A temporary `memory.long_term_memory` module with the original's four record classes."""
    pkg = types.ModuleType("memory")
    mod = types.ModuleType(MODULE)

    class Character:
        def __init__(self, node_id: int) -> None:
            self.id = node_id
            self.features: dict[str, list[Any]] = {"face": [], "voice": []}

    class Semantic:
        def __init__(self) -> None:
            self.node_id = 0
            self.characters: dict[int, Character] = {}
            self.knowledge: dict[str, list[str]] = {}

    class Episodic:
        def __init__(self) -> None:
            self.description: dict[str, str] = {}

    class LongTermMemory:
        def __init__(self, interval: float) -> None:
            self.interval = interval
            self.semantic = Semantic()
            self.episodic = Episodic()

    for cls in (Character, Semantic, Episodic, LongTermMemory):
        cls.__module__ = MODULE
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    pkg.long_term_memory = mod  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("memory", MODULE)}
    sys.modules["memory"], sys.modules[MODULE] = pkg, mod
    try:
        yield mod
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def write_original_memory(
    path: str | Path,
    texts: Sequence[str],
    interval: float = MemorizeParams.interval,
    knowledge: Sequence[Sequence[str]] | None = None,
    protocol: int = pickle.DEFAULT_PROTOCOL,
) -> Path:
    """Pickle a `LongTermMemory` with one clip per text, as the original scripts save it."""
    path = Path(path)
    with fake_original_classes() as mod:
        memory = mod.LongTermMemory(interval)
        for k, text in enumerate(texts):
            memory.episodic.description[str(k)] = text
            memory.semantic.knowledge[str(k)] = list(knowledge[k]) if knowledge else []
        memory.semantic.characters[1] = mod.Character(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(memory, protocol=protocol))
    return path
