"""One call from a video to a stored memory, shared by the CLI, the notebooks and the ablations.

Floor 4: resolves the stream, the model (with the response cache), the tasks and the run
directory, then runs the streaming memorizer.
"""

from __future__ import annotations

from pathlib import Path

from taskmem_lab.backends import ChatModel, ResponseCache, make_model
from taskmem_lab.memorize import Perceiver, memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import cache_path, runs_root
from taskmem_lab.store import RunDir, memory_dir
from taskmem_lab.stream import load_stream
from taskmem_lab.tasks import load_tasks


def default_tag(model_spec: str) -> str:
    return model_spec.replace(":", "_").replace("/", "_").replace("#", "_")


def build_memory(
    video: str | Path,
    model: str | ChatModel,
    params: MemorizeParams | None = None,
    tag: str | None = None,
    out: str | Path | None = None,
    tasks: str | Path | None = None,
    perceiver: Perceiver | None = None,
    cache: bool | str | Path = True,
    progress: bool = True,
) -> RunDir:
    """Memorize `video` (a file or stream manifest) with `model` into `out/<video>/memory/<tag>/`.

    Resumes a run made with the same inputs; `cache` is True (default location), False, or a path.
    """
    if isinstance(model, str):
        store = None
        if cache:
            store = ResponseCache(cache_path() if cache is True else Path(cache))
        spec = model
        chat = make_model(model, store)
    else:
        spec, chat = model.model_id, model
    stream = load_stream(video)
    task_list = load_tasks(tasks) if tasks else []
    tag = tag or default_tag(spec)
    run_path = memory_dir(out or runs_root(), stream.stream_id, tag)
    return memorize(
        stream,
        chat,
        params or MemorizeParams(),
        str(run_path),
        tasks=task_list,
        tag=tag,
        perceiver=perceiver,
        progress=progress,
    )
