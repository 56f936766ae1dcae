"""A whole benchmark in one call: plan its streams, memorize them side by side, evaluate.

Floor 6 (beside `pipeline`, which re-exports `run_benchmark`). Streams run concurrently, clips
within a stream in order (the memorizer already decodes and perceives clip k+1 while clip k waits
on the model). Two engines run the streams:

- `local`: a thread pool in this process sharing one model client (its endpoint semaphores bound
  the calls in flight); needs nothing beyond the core install.
- `ray`: each stream is a Ray task (`taskmem_lab[ray]`), retried by Ray when its worker dies,
  writing into the shared runs root; the driver only plans, tracks and evaluates.

Resume is the run folder's: a stream whose run is complete is skipped when it was made with the
same inputs (`memorize`'s identity check: model and endpoint, parameters, tasks, perception,
prompts and the sources' content; nothing is decoded), and an unfinished one continues after its
last stored clip, whichever node wrote it. A complete run made otherwise is refused as
`memorize` refuses it, naming what differs (a model switch is taken with `allow_model_change`). A failing
stream is recorded (with its error) and the others go on; evaluation waits until every planned
stream is complete, so no question is scored against a partial memory.

One progress display tails every stream's `clips.jsonl` (so it works for both engines): clips
done / total, streams done, calls in flight, ETA, tokens and cost so far.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from taskmem_lab.backends import ChatModel, make_model, open_cache
from taskmem_lab.backends.base import Reply, Request
from taskmem_lab.bench.plan import (
    BenchPlan,
    KnownFiles,
    estimate_cost,
    plan_streams,
    write_sources,
)
from taskmem_lab.errors import ConfigError, TaskmemError
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize, planned_manifest
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import default_tag, runs_root
from taskmem_lab.store import (
    CLIPS,
    MANIFEST,
    FolderLock,
    RunDir,
    atomic_write_json,
    identity_changes,
    memory_dir,
    recall_source_digests,
    utc_now,
)
from taskmem_lab.tasks import load_tasks

if TYPE_CHECKING:
    from taskmem_lab.evaluation.evaluate import EvalParams, EvalResult
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.media.stream import Stream
    from taskmem_lab.perception.base import Perceiver
    from taskmem_lab.perception.perceiver import PerceptionParams
    from taskmem_lab.schema import Task

log = logging.getLogger(__name__)
ENGINES = ("local", "ray")
DEFAULT_STREAMS = 4  # when the model states no endpoint concurrency
REFRESH_S = 0.5  # the progress line reads the streams' stored records at most this often
KNOWN_FILES = "files.json"  # videos' lengths by stamp, under bench/<benchmark>/ (`KnownFiles`)


# --------------------------------------------------------------------------- one stream


@dataclass(frozen=True)
class StreamJob:
    """Everything a worker needs to memorize one stream (plain data: it travels to Ray workers)."""

    stream_id: str
    source: str
    model: str
    params: MemorizeParams
    tag: str
    root: str
    tasks: str | None = None
    perception: PerceptionParams | None = None
    cache: bool | str = True
    decoder: str = "pyav"
    allow_model_change: bool = False

    @property
    def run_path(self) -> Path:
        return memory_dir(self.root, self.stream_id, self.tag)


@dataclass
class StreamOutcome:
    """How one stream ended in this run."""

    stream_id: str
    status: str  # "complete" | "skipped" (complete before this run) | "failed"
    clips_done: int = 0
    clips_total: int = 0
    error: str = ""
    seconds: float = 0.0


def finished_run(path: Path) -> tuple[bool, int, int]:
    """(complete?, clips done, clips total) of a run folder, from its manifest alone."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # unreadable: the run is redone (and refused)
        return False, 0, 0
    done, total = int(data.get("clips_done") or 0), int(data.get("clips_total") or 0)
    return data.get("status") == "complete" and total > 0 and done == total, done, total


def memorize_job(job: StreamJob, model: ChatModel | None = None) -> StreamOutcome:
    """Memorize one stream, resuming its run; a failure comes back as a `failed` outcome.

    Module-level and self-contained, so a Ray worker can run it (it builds its own model when
    none is shared with it).
    """
    started = time.perf_counter()
    complete, done, total = finished_run(job.run_path)
    perceiver = None
    try:
        stream = load_stream(job.source)
        if stream.stream_id != job.stream_id:
            raise ConfigError(
                f"{job.source} holds stream {stream.stream_id!r}, not {job.stream_id!r}"
            )
        chat = model or _model(job.model, job.cache)
        recall_source_digests(job.run_path)  # before perception hashes the sources
        if job.perception is not None and job.perception.enabled:
            from taskmem_lab.perception.perceiver import StreamPerceiver

            speaker = (
                _model(job.perception.speaker_model, job.cache)
                if job.perception.speaker_model
                else chat
            )
            perceiver = StreamPerceiver(
                stream, job.perception, job.params, job.root, speaker, job.decoder
            )
        tasks = load_tasks(job.tasks) if job.tasks else []
        if complete and unchanged(job.run_path, stream, chat, job, tasks, perceiver):
            return StreamOutcome(job.stream_id, "skipped", done, total)
        run = memorize(
            stream,
            chat,
            job.params,
            str(job.run_path),
            tasks=tasks,
            tag=job.tag,
            perceiver=perceiver,
            progress=False,
            allow_model_change=job.allow_model_change,
            decoder=job.decoder,
        )
        n = len(run.finished())
        return StreamOutcome(job.stream_id, "complete", n, n, seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - one stream's failure or bug must not stop the others
        if not isinstance(exc, TaskmemError):
            log.error("stream %s crashed:\n%s", job.stream_id, traceback.format_exc())
        _, done, total = finished_run(job.run_path)
        return StreamOutcome(
            job.stream_id,
            "failed",
            done,
            total,
            f"{type(exc).__name__}: {exc}",
            time.perf_counter() - started,
        )
    finally:
        if perceiver is not None:
            perceiver.close()


def unchanged(
    path: Path,
    stream: Stream,
    model: ChatModel,
    job: StreamJob,
    tasks: Sequence[Task],
    perceiver: Perceiver | None,
) -> bool:
    """Whether the stored run at `path` was made with the inputs `job` asks for now."""
    planned = planned_manifest(stream, model, job.params, tasks, job.tag, perceiver)
    run = RunDir(path)
    old = run.manifest()
    if identity_changes(old, planned):
        return False
    if old.get("source") != planned.get("source"):
        # The same content with new stamps (touched, copied or moved files), as `open_run`
        # records them: the next open recalls the digests instead of hashing the files again.
        with FolderLock(path, "memorize run"):
            run.update_manifest(source=planned["source"])
    return True


def _model(spec: str, cache: bool | str) -> ChatModel:
    """The model for `spec`, its HTTP clients made now: streams then start their first calls
    at once instead of queueing behind the SDK's imports."""
    model = make_model(spec, open_cache(cache))
    warm = getattr(model, "warm", None)
    if callable(warm):
        warm()
    return model


# --------------------------------------------------------------------------- progress


class CallCounter:
    """Wraps a model and counts calls in flight, calls made and in-flight seconds (thread-safe)."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.model_id = model.model_id
        self._lock = threading.Lock()
        self.in_flight = 0
        self.calls = 0
        self.busy_s = 0.0  # integral of calls in flight over time

    def generate(self, request: Request) -> Reply:
        t0 = time.perf_counter()
        with self._lock:
            self.in_flight += 1
            self.calls += 1
        try:
            return self.model.generate(request)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.busy_s += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


@dataclass
class _Tail:
    offset: int = 0
    ok: int = 0


@dataclass
class Tally:
    """What the stored clip records of the planned streams add up to."""

    clips: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tails: dict[str, _Tail] = field(default_factory=dict)

    def read(self, stream_id: str, run_path: Path) -> None:
        """Read the lines appended to a stream's `clips.jsonl` since the last call."""
        tail = self.tails.setdefault(stream_id, _Tail())
        path = run_path / CLIPS
        try:
            with open(path, "rb") as fh:
                fh.seek(tail.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a torn last line is read next time
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if row.get("status") == "ok":
                tail.ok += 1
                self.clips += 1
                usage = row.get("usage") or {}
                self.prompt_tokens += int(usage.get("prompt_tokens", 0))
                self.completion_tokens += int(usage.get("completion_tokens", 0))
        tail.offset += end


class Progress:
    """The single progress line of a benchmark run."""

    def __init__(
        self,
        jobs: Sequence[StreamJob],
        plan: BenchPlan,
        price: tuple[float, float] | None,
        counter: CallCounter | InFlight | None,
        enabled: bool,
    ) -> None:
        self.jobs = jobs
        self.price = price
        self.counter = counter
        self.tally = Tally()
        self.streams_done = 0
        self._runs = [(job.stream_id, job.run_path) for job in jobs]  # paths made once
        self._read_at = -math.inf
        for stream_id, run_path in self._runs:
            self.tally.read(stream_id, run_path)
        self.bar = tqdm(
            total=plan.clips,
            initial=min(self.tally.clips, plan.clips),
            unit="clip",
            desc=f"bench {plan.benchmark}",
            disable=not enabled,
            dynamic_ncols=True,
        )
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Read what the streams stored since the last read and redraw; the stored records are
        read at most every `REFRESH_S` (900 streams finishing at once would otherwise read
        900 x 900 files), `force` reads now."""
        now = time.monotonic()
        if not force and now - self._read_at < REFRESH_S:
            return
        self._read_at = now
        before = self.tally.clips
        for stream_id, run_path in self._runs:
            self.tally.read(stream_id, run_path)
        post = {"streams": f"{self.streams_done}/{len(self.jobs)}"}
        if self.counter is not None:
            post["in_flight"] = str(self.counter.in_flight)
        post["tokens"] = f"{self.tally.prompt_tokens + self.tally.completion_tokens:,}"
        if self.price is not None:
            cost = (
                self.tally.prompt_tokens * self.price[0]
                + self.tally.completion_tokens * self.price[1]
            ) / 1e6
            post["cost"] = f"${cost:.2f}"
        self.bar.set_postfix(post, refresh=False)
        grown = min(self.tally.clips, self.bar.total) - min(before, self.bar.total)
        if grown > 0:
            self.bar.update(grown)
        else:
            self.bar.refresh()

    def close(self) -> None:
        self.refresh(force=True)
        self.bar.close()


# --------------------------------------------------------------------------- engines


def run_local(
    jobs: Sequence[StreamJob],
    streams: int,
    model: ChatModel,
    on_outcome: Callable[[StreamOutcome], None],
    poll: Callable[[], None],
) -> None:
    """Memorize `jobs` in `streams` threads sharing `model`.

    The threads are daemons: on Ctrl-C the driver returns at once and the process ends like a
    killed one (finished clips are stored; a clip cut mid-write is dropped on resume), instead
    of waiting for every running stream to finish.
    """
    todo: queue.SimpleQueue[StreamJob | None] = queue.SimpleQueue()
    results: queue.SimpleQueue[StreamOutcome] = queue.SimpleQueue()
    for job in jobs:
        todo.put(job)
    workers = min(streams, len(jobs))
    for _ in range(workers):
        todo.put(None)

    def work() -> None:
        while (job := todo.get()) is not None:
            results.put(memorize_job(job, model))

    threads = [
        threading.Thread(target=work, name=f"taskmem-stream-{i}", daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    left = len(jobs)
    while left:
        try:
            outcome = results.get(timeout=0.5)
        except queue.Empty:
            poll()
            continue
        on_outcome(outcome)
        left -= 1
        poll()
    for t in threads:
        t.join()


@dataclass
class InFlight:
    """Calls in flight on the Ray runners, as last polled by the driver."""

    in_flight: int = 0


class StreamRunner:
    """A Ray actor that memorizes many streams at once in threads, sharing one model client.

    One per node: the streams of a node share its decoders' process and its connection pool
    instead of paying a Python worker each. Each `run` call is one stream (an actor task); when
    the actor's process dies, Ray restarts it and re-runs the streams it held, which resume from
    their run folders.
    """

    def __init__(self, model: str, cache: bool | str, env: Mapping[str, str] | None = None) -> None:
        # The driver's TASKMEM_* settings come as an argument, not as a Ray runtime_env: an
        # actor with its own runtime_env needs a fresh worker process (~2 s to start), one
        # without takes a prestarted worker. An actor's process is its own, so setting the
        # environment here touches nothing else.
        os.environ.update(env or {})
        self.counter = CallCounter(_model(model, cache))

    def run(self, job: StreamJob) -> StreamOutcome:
        return memorize_job(job, self.counter)

    def in_flight(self) -> int:
        return self.counter.in_flight


RAY_ENV = ("TASKMEM_API_CONFIG", "TASKMEM_CACHE", "TASKMEM_RUNS", "TASKMEM_DECODER")


def run_ray(
    jobs: Sequence[StreamJob],
    streams: int,
    on_outcome: Callable[[StreamOutcome], None],
    poll: Callable[[], None],
    address: str | None = None,
    resources: Mapping[str, float] | None = None,
    max_retries: int = 3,
    runners: int | None = None,
    tracker: InFlight | None = None,
) -> None:
    """Memorize `jobs` on a Ray cluster, at most `streams` in flight.

    Joins the cluster at `address` (or the one already initialized; none: starts a local one),
    starts `runners` `StreamRunner` actors (default: one per alive node, spread over the nodes)
    with `resources` each (`num_cpus`, `num_gpus`, custom), and hands each stream to the runner
    with the fewest streams in flight. A runner whose process dies is restarted and its streams
    re-run (`max_retries` times), resuming from their run folders. The `TASKMEM_*` settings of
    this process travel to the workers (endpoint keys do not: set them on the nodes).
    `tracker` receives the runners' calls in flight about once a second.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--engine ray needs Ray: pip install 'taskmem_lab[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    if not jobs:
        return
    nodes = max(1, len([n for n in ray.nodes() if n.get("Alive")]))
    count = max(1, min(runners or nodes, streams, len(jobs)))
    per_runner = -(-streams // count)
    env = {k: os.environ[k] for k in RAY_ENV if os.environ.get(k)}
    actor = ray.remote(StreamRunner).options(
        max_concurrency=per_runner,
        max_restarts=max_retries,
        max_task_retries=max_retries,
        scheduling_strategy="SPREAD",
        **{"num_cpus": 1, **dict(resources or {})},
    )
    first = jobs[0]
    pool: list[Any] = [actor.remote(first.model, first.cache, env) for _ in range(count)]
    load = [0] * count
    queue = list(jobs)
    running: dict[Any, tuple[StreamJob, int]] = {}
    polled = 0.0
    while queue or running:
        while queue and len(running) < streams:
            k = min(range(count), key=load.__getitem__)
            job = queue.pop(0)
            running[pool[k].run.remote(job)] = (job, k)
            load[k] += 1
        done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for ref in done:
            job, k = running.pop(ref)
            load[k] -= 1
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                _, n, total = finished_run(job.run_path)
                outcome = StreamOutcome(
                    job.stream_id, "failed", n, total, f"{type(exc).__name__}: {first_line}"
                )
            on_outcome(outcome)
        if tracker is not None and time.monotonic() - polled >= 1.0:
            polled = time.monotonic()
            # a runner restarting or busy keeps the last count
            with contextlib.suppress(ray.exceptions.RayError):
                tracker.in_flight = sum(ray.get([a.in_flight.remote() for a in pool], timeout=1.0))
        poll()
    for a in pool:
        ray.kill(a)


# --------------------------------------------------------------------------- the benchmark


@dataclass
class BenchResult:
    """What a benchmark run did: its plan, each stream's outcome, and the evaluation."""

    folder: Path
    plan: BenchPlan
    outcomes: dict[str, StreamOutcome]
    evaluation: EvalResult | None = None
    estimate: dict[str, Any] | None = None
    note: str = ""

    @property
    def failed(self) -> list[StreamOutcome]:
        return [o for o in self.outcomes.values() if o.status == "failed"]


def default_streams(model: ChatModel) -> int:
    """Streams side by side: the endpoints' `max_concurrency` summed, else `DEFAULT_STREAMS`."""
    endpoints = getattr(model, "endpoints", None)
    if endpoints:
        return max(1, sum(int(getattr(e, "max_concurrency", 1)) for e in endpoints))
    return DEFAULT_STREAMS


def run_benchmark(
    benchmark: str,
    source: str | Path | None,
    videos: str | Path,
    model: str,
    answerer: str | None = None,
    *,
    judge: str | None = None,
    params: MemorizeParams | None = None,
    perception: PerceptionParams | None = None,
    qa: QAParams | None = None,
    eval_params: EvalParams | None = None,
    tag: str | None = None,
    out: str | Path | None = None,
    tasks: str = "none",
    streams: int | None = None,
    limit_streams: int | None = None,
    only: Sequence[str] = (),
    engine: str = "local",
    ray_address: str | None = None,
    ray_resources: Mapping[str, float] | None = None,
    cache: bool | str | Path = True,
    prices: Mapping[str, tuple[float, float]] | None = None,
    plan_only: bool = False,
    progress: bool = True,
    decoder: str = "pyav",
    allow_model_change: bool = False,
) -> BenchResult:
    """Plan, memorize and evaluate a benchmark; see the module docstring.

    Memories go to `out/<stream>/memory/<tag>/` (the runs root), the run's bookkeeping (stream
    manifests, task files, `bench.json`) and evaluation to `out/bench/<benchmark>/<tag>/`; the
    metrics that `06_paper` reads to `out/results/<benchmark>.metrics.json` when every stream of
    the benchmark was selected. With `plan_only` nothing is memorized or asked. `decoder` is
    the frame reader of every stream: the forward-only PyAV reader by default, which decodes
    nothing while a stream waits on the model (decord decodes ahead: gigabytes for many streams).
    A stream memorized before with other inputs is refused (a failed stream naming what
    differs); `allow_model_change` lets its run continue with another model (recorded).
    """
    from taskmem_lab.bench.hub import load_benchmark

    if decoder not in ("auto", "decord", "pyav"):
        raise ConfigError(f"--decoder must be auto, decord or pyav, got {decoder!r}")
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {ENGINES}, got {engine!r}")
    if streams is not None and streams < 1:
        raise ConfigError(f"--streams must be >= 1, got {streams}")
    params = params or MemorizeParams()
    prices = dict(prices or {})
    records = load_benchmark(benchmark, source)
    root = Path(out) if out is not None else runs_root()
    known = KnownFiles(root / "bench" / benchmark / KNOWN_FILES, read_only=plan_only)
    plan = plan_streams(benchmark, records, videos, params, tasks, only, limit_streams, known)
    with_tasks = any(s.tasks for s in plan.streams)  # Video-MME asks at the end: no tasks
    tag = tag or default_tag(model) + ("__tasks" if with_tasks else "")
    folder = root / "bench" / benchmark / tag
    estimate = estimate_cost(plan, model, answerer, prices) if prices or plan_only else None
    if plan_only:
        return BenchResult(folder, plan, {}, estimate=estimate)
    if not plan.streams:
        raise ConfigError(
            f"no stream of {benchmark} could be planned: "
            + "; ".join(f"{k}: {v}" for k, v in list(plan.missing.items())[:3])
        )
    cache_arg: bool | str = str(cache) if isinstance(cache, Path) else cache
    sources = write_sources(plan, folder)
    jobs = [
        StreamJob(
            s.stream_id,
            sources[s.stream_id][0],
            model,
            params,
            tag,
            str(root),
            sources[s.stream_id][1],
            perception,
            cache_arg,
            decoder,
            allow_model_change,
        )
        for s in plan.streams
    ]
    chat: ChatModel | None = None
    counter: CallCounter | None = None
    tracker = InFlight()
    if engine == "local":
        counter = CallCounter(_model(model, cache_arg))
        chat = counter
    n_streams = streams or (default_streams(chat) if chat is not None else _config_streams(model))
    outcomes: dict[str, StreamOutcome] = {}
    bar = Progress(jobs, plan, prices.get(model), counter or tracker, progress)

    def on_outcome(o: StreamOutcome) -> None:
        outcomes[o.stream_id] = o
        bar.streams_done += 1
        if o.status == "failed":
            tqdm.write(f"stream {o.stream_id} failed: {o.error}")

    started = time.perf_counter()
    try:
        if engine == "local":
            assert chat is not None
            run_local(jobs, n_streams, chat, on_outcome, bar.refresh)
        else:
            run_ray(
                jobs, n_streams, on_outcome, bar.refresh, ray_address, ray_resources,
                tracker=tracker,
            )  # fmt: skip
    finally:
        bar.close()
        _write_status(
            folder, plan, outcomes, engine, n_streams, time.perf_counter() - started, counter
        )
    result = BenchResult(folder, plan, outcomes, estimate=estimate)
    failed = result.failed
    if failed:
        result.note = f"evaluation skipped: {len(failed)} stream(s) failed; resume them first"
        return result
    if answerer is None:
        result.note = "no --answerer: memories only"
        return result
    result.evaluation = _evaluate(
        benchmark,
        records,
        plan,
        root,
        tag,
        answerer,
        judge,
        qa,
        eval_params,
        cache_arg,
        prices,
        progress,
        selected_all=not only and limit_streams is None,
    )
    return result


def _config_streams(spec: str) -> int:
    """Default streams for an engine that builds no model here (Ray): from the endpoint config."""
    if not spec.startswith("openai:"):
        return DEFAULT_STREAMS
    from taskmem_lab.backends.endpoints import endpoints_for, read_config

    try:
        endpoints = endpoints_for(spec.split(":", 1)[1], read_config())
    except TaskmemError:
        return DEFAULT_STREAMS
    return max(1, sum(e.max_concurrency for e in endpoints))


def _write_status(
    folder: Path,
    plan: BenchPlan,
    outcomes: Mapping[str, StreamOutcome],
    engine: str,
    streams: int,
    seconds: float,
    counter: CallCounter | None,
) -> None:
    data = {
        "benchmark": plan.benchmark,
        "engine": engine,
        "streams_in_parallel": streams,
        "wall_s": round(seconds, 3),
        "model_calls": counter.calls if counter is not None else None,
        "mean_calls_in_flight": round(counter.busy_s / seconds, 3) if counter and seconds else None,
        "streams": {
            s.stream_id: {
                "clips": s.clips,
                "calls": s.calls,
                **(
                    vars(outcomes[s.stream_id])
                    if s.stream_id in outcomes
                    else {"status": "not run"}
                ),
            }
            for s in plan.streams
        },
        "not_planned": plan.missing,
        "updated": utc_now(),
    }
    atomic_write_json(folder / "bench.json", data)


def _evaluate(
    benchmark: str,
    records: Sequence[Any],
    plan: BenchPlan,
    root: Path,
    tag: str,
    answerer: str,
    judge: str | None,
    qa: QAParams | None,
    eval_params: EvalParams | None,
    cache: bool | str,
    prices: Mapping[str, tuple[float, float]],
    progress: bool,
    selected_all: bool,
) -> EvalResult:
    from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
    from taskmem_lab.evaluation.metrics import to_records
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.evaluation.report import write_metrics

    qa = qa or QAParams()
    chosen = {s.stream_id for s in plan.streams} | set(plan.missing)
    selected = [r for r in records if r.video_id in chosen]
    digest = hashlib.sha256(
        json.dumps([qa.to_json(), judge, sorted(chosen)], sort_keys=True).encode()
    ).hexdigest()[:8]
    out = (
        root
        / "bench"
        / benchmark
        / tag
        / "eval"
        / f"{default_tag(answerer)}__{qa.context}__{digest}"
    )
    result = evaluate(
        selected,
        MemoryLocator(root, tag),
        _model(answerer, cache),
        _model(judge, cache) if judge else None,
        qa,
        out,
        eval_params or EvalParams(),
        prices,
        progress=progress,
    )
    fake = bool(result.summary.get("fake_models"))
    rows = to_records(result.table)
    for folder in [out, root / "results"] if selected_all else [out]:
        write_metrics(folder, benchmark, rows, answerer, judge, tag, fake, result.out)
    _figure(rows, out / "figure.png", f"{benchmark} · {answerer} on {tag}", fake)
    return result


def _figure(rows: Sequence[Mapping[str, Any]], path: Path, title: str, fake: bool) -> None:
    """Accuracy (with its 95% interval), coverage and precision per task type, as `04_qa` draws
    them (undefined precision marked n/a; a fake model's figure says so); skipped when
    matplotlib (the `notebooks` extra) is not installed."""
    try:
        # A bare Figure, not pyplot: no backend switch and no figure left registered in the
        # caller's process (a notebook cell calling run_benchmark keeps its inline plots).
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no figure")
        return
    lines = [r for r in rows if r.get("group") in ("all", "task_type")]
    if not lines:
        return
    fig = Figure(figsize=(max(4.0, 0.9 * len(lines) + 2), 3.0))
    ax = fig.subplots()
    x = range(len(lines))
    for k, metric in enumerate(("accuracy", "coverage", "precision")):
        given = [math.nan if r.get(metric) is None else float(r[metric]) for r in lines]
        values = [0.0 if math.isnan(v) else v for v in given]
        err = None
        if metric == "accuracy":
            err = [
                [
                    v - float(r.get("accuracy_lo") or 0.0)
                    for v, r in zip(values, lines, strict=True)
                ],
                [
                    float(r.get("accuracy_hi") or 0.0) - v
                    for v, r in zip(values, lines, strict=True)
                ],
            ]
        xs = [i + 0.27 * (k - 1) for i in x]
        ax.bar(xs, values, width=0.27, yerr=err, label=metric)
        for at, v in zip(xs, given, strict=True):
            if math.isnan(v):  # nothing answered: no precision, not a zero
                ax.text(at, 0.01, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(
        list(x), [str(r.get("value")) for r in lines], rotation=30, ha="right", fontsize=7
    )
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    if fake:
        fig.text(0.99, 0.0, "fake model output: not a result", ha="right", va="bottom",
                 fontsize=7, color="red")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
