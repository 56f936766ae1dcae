"""One call from a video to a stored memory, shared by the CLI, the notebooks and the ablations.

Floor 6: resolves the stream, the model (with the response cache), the tasks and the run
directory, then runs the streaming memorizer. `run_benchmark` (from `bench_run`) takes a whole
benchmark from its videos to its table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from taskmem_lab.backends import ChatModel, ResponseCache, make_model, open_cache
from taskmem_lab.bench_run import run_benchmark
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import default_tag, runs_root
from taskmem_lab.store import RunDir, memory_dir
from taskmem_lab.tasks import load_tasks

if TYPE_CHECKING:
    from taskmem_lab.evaluation.evaluate import EvalParams, EvalResult
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.perception.base import Perception
    from taskmem_lab.perception.params import PerceptionParams
    from taskmem_lab.perception.perceiver import StreamPerceiver
    from taskmem_lab.schema import ClipSpec, Stream


def build_memory(
    video: str | Path,
    model: str | ChatModel,
    params: MemorizeParams | None = None,
    tag: str | None = None,
    out: str | Path | None = None,
    tasks: str | Path | None = None,
    perception: PerceptionParams | None = None,
    cache: bool | str | Path = True,
    progress: bool = True,
) -> RunDir:
    """Memorize `video` (a file or stream manifest) with `model` into `out/<video>/memory/<tag>/`.

    With `perception`, faces and speech are perceived first (cached under
    `out/<video>/perception/<hash>/`, shared by every memorizer with the same settings); speakers
    are matched by `perception.speaker_model`, else by the memorizer's model. Resumes a run made
    with the same inputs; `cache` is True (default location), False, or a path.
    """
    store = open_cache(cache)
    if isinstance(model, str):
        spec, chat = model, make_model(model, store)
    else:
        spec, chat = model.model_id, model
    params = params or MemorizeParams()
    stream = load_stream(video)
    task_list = load_tasks(tasks) if tasks else []
    tag = tag or default_tag(spec)
    root = Path(out) if out is not None else runs_root()
    perceiver = make_perceiver(stream, perception, params, root, chat, store)
    try:
        return memorize(
            stream,
            chat,
            params,
            str(memory_dir(root, stream.stream_id, tag)),
            tasks=task_list,
            tag=tag,
            perceiver=perceiver,
            progress=progress,
        )
    finally:
        if perceiver is not None:
            perceiver.close()


def make_perceiver(
    stream: Stream,
    perception: PerceptionParams | None,
    params: MemorizeParams,
    root: Path,
    model: ChatModel,
    store: ResponseCache | None,
) -> StreamPerceiver | None:
    """The stream's perceiver, or None when perception is off."""
    if perception is None or not perception.enabled:
        return None
    from taskmem_lab.perception.perceiver import StreamPerceiver

    speaker = make_model(perception.speaker_model, store) if perception.speaker_model else model
    return StreamPerceiver(stream, perception, params, root, speaker)


def eval_dir(
    benchmark: str,
    tag: str | None,
    memories: str | Path,
    answerer: str,
    qa: QAParams,
    judge: str | None,
) -> Path:
    """Default results folder, beside the memories: `<memories>/eval/<benchmark>/<tag>__<answerer>__<context>__<hash>`."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([qa.to_json(), judge], sort_keys=True).encode()).hexdigest()[
        :6
    ]
    name = f"{tag or Path(memories).name}__{answerer}__{qa.context}"
    return Path(memories) / "eval" / benchmark / f"{default_tag(name)}__{digest}"


def run_eval(
    benchmark: str,
    source: str | Path | None,
    memories: str | Path,
    answerer: str,
    qa: QAParams,
    tag: str | None = None,
    judge: str | None = None,
    params: EvalParams | None = None,
    out: str | Path | None = None,
    cache: bool | str | Path = True,
    prices: dict[str, tuple[float, float]] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Answer a benchmark's questions from the memories under `memories` and score them."""
    from taskmem_lab.bench.hub import load_benchmark
    from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate

    store = open_cache(cache)
    records = load_benchmark(benchmark, source)
    return evaluate(
        records,
        MemoryLocator(Path(memories), tag),
        make_model(answerer, store),
        make_model(judge, store) if judge else None,
        qa,
        Path(out) if out else eval_dir(benchmark, tag, memories, answerer, qa, judge),
        params or EvalParams(),
        prices,
        progress=progress,
    )


def perceive_stream(
    video: str | Path,
    perception: PerceptionParams,
    params: MemorizeParams | None = None,
    out: str | Path | None = None,
    cache: bool | str | Path = True,
    progress: bool = True,
) -> tuple[StreamPerceiver, list[tuple[ClipSpec, Perception]]]:
    """Run (or read back) the perception stage for every clip of a stream, without memorizing.

    Returns the perceiver (its `path` holds the records and the identity gallery) and each
    clip's perception. Speakers are matched by `perception.speaker_model` when it is set.
    """
    from tqdm.auto import tqdm

    from taskmem_lab.media.video import StreamFrames
    from taskmem_lab.memorize import prepare_clip, schedule_for
    from taskmem_lab.perception.perceiver import StreamPerceiver

    params = params or MemorizeParams()
    store = open_cache(cache)
    stream = load_stream(video)
    speaker = make_model(perception.speaker_model, store) if perception.speaker_model else None
    root = Path(out) if out is not None else runs_root()
    perceiver = StreamPerceiver(stream, perception, params, root, speaker)
    frames = StreamFrames(stream, params.max_side)
    seen = []
    try:
        for clip in tqdm(
            schedule_for(stream, params), unit="clip", disable=not progress, desc=stream.stream_id
        ):
            seen.append((clip, prepare_clip(frames, clip, params, perceiver).perception))
    finally:
        frames.close()
        perceiver.close()
    return perceiver, seen


__all__ = [
    "build_memory",
    "default_tag",
    "eval_dir",
    "make_perceiver",
    "perceive_stream",
    "run_benchmark",
    "run_eval",
]
