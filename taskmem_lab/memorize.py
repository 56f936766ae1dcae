"""The streaming loop: clip by clip, a VLM writes episodic (and optionally semantic) memory.

Floor 4. For clip k the model sees the window's frames, the entries already written inside the
window (as "preceding description", with local face ids), up to `max_tasks` tasks that arrived
before the clip's end, and an optional supplement. Nothing at or after the clip's end reaches its
request. Each finished clip is stored before the next starts; a restarted run skips finished
clips; a clip whose model call fails is stored as failed and stops the stream, so the next run
retries it before writing anything that would depend on it.

Perception plugs in through `Perceiver`: it receives the clip and its new-span frames and
returns the transcript and the global face ids it saw. With no perceiver the loop sends frames
and text only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import (
    ChatModel,
    Reply,
    Request,
    Sampling,
    TextPart,
    VideoPart,
    model_identity,
    sum_usage,
)
from taskmem_lab.errors import ModelError, ParseError
from taskmem_lab.face_ids import IdMap, globals_in
from taskmem_lab.media.stream import segments
from taskmem_lab.media.video import (
    Frame,
    StreamFrames,
    clip_schedule,
    passing_times,
    window_times,
)
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import file_sha256, file_stamp, safe_name
from taskmem_lab.perception.base import Perceiver, Perception
from taskmem_lab.prefetch import SharedPrefetch, shared_prefetch
from taskmem_lab.prompts import prompt_hash, render
from taskmem_lab.replies import parse_description, parse_knowledge
from taskmem_lab.schema import ClipRecord, ClipSpec, Stream, Task
from taskmem_lab.store import (
    FolderLock,
    RunDir,
    mark_stopped,
    open_run,
    recall_source_digests,
    utc_now,
    versions,
)
from taskmem_lab.tasks import arrived_before, tasks_digest
from taskmem_lab.timefmt import hms, span

log = logging.getLogger(__name__)
PROMPTS = ("episodic_system", "episodic_user", "episodic_instruction", "reask")
SEMANTIC_PROMPTS = ("semantic_system", "semantic_user")
TASKS_FILE = "tasks.json"  # the run's task stream, written beside the manifest
PREPARE_AHEAD = 2  # clips decoded ahead of the one waiting on the model (1 with perception)


@dataclass
class PreparedClip:
    """A clip's frames, ready before its model call starts."""

    clip: ClipSpec
    frames: list[Frame]
    new_frames: list[Frame]
    perception: Perception
    timings: dict[str, float]


def schedule_for(stream: Stream, params: MemorizeParams) -> list[ClipSpec]:
    return clip_schedule(
        segments(stream), params.interval, params.context_duration, params.start, params.end
    )


# --------------------------------------------------------------------------- request building


def preceding_text(entries: Sequence[ClipRecord], ids: IdMap) -> str:
    """The prompt's "preceding description" slot (training export and judges reuse it)."""
    if not entries:
        return "(none yet: this is the start of the window)"
    return "\n".join(f"[{span(e.start, e.end, True)}] {ids.to_local(e.episodic)}" for e in entries)


def _transcript_text(segments: Sequence[dict[str, Any]], ids: IdMap) -> str:
    if not segments:
        return ""
    lines = ["", "Speech in the window (speaker: words; the subtitles on the frames):"]
    for seg in segments:
        who = ids.to_local(str(seg.get("speaker") or "unknown"))
        lines.append(f"[{span(float(seg['start']), float(seg['end']), True)}] {who}: {seg['text']}")
    return "\n".join(lines) + "\n"


def _tasks_text(tasks: Sequence[Task]) -> str:
    if not tasks:
        return ""
    lines = ["", "Questions the agent was asked recently (examples of what it will be asked):"]
    for t in tasks:
        opts = f" Options: {' | '.join(t.options)}" if t.options else ""
        lines.append(f"- [{hms(t.time)}] {t.question}{opts}")
    return "\n".join(lines) + "\n"


def episodic_request(
    clip: ClipSpec,
    frames: Sequence[Frame],
    preceding: Sequence[ClipRecord],
    tasks: Sequence[Task],
    ids: IdMap,
    params: MemorizeParams,
    transcript: Sequence[dict[str, Any]] = (),
) -> Request:
    """The episodic request for one clip; a pure function of its inputs (byte-identical re-runs)."""
    times = dict(
        window_start=hms(clip.window_start, True),
        window_end=hms(clip.end, True),
        new_start=hms(clip.start, True),
        new_end=hms(clip.end, True),
    )
    supplement = (
        f"\nAdditional instructions:\n{params.supplement_prompt}\n"
        if params.supplement_prompt
        else ""
    )
    user = render(
        "episodic_user",
        preceding=preceding_text(preceding, ids),
        tasks=_transcript_text(transcript, ids) + _tasks_text(tasks),
        supplement=supplement,
        **times,
    )
    parts = (
        TextPart(user),
        VideoPart(tuple(frames), params.frame_fps, params.jpeg_quality),
        TextPart(
            render("episodic_instruction", new_start=times["new_start"], new_end=times["new_end"])
        ),
    )
    return Request.chat(
        render("episodic_system"),
        parts,
        Sampling(temperature=params.temperature, max_tokens=params.max_tokens),
        "episodic",
    )


def semantic_request(
    clip: ClipSpec, frames: Sequence[Frame], description: str, params: MemorizeParams
) -> Request:
    user = render(
        "semantic_user",
        new_start=hms(clip.start, True),
        new_end=hms(clip.end, True),
        description=description,
    )
    parts = (VideoPart(tuple(frames), params.frame_fps, params.jpeg_quality), TextPart(user))
    return Request.chat(
        render("semantic_system"),
        parts,
        Sampling(temperature=params.temperature, max_tokens=params.max_tokens),
        "semantic",
    )


# --------------------------------------------------------------------------- the loop


def prepare_clip(
    frames: StreamFrames,
    clip: ClipSpec,
    params: MemorizeParams,
    perceiver: Perceiver | None,
    schedule: Sequence[ClipSpec] = (),
) -> PreparedClip:
    """Decode and encode the window's frames and run perception (clips in stream order).

    With the stream's `schedule`, the frames later windows show from this clip's new span are
    decoded too and kept in `frames`, so no later window seeks back for them.
    """
    t0 = time.perf_counter()
    frames.evict_before(clip.window_start)
    times = window_times(clip, params.frame_fps, params.max_frames)
    if schedule:
        ahead = passing_times(schedule, clip.index, params.frame_fps, params.max_frames)
        frames.window(sorted(set(times) | set(ahead)))
    window = frames.window(times)
    t1 = time.perf_counter()
    for f in window:
        f.jpeg(params.jpeg_quality)
    t2 = time.perf_counter()
    perception = perceiver.perceive(clip, window) if perceiver is not None else Perception()
    if perception.frames is not None:
        window = perception.frames
    new = [f for f in window if f.time >= clip.start]
    t3 = time.perf_counter()
    timings = {"decode_s": t1 - t0, "encode_s": t2 - t1}
    if perceiver is not None:
        timings["perception_s"] = t3 - t2
    return PreparedClip(clip, window, new, perception, timings)


@dataclass
class ClipInputs:
    """What clip k's episodic request is built from, and the request itself."""

    preceding: list[ClipRecord]
    tasks: list[Task]
    ids: IdMap
    request: Request


def clip_inputs(
    prepared: PreparedClip,
    done: dict[int, ClipRecord],
    tasks: Sequence[Task],
    params: MemorizeParams,
) -> ClipInputs:
    """Preceding entries, shown tasks, local ids and the request for a prepared clip.

    The one place that chooses them: the memorizer and the replay of a stored run
    (`taskmem_lab.training.replay`) both call it, so a replayed request is the request that was sent.
    """
    clip = prepared.clip
    preceding = [
        r for i, r in sorted(done.items()) if i < clip.index and r.start >= clip.window_start - 1e-6
    ]
    shown = arrived_before(tasks, clip.end, params.max_tasks)
    # Perception's window order first: the annotated frames were numbered with it.
    order = prepared.perception.window_ids + [g for r in preceding for g in globals_in(r.episodic)]
    ids = IdMap.from_order(order)
    request = episodic_request(
        clip, prepared.frames, preceding, shown, ids, params, prepared.perception.window_transcript
    )
    return ClipInputs(preceding, shown, ids, request)


def memorize_clip(
    model: ChatModel,
    prepared: PreparedClip,
    done: dict[int, ClipRecord],
    tasks: Sequence[Task],
    params: MemorizeParams,
) -> ClipRecord:
    """Write one clip's memory; never raises for a model failure, returns a failed record."""
    clip = prepared.clip
    timings = dict(prepared.timings)
    t0 = time.perf_counter()
    inputs = clip_inputs(prepared, done, tasks, params)
    shown, ids, request = inputs.tasks, inputs.ids, inputs.request
    base = ClipRecord(
        clip=clip.index,
        start=clip.start,
        end=clip.end,
        window=(clip.window_start, clip.end),
        status="failed",
        transcript=prepared.perception.transcript,
        identities=list(prepared.perception.identities),
        tasks=[t.task_id for t in shown],
        model=model.model_id,
        endpoint=model_identity(model),
        request_hash=request.fingerprint(model.model_id)[:16],
    )
    timings["build_s"] = time.perf_counter() - t0
    replies: list[Reply] = []
    try:
        t1 = time.perf_counter()
        asked = ask(model, request, parse_description, '{"description": "..."}', params.reasks)
        replies += asked.replies
        episodic, unknown = ids.to_global(asked.value)
        base.warnings += [f"re-asked: {p}" for p in asked.problems]
        base.warnings += [f"unknown face id {u} in reply" for u in unknown]
        if params.semantic:
            sem = ask(
                model,
                semantic_request(clip, prepared.new_frames, ids.to_local(episodic), params),
                parse_knowledge,
                '{"knowledge": ["..."]}',
                params.reasks,
            )
            replies += sem.replies
            base.semantic = [ids.to_global(s)[0] for s in sem.value]
        timings["model_s"] = time.perf_counter() - t1
        base.status = "ok"
        base.episodic = episodic
    except (ModelError, ParseError) as exc:
        base.error = f"{type(exc).__name__}: {exc}"
        replies += getattr(exc, "replies", [])
    last = replies[-1] if replies else None
    base.raw_reply = last.text if last else ""
    base.reasoning = "\n".join(r.reasoning for r in replies if r.reasoning)
    base.usage = sum_usage(r.usage for r in replies)
    base.latency_s = round(sum(r.latency_s for r in replies), 4)
    base.attempts = len(replies)
    base.fake = any(r.fake for r in replies)
    base.timings = {k: round(v, 5) for k, v in timings.items()}
    return base


def run_manifest(
    stream: Stream, model_id: str, params: MemorizeParams, tasks: Sequence[Task], tag: str
) -> dict[str, Any]:
    prompts = PROMPTS + (SEMANTIC_PROMPTS if params.semantic else ())
    return {
        "kind": "memory",
        "tag": tag,
        "stream_id": stream.stream_id,
        "model": model_id,
        "endpoint": None,
        "params": params.to_json(),
        "source": [
            {
                "path": f.path,
                "start": f.start,
                "duration": round(f.duration, 6),
                # the stamp lets a resume trust the digest below without reading the file
                **file_stamp(f.path),
                "sha256": file_sha256(f.path),
                # only a time range of its file records an offset (older manifests stay equal)
                **({"offset": f.offset} if f.offset else {}),
            }
            for f in stream.files
        ],
        "prompts": {name: prompt_hash(name) for name in prompts},
        "tasks": tasks_digest(tasks),
        "perception": None,
        "versions": versions(),
        "created": utc_now(),
        "updated": utc_now(),
    }


def planned_manifest(
    stream: Stream,
    model: ChatModel,
    params: MemorizeParams,
    tasks: Sequence[Task] = (),
    tag: str = "default",
    perceiver: Perceiver | None = None,
) -> dict[str, Any]:
    """The manifest of the run `memorize` would make: what a stored run is compared with
    (`store.open_run`, and `taskmem bench` before it skips a complete stream)."""
    safe_name(stream.stream_id, "stream id")
    safe_name(tag, "tag")
    manifest = run_manifest(stream, model.model_id, params, tasks, tag)
    manifest["endpoint"] = model_identity(model)
    manifest["perception"] = getattr(perceiver, "manifest_entry", None)
    return manifest


def memorize(
    stream: Stream,
    model: ChatModel,
    params: MemorizeParams,
    run_path: str,
    tasks: Sequence[Task] = (),
    tag: str = "default",
    perceiver: Perceiver | None = None,
    progress: bool = True,
    allow_model_change: bool = False,
    decoder: str = "pyav",
) -> RunDir:
    """Memorize a stream into `run_path`, resuming a run made with the same inputs.

    One process at a time: the run folder is locked (`store.FolderLock`) for the whole call.
    Resuming with another model (or another server behind the same endpoint name) is refused
    unless `allow_model_change`, which records the switch in the manifest. `decoder` picks the
    frame reader (`media.video.open_reader`): the default forward PyAV reader never decodes
    ahead while the stream waits on the model, and is the reader `training.replay` rebuilds
    requests with; "auto" or "decord" take decord's batch reader.
    Raises `ModelError`/`ParseError` after storing the failed clip; re-running resumes there.
    """
    recall_source_digests(run_path)
    manifest = planned_manifest(stream, model, params, tasks, tag, perceiver)
    with FolderLock(run_path, "memorize run"):
        run = open_run(run_path, manifest, allow_model_change)
        try:
            return _memorize_locked(run, stream, model, params, tasks, perceiver, progress, decoder)
        except BaseException as exc:
            # Never leave `running` behind a process that stopped.
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            mark_stopped(run.manifest_path, status)
            raise


def _memorize_locked(
    run: RunDir,
    stream: Stream,
    model: ChatModel,
    params: MemorizeParams,
    tasks: Sequence[Task],
    perceiver: Perceiver | None,
    progress: bool,
    decoder: str,
) -> RunDir:
    if perceiver is not None and hasattr(perceiver, "path"):
        run.update_manifest(perception_path=str(perceiver.path))
    if tasks and not run.path.joinpath(TASKS_FILE).exists():
        # The task stream as used, so a stored run can be replayed (`taskmem export-training`).
        rows = [
            {"id": t.task_id, "question": t.question, "time": t.time, "options": list(t.options)}
            for t in tasks
        ]
        run.write_json(TASKS_FILE, rows)
    schedule = schedule_for(stream, params)
    done = run.finished()
    todo = [c for c in schedule if c.index not in done]
    run.update_manifest(clips_total=len(schedule), clips_done=len(done), updated=utc_now())
    frames = StreamFrames(stream, params.max_side, decoder)
    bar = tqdm(
        total=len(schedule),
        initial=len(done),
        unit="clip",
        disable=not progress,
        desc=stream.stream_id,
    )
    failure: ClipRecord | None = None
    # Decode the next clips while the current one waits for the model, on the process's
    # prepare threads (shared by every stream, nearest need first). A perceiver gets a thread
    # of its own: its step may wait on a model (speakers) and would hold a shared thread. A
    # perceived clip holds annotated copies of its window and costs far more CPU than it
    # waits: one ahead.
    own = None if perceiver is None else SharedPrefetch(1, f"taskmem-perceive-{stream.stream_id}")
    depth = PREPARE_AHEAD if perceiver is None else 1
    try:
        with (own or shared_prefetch()).sequence(
            lambda c: prepare_clip(frames, c, params, perceiver, schedule), todo, depth
        ) as ahead:
            for clip, prepared in zip(todo, ahead, strict=False):
                record = memorize_clip(model, prepared, done, tasks, params)
                run.append(record)
                if not record.ok:
                    failure = record
                    break
                done[clip.index] = record
                bar.update(1)
    finally:
        if own is not None:
            own.close()
    bar.close()
    frames.close()
    status = "failed" if failure else "complete"
    run.update_manifest(status=status, clips_done=len(done), updated=utc_now())
    if hasattr(perceiver, "identities_json"):
        run.write_json("identities.json", perceiver.identities_json())  # type: ignore[union-attr]
    elif not run.path.joinpath("identities.json").exists():
        run.write_json("identities.json", {"schema": 1, "characters": {}})
    if failure is not None:
        raise ModelError(
            f"clip {failure.clip} ({span(failure.start, failure.end)}) failed: {failure.error}. "
            f"{len(done)}/{len(schedule)} clips are stored in {run.path}; run again to resume."
        )
    return run
