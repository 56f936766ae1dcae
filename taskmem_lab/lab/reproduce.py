"""`taskmem reproduce`: run the stage notebooks with papermill, in dependency order.

Floor 7. A profile sets every notebook's parameters:

- `smoke`: offline, about a minute on 2 cores: generated media, the in-process `fake` model (the
  `fake:reader` rule answers the questions), sample benchmark rows. Everything it makes is marked
  as made by a fake model.
- `demo`: small real local models fetched on first use (a small VLM through `hf:`, Whisper
  tiny.en, dlib faces).
- `paper`: the paper's settings and the endpoints named in `$TASKMEM_API_CONFIG`; its figures go
  to the repository's `figures/` (the only figures kept in git).

Everything a run makes (executed notebooks, figures, tables, memories, results) goes under one
folder, `--work` (default `runs/reproduce/<profile>`), taken against the working directory and
passed to the notebooks as absolute paths; the kernels run in that folder, so nothing lands in
`notebooks/` or the repository (but `figures/` for `paper`). The kernels' own log lines go to
`<work>/kernels.log`; a smoke run's response cache is `<work>/cache.sqlite` (unless
`TASKMEM_CACHE` is set). Overrides (`-p key=value`) are
checked against the notebook's parameters dataclass: an unknown name is an error, unlike
papermill's warning. A failing notebook stops the run with its name and failing cell.
"""

from __future__ import annotations

import ast
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError, TaskmemError
from taskmem_lab.lab.nbparams import NOTEBOOK_PARAMS, coerce, default_of
from taskmem_lab.lab.report import REPRODUCE_ENV
from taskmem_lab.paths import repo_path

ORDER = ("01_audio", "02_faces", "03_episodic", "04_qa", "05_ablations", "06_paper", "07_adapt")
PROFILES = ("smoke", "demo", "paper")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class NotebookFailed(TaskmemError):
    """A notebook raised; the message names the notebook and the failing cell."""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def one_line(text: str, limit: int = 600) -> str:
    """`text` without terminal colour codes, its lines joined, cut to `limit` characters (a
    notebook's error, with the way out it names, on the console's one line)."""
    flat = " ".join(part.strip() for part in _ANSI.sub("", text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def notebooks_dir() -> Path:
    """The repository's `notebooks/` (the notebooks ship with the source checkout only)."""
    return repo_path("notebooks")


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
    # 01, 02 and 03 share one perception (faces and ASR, same face_fps and schedule): the stage
    # is cached by its settings, so 02 and 03 read back what 01 computed.
    runs, figures = str(work / "runs"), str(work / "figures")
    common = {"out": runs, "figures": figures}
    return {
        "01_audio": {"end": 24.0, **common},
        "02_faces": {"end": 24.0, **common},
        "03_episodic": {"model": "fake", "end": 24.0, **common},
        "04_qa": {
            "answerer": "fake:reader",
            "judge": "fake",
            "memories": runs,
            "stand_in": True,
            "second_judge": "fake:flip2",
            "figures": figures,
        },
        "05_ablations": {
            "models": "fake",
            "answerer": "fake:reader",
            "end": 24.0,
            "context_durations": "10,20",
            "faces": "false",
            "asr": "false,true",
            **common,
        },
        "06_paper": {"results": str(work / "runs" / "results"), "figures": figures},
        # the tiny memorizer trained at build time, fake judges and fake:reader (all labelled)
        "07_adapt": {"model": "", **common},
    }


def _demo(work: Path) -> dict[str, dict[str, Any]]:
    base = _smoke(work)
    vlm = "hf:HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    base["01_audio"].update(speaker_model=vlm)
    base["02_faces"].update(speaker_model=vlm)
    base["03_episodic"].update(model=vlm)
    base["04_qa"].update(answerer=vlm, judge=vlm, second_judge="")
    base["05_ablations"].update(models=[vlm], answerer=vlm, faces=[False, True], asr=[False, True])
    base["07_adapt"].update(model=vlm, judge=vlm, video_judge=vlm, answerer=vlm, layers=[20])
    return base


def _paper(work: Path) -> dict[str, dict[str, Any]]:
    runs, figures = str(work / "runs"), str(repo_path("figures"))
    common = {"out": runs, "figures": figures}
    model = "openai:gpt-4o"
    return {
        "01_audio": {"speaker_model": model, **common},
        "02_faces": {"speaker_model": model, **common},
        "03_episodic": {"model": model, "end": 0.0, **common},
        "04_qa": {
            "answerer": model,
            "judge": model,
            "memories": runs,
            "stand_in": False,
            "figures": figures,
        },
        "05_ablations": {"models": model, "answerer": model, **common},
        "06_paper": {"results": str(work / "runs" / "results"), "figures": figures},
        "07_adapt": {
            "model": "hf:Qwen/Qwen3-VL-30B-A3B-Instruct",
            "judge": model,
            "video_judge": model,
            "answerer": model,
            "layers": [22],
            "steps": 10,
            "lr": 1e-3,
            **common,
        },
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


def work_dir_for(profile: str, work: str | Path | None) -> Path:
    """The run's output folder, absolute (relative paths are taken against the working
    directory, as for any command-line path)."""
    chosen = Path(work).expanduser() if work is not None else Path("runs") / "reproduce" / profile
    return chosen.resolve()


@contextmanager
def _reproducing(profile: str, work: Path) -> Iterator[None]:
    """Environment of the kernels started meanwhile: marked as run by `taskmem reproduce` (no
    progress bars); a smoke run keeps its response cache under `work` unless `TASKMEM_CACHE`
    names one (fake replies cached elsewhere would outlive a change to the fake's rules)."""
    changes = {REPRODUCE_ENV: "1"}
    if profile == "smoke" and not os.environ.get("TASKMEM_CACHE"):
        changes["TASKMEM_CACHE"] = str(work / "cache.sqlite")
    before = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _kernel_manager_class(socket_dir: Path, log: Path) -> type:
    """A kernel manager that talks to the kernel over local IPC sockets in `socket_dir` (not
    TCP, which makes ipykernel print an encryption warning into the command's output) and sends
    the kernel process's own log lines to `log` (cell output is captured in the notebook)."""
    from jupyter_client.manager import AsyncKernelManager

    class IpcKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(socket_dir / "kernel")

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with open(log, "ab") as sink:
                kw["stdout"] = kw["stderr"] = sink
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return IpcKernelManager


def static_outputs(path: str | Path) -> None:
    """Make an executed notebook show its static views: drop saved widget views and widget
    state, which need a live kernel and otherwise hide the HTML a widget output also carries
    (nbconvert's HTML, GitHub). The live widget comes back on re-running the cell."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_VIEW in data and len(data) > 1:
                data.pop(WIDGET_VIEW)
    tmp = path.with_suffix(".ipynb.tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def reproduce(
    profile: str = "smoke",
    only: Sequence[str] = (),
    overrides: dict[str, str] | None = None,
    work: str | Path | None = None,
    progress: bool = True,
) -> list[Path]:
    """Execute the notebooks of a profile under `work`; returns the executed notebooks' paths."""
    try:
        import papermill
    except ImportError as exc:
        raise ConfigError(
            "papermill is not installed: pip install 'taskmem_lab[notebooks]'"
        ) from exc
    work_dir = work_dir_for(profile, work)
    steps = plan(profile, work_dir, only, overrides)
    source = notebooks_dir()
    for name, _ in steps:
        check_notebook(name, source / f"{name}.ipynb")
    work_dir.mkdir(parents=True, exist_ok=True)
    done = []
    with (
        _reproducing(profile, work_dir),
        tempfile.TemporaryDirectory(prefix="taskmem-kernel-") as sockets,
    ):
        manager = _kernel_manager_class(Path(sockets), work_dir / "kernels.log")
        for name, params in steps:
            out = work_dir / f"{name}.ipynb"
            if progress:
                print(f"[{profile}] {name} ...", flush=True)
            try:
                papermill.execute_notebook(
                    str(source / f"{name}.ipynb"),
                    str(out),
                    parameters=params,
                    cwd=str(work_dir),
                    progress_bar=False,
                    kernel_name="python3",
                    kernel_manager_class=manager,
                )
            except papermill.PapermillExecutionError as exc:
                first = one_line(str(exc.evalue or ""))
                raise NotebookFailed(
                    f"notebook {name}.ipynb failed in cell {exc.exec_count} "
                    f"({exc.ename}: {first}); executed copy: {out}"
                ) from exc
            finally:
                if out.is_file():
                    static_outputs(out)
            done.append(out)
    return done
