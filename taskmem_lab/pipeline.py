"""One call from a video to a stored memory, shared by the CLI, the notebooks and the ablations.

Floor 6: resolves the stream, the model (with the response cache), the tasks and the run
directory, then runs the streaming memorizer. `run_benchmark` (from `bench_run`) takes a whole
benchmark from its videos to its table.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmem_lab.backends import ChatModel, ResponseCache, make_model, open_cache
from taskmem_lab.bench_run import run_benchmark
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import default_tag, runs_root
from taskmem_lab.store import RunDir, memory_dir, recall_source_digests
from taskmem_lab.tasks import load_tasks

if TYPE_CHECKING:
    from taskmem_lab.bench.record import QARecord
    from taskmem_lab.evaluation.agreement import AgreementParams, AgreementResult
    from taskmem_lab.evaluation.evaluate import EvalParams, EvalResult
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.perception.base import Perception
    from taskmem_lab.perception.params import PerceptionParams
    from taskmem_lab.perception.perceiver import StreamPerceiver
    from taskmem_lab.schema import ClipSpec, Stream
    from taskmem_lab.training.adapt import AdaptParams


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
    allow_model_change: bool = False,
) -> RunDir:
    """Memorize `video` (a file or stream manifest) with `model` into `out/<video>/memory/<tag>/`.

    With `perception`, faces and speech are perceived first (cached under
    `out/<video>/perception/<hash>/`, shared by every memorizer with the same settings); speakers
    are matched by `perception.speaker_model`, else by the memorizer's model. Resumes a run made
    with the same inputs (another model or server only with `allow_model_change`, recorded);
    `cache` is True (default location), False, or a path.
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
    run_path = str(memory_dir(root, stream.stream_id, tag))
    recall_source_digests(run_path)  # before perception hashes the sources
    perceiver = make_perceiver(stream, perception, params, root, chat, store)
    try:
        return memorize(
            stream,
            chat,
            params,
            run_path,
            tasks=task_list,
            tag=tag,
            perceiver=perceiver,
            progress=progress,
            allow_model_change=allow_model_change,
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
    qa: QAParams | None = None,
    tag: str | None = None,
    judge: str | None = None,
    params: EvalParams | None = None,
    out: str | Path | None = None,
    cache: bool | str | Path = True,
    prices: dict[str, tuple[float, float]] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Answer a benchmark's questions from the memories under `memories` and score them
    (`qa` None: the default answering settings, `QAParams()`)."""
    from taskmem_lab.bench.hub import load_benchmark
    from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
    from taskmem_lab.evaluation.qa import QAParams

    qa = qa or QAParams()

    store = open_cache(cache)
    records = load_benchmark(benchmark, source)
    folder = Path(out) if out else eval_dir(benchmark, tag, memories, answerer, qa, judge)
    return evaluate(
        records,
        MemoryLocator(Path(memories), tag),
        make_model(answerer, store),
        make_model(judge, store) if judge else None,
        qa,
        folder,
        params or EvalParams(),
        prices,
        progress=progress,
    )


def run_judge_agreement(
    results: str | Path,
    judge: str,
    params: AgreementParams | None = None,
    out: str | Path | None = None,
    cache: bool | str | Path = True,
    prices: dict[str, tuple[float, float]] | None = None,
    progress: bool = True,
) -> AgreementResult:
    """Re-judge a finished free-form evaluation (`results`) with the judge `judge` and write
    their agreement (`evaluation.agreement`)."""
    from taskmem_lab.evaluation.agreement import AgreementParams, judge_agreement

    store = open_cache(cache)
    return judge_agreement(
        results, make_model(judge, store), params or AgreementParams(), out, prices, progress
    )


def perceive_stream(
    video: str | Path,
    perception: PerceptionParams,
    params: MemorizeParams | None = None,
    out: str | Path | None = None,
    cache: bool | str | Path = True,
    progress: bool = True,
    keep_frames: bool = False,
) -> tuple[StreamPerceiver, list[tuple[ClipSpec, Perception]]]:
    """Run (or read back) the perception stage for every clip of a stream, without memorizing.

    Returns the perceiver (its `path` holds the records and the identity gallery) and each
    clip's perception. Speakers are matched by `perception.speaker_model` when it is set. The
    annotated window frames are dropped unless `keep_frames` (they would hold a window of
    images per clip: gigabytes for a long video).
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
        schedule = schedule_for(stream, params)
        for clip in tqdm(schedule, unit="clip", disable=not progress, desc=stream.stream_id):
            perception_of_clip = prepare_clip(frames, clip, params, perceiver, schedule).perception
            if not keep_frames:
                perception_of_clip.frames = None
            seen.append((clip, perception_of_clip))
    finally:
        frames.close()
        perceiver.close()
    return perceiver, seen


def ablate(
    video: str | Path,
    questions: Sequence[QARecord],
    models: Sequence[str],
    intervals: Sequence[float],
    context_durations: Sequence[float],
    faces: Sequence[bool] = (False,),
    asr: Sequence[bool] = (False,),
    tasks: Sequence[bool] = (False,),
    answerer: str = "fake",
    out: str | Path | None = None,
    end: float | None = None,
    face_fps: float = 2.0,
    task_file: str | Path | None = None,
    n_boot: int = 200,
    cache: bool | str | Path = True,
) -> list[dict[str, Any]]:
    """Memorize `video` once per setting of the grid and score each memory on `questions`.

    The grid is the product of memorizer models, clip intervals, context durations and the
    face / ASR / task-stream switches (a context shorter than its interval is skipped). Each
    setting gets its own memory tag (`abl_...`) under `out`, so a rerun resumes; perception is
    shared between settings with the same schedule. Returns one row per setting: the switches,
    memory length (completion tokens written), cost (all tokens spent) and the overall accuracy,
    coverage and precision as fractions (precision None when nothing was answered).
    """
    from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.perception.params import PerceptionChoices
    from taskmem_lab.perception.perceiver import perception_params

    root = Path(out) if out is not None else runs_root()
    store = open_cache(cache)
    chat = make_model(answerer, store)
    rows = []
    grid = itertools.product(models, intervals, context_durations, faces, asr, tasks)
    for model, interval, context, use_faces, use_asr, use_tasks in grid:
        if context < interval:
            continue
        switches = f"{int(use_faces)}{int(use_asr)}{int(use_tasks)}"
        tag = default_tag(f"abl_{model}_{interval:g}_{context:g}_{switches}")
        run = build_memory(
            video,
            model,
            MemorizeParams(interval=interval, context_duration=context, end=end or None),
            tag=tag,
            out=root,
            tasks=task_file if use_tasks and task_file else None,
            perception=perception_params(use_faces, use_asr, PerceptionChoices(face_fps=face_fps)),
            cache=cache,
            progress=False,
        )
        records = list(run.finished().values())
        result = evaluate(
            list(questions),
            MemoryLocator(root, tag),
            chat,
            None,
            QAParams(),
            root / "ablations" / tag,
            EvalParams(n_boot=n_boot),
            progress=False,
        )
        overall = next(r for r in result.table if r.group == "all")
        rows.append(
            {
                "model": model,
                "interval": interval,
                "context": context,
                "faces": use_faces,
                "asr": use_asr,
                "tasks": use_tasks,
                "tag": tag,
                "memory_tokens": sum(r.usage.get("completion_tokens", 0) for r in records),
                "cost_tokens": sum(sum(r.usage.values()) for r in records),
                "accuracy": overall.accuracy,
                "coverage": overall.coverage,
                "precision": overall.precision,
            }
        )
    return rows


def steered_spec(spec: str, steer_file: str | Path, scale: float = 1.0) -> str:
    """`spec` with `steer=FILE` (and `steer_scale`) added: the `hf:` spec of the adapted model."""
    from urllib.parse import quote

    options = f"steer={quote(str(Path(steer_file).resolve()), safe='/')}"
    if scale != 1.0:
        options += f"&steer_scale={scale:g}"
    return f"{spec}{'&' if '?' in spec else '?'}{options}"


def adapt(
    model: str,
    pairs: str | Path,
    out: str | Path | None = None,
    params: AdaptParams | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a steer adapter by DPO on preference pairs (`taskmem adapt`, notebook 07_adapt).

    `model` is the frozen base (`hf:DIR` or `hf:HUB_ID`); `pairs` a pair file or the folder
    `taskmem pairs` wrote; `out` defaults to `<pairs folder>/adapt`. A killed run resumes in the
    same folder. Returns the summary with `steered_spec`, the spec that memorizes with the steer.
    """
    from taskmem_lab.training.adapt import AdaptParams
    from taskmem_lab.training.adapt import adapt as train
    from taskmem_lab.training.preference import pair_file

    params = params or AdaptParams()
    root = Path(out) if out is not None else pair_file(pairs).parent / "adapt"
    summary = train(model, pairs, root, params, progress)
    return {**summary, "steered_spec": steered_spec(model, summary["steer_file"])}


__all__ = [
    "adapt",
    "ablate",
    "build_memory",
    "default_tag",
    "eval_dir",
    "make_perceiver",
    "perceive_stream",
    "run_benchmark",
    "run_eval",
    "run_judge_agreement",
    "steered_spec",
]
