"""The package's stages and the one direction its imports may run (docs/design.md, "Stages").

Every ``import`` in every module counts, including imports inside functions and under
``TYPE_CHECKING``: a lazy import against the order is still an arrow against it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

import taskmem_lab

PACKAGE = Path(taskmem_lab.__file__).resolve().parent

# Lower number = lower floor. A module may import its own floor or any floor below, never above.
FLOORS: dict[str, int] = {
    # foundation: records, parameters, paths, errors; imports nothing of the package but itself
    "errors": 0,
    "timefmt": 0,
    "prefetch": 0,
    "schema": 0,
    "paths": 0,
    "plugins": 0,
    "params": 0,
    "prompts": 0,
    "face_ids": 0,
    # media: decoding and stream layout
    "media": 1,
    # services every stage uses: model clients, run folders, resumable jobs, asking, benchmarks
    "backends": 2,
    "store": 2,
    "jobs": 2,
    "asking": 2,
    "replies": 2,
    "tasks": 2,
    "bench": 2,
    # test doubles (the fake model's server) and generated media, also used by the smoke profile
    "testing": 2,
    # perception
    "perception": 3,
    # memorization
    "memorize": 4,
    "memory": 4,
    # what uses memories
    "evaluation": 5,
    "training": 5,
    # one call per job: video to memory, memories to scores, a benchmark to its table
    "pipeline": 6,
    "bench_run": 6,
    # what the notebooks call
    "lab": 7,
    # the command line
    "cli": 8,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["taskmem_lab", *parts])


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Every taskmem_lab module that ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = _module_name(path)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("taskmem_lab."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = this.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("taskmem_lab"):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if _exists(sub) else mod)
    found.discard("taskmem_lab")
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


@cache
def _graph() -> dict[str, set[str]]:
    return {
        _module_name(p): _imports(p)
        for p in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def test_every_room_has_a_floor() -> None:
    rooms = {_room(m) for m in _graph()} - {""}
    assert rooms <= set(FLOORS), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOORS))}"


def test_imports_never_point_up() -> None:
    upward = []
    for module, targets in _graph().items():
        room = _room(module)
        if not room:
            continue
        for target in targets:
            other = _room(target)
            if other and other != room and FLOORS[other] > FLOORS[room]:
                upward.append(
                    f"{module} (floor {FLOORS[room]}) imports {target} (floor {FLOORS[other]})"
                )
    assert not upward, "imports against the stage order:\n" + "\n".join(sorted(upward))


def test_no_import_circles() -> None:
    graph = _graph()
    # Importing a submodule imports its package's __init__ too; __init__ re-exports are edges.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from taskmem_lab.media.video import Frame\n", {"taskmem_lab.media.video"}),
        ("from taskmem_lab.perception import faces\n", {"taskmem_lab.perception.faces"}),
        ("def f():\n    import taskmem_lab.cli\n", {"taskmem_lab.cli"}),
    ],
)
def test_import_reader_sees_every_form(tmp_path: Path, source: str, expected: set[str]) -> None:
    probe = PACKAGE / "media" / "_probe_for_test.py"
    probe.write_text(source, encoding="utf-8")
    try:
        assert _imports(probe) == expected
    finally:
        probe.unlink()
