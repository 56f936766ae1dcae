"""`taskmem reproduce`: run the stage notebooks with papermill, in dependency order.

Floor 7. A profile sets every notebook's parameters:

- `smoke`: offline, minutes on 2 cores: generated media, the in-process `fake` model, sample
  benchmark rows. Everything it makes is marked as made by a fake model.
- `demo`: small real local models fetched on first use (a small VLM through `hf:`, Whisper
  tiny.en, dlib faces).
- `paper`: the paper's settings and the endpoints named in `$TASKMEM_API_CONFIG`; its figures go
  to `figures/` (the only figures kept in git).

Overrides (`-p key=value`) are checked against the notebook's parameters dataclass: an unknown
name is an error, unlike papermill's warning. Executed notebooks land in
`runs/reproduce/<profile>/`; a failing notebook stops the run with its name and failing cell.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError, TaskmemError
from taskmem_lab.lab.nbparams import NOTEBOOK_PARAMS, coerce, default_of

ORDER = ("01_audio", "02_faces", "03_episodic", "04_qa", "05_ablations", "06_paper")
PROFILES = ("smoke", "demo", "paper")


class NotebookFailed(TaskmemError):
    """A notebook raised; the message names the notebook and the failing cell."""


def notebooks_dir() -> Path:
    """The repository's `notebooks/` (next to the package in a source checkout)."""
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if here.is_dir():
        return here
    cwd = Path("notebooks")
    if cwd.is_dir():
        return cwd
    raise ConfigError("notebooks/ not found: run from a source checkout of taskmem_lab")


def parameters_cell(path: str | Path) -> dict[str, tuple[str, Any]]:
    """`name -> (type, default)` from the notebook's cell tagged `parameters`."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ConfigError(
            f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}"
        )
    source = "".join(cells[0]["source"])
    out: dict[str, tuple[str, Any]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            raise ConfigError(f"{path}: parameters cell may hold only 'name: type = value' lines")
        value = ast.literal_eval(node.value) if node.value is not None else None
        out[node.target.id] = (ast.unparse(node.annotation), value)
    return out


def check_notebook(name: str, path: str | Path) -> None:
    """The parameters cell matches the notebook's dataclass in names, types and defaults."""
    cls = NOTEBOOK_PARAMS[name]
    cell = parameters_cell(path)
    want = {f.name: (str(f.type), default_of(f)) for f in fields(cls)}
    if cell != want:
        missing = sorted(set(want) - set(cell))
        extra = sorted(set(cell) - set(want))
        differ = sorted(k for k in set(want) & set(cell) if want[k] != cell[k])
        raise ConfigError(
            f"{path}: parameters cell does not match {cls.__name__} "
            f"(missing {missing}, unknown {extra}, different {differ})"
        )


def _smoke(work: Path) -> dict[str, dict[str, Any]]:
    # Notebooks make their own generated sample media under `out/media` when `video` is "".
    common = {"out": str(work / "runs"), "figures": str(work / "figures")}
    return {
        "01_audio": {"end": 24.0, **common},
        "02_faces": {"end": 24.0, "face_fps": 2.0, **common},
        "03_episodic": {
            "model": "fake",
            "end": 24.0,
            "faces": True,
            "asr": True,
            "face_fps": 2.0,
            **common,
        },
        "04_qa": {
            "answerer": "fake",
            "judge": "fake",
            "memories": common["out"],
            "stand_in": True,
            "figures": common["figures"],
        },
        "05_ablations": {"models": ["fake"], "end": 24.0, "face_fps": 2.0, **common},
        "06_paper": {"results": str(work / "runs" / "results"), "figures": common["figures"]},
    }


def _demo(work: Path) -> dict[str, dict[str, Any]]:
    base = _smoke(work)
    vlm = "hf:HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    base["03_episodic"].update(model=vlm, faces=True, asr=True)
    base["04_qa"].update(answerer=vlm, judge=vlm)
    base["05_ablations"].update(models=[vlm], answerer=vlm, faces=[False, True], asr=[False, True])
    return base


def _paper(work: Path) -> dict[str, dict[str, Any]]:
    common = {"out": "runs", "figures": "figures"}
    return {
        "01_audio": {**common},
        "02_faces": {**common},
        "03_episodic": {"model": "openai:gpt-4o", "end": 0.0, "faces": True, "asr": True, **common},
        "04_qa": {"answerer": "openai:gpt-4o", "judge": "openai:gpt-4o", "figures": "figures"},
        "05_ablations": {"models": ["openai:gpt-4o"], "answerer": "openai:gpt-4o", **common},
        "06_paper": {"results": "runs/results", "figures": "figures"},
    }


_PROFILE_BUILDERS: dict[str, Callable[[Path], dict[str, dict[str, Any]]]] = {
    "smoke": _smoke,
    "demo": _demo,
    "paper": _paper,
}


def plan(
    profile: str, work: Path, only: Sequence[str] = (), overrides: dict[str, str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(notebook, validated parameters) in dependency order."""
    if profile not in _PROFILE_BUILDERS:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    unknown = sorted(set(only) - set(ORDER))
    if unknown:
        raise ConfigError(f"unknown notebook(s) {unknown}; known: {', '.join(ORDER)}")
    settings = _PROFILE_BUILDERS[profile](work)
    steps = []
    for name in ORDER:
        if only and name not in only:
            continue
        values = {**settings.get(name, {}), **_applicable(name, overrides or {})}
        params = coerce(NOTEBOOK_PARAMS[name], values)
        steps.append((name, asdict(params)))
    if overrides:
        used = {key for name, _ in steps for key in overrides if _applicable(name, {key: ""})}
        stray = sorted(set(overrides) - used)
        if stray:
            raise ConfigError(f"parameter(s) {stray} belong to none of the notebooks run")
    return steps


def _applicable(name: str, overrides: dict[str, str]) -> dict[str, str]:
    """Overrides `key=value` apply to every notebook that has `key`; `NB.key=value` to one."""
    names = {f.name for f in fields(NOTEBOOK_PARAMS[name])}
    out = {}
    for key, value in overrides.items():
        target, _, field_name = key.rpartition(".")
        if target and target != name:
            continue
        if field_name in names:
            out[field_name] = value
    return out


def reproduce(
    profile: str = "smoke",
    only: Sequence[str] = (),
    overrides: dict[str, str] | None = None,
    work: str | Path | None = None,
    progress: bool = True,
) -> list[Path]:
    """Execute the notebooks of a profile; returns the executed notebooks' paths."""
    try:
        import papermill
    except ImportError as exc:
        raise ConfigError(
            "papermill is not installed: pip install 'taskmem_lab[notebooks]'"
        ) from exc
    work_dir = Path(work) if work is not None else Path("runs") / "reproduce" / profile
    work_dir.mkdir(parents=True, exist_ok=True)
    steps = plan(profile, work_dir, only, overrides)
    source = notebooks_dir()
    done = []
    for name, params in steps:
        path = source / f"{name}.ipynb"
        check_notebook(name, path)
        out = work_dir / f"{name}.ipynb"
        if progress:
            print(f"[{profile}] {name} ...", flush=True)
        try:
            papermill.execute_notebook(
                str(path),
                str(out),
                parameters=params,
                cwd=str(source.parent),
                progress_bar=False,
                kernel_name="python3",
            )
        except papermill.PapermillExecutionError as exc:
            raise NotebookFailed(
                f"notebook {name}.ipynb failed in cell {exc.exec_count} "
                f"({exc.ename}: {str(exc.evalue).splitlines()[0] if exc.evalue else ''}); "
                f"executed copy: {out}"
            ) from exc
        done.append(out)
    return done
