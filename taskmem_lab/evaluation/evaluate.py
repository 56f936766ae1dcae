"""Evaluating stored memories on a benchmark: answer from memory, judge, score, tabulate.

Floor 5. `evaluate` looks up each question's memory by `video_id` (a run directory
`<memories>/<video_id>/memory/<tag>/`; the original TaskMem layout
`<memories>/<video_id>/<video_id>_<tag>.pkl` or its `test_time/` variant; or
`<memories>/<video_id>.jsonl` / `.pkl` from other systems), builds its context (`qa.py`), asks
the answerer (and the judge for free-form answers) with bounded concurrency, and appends one row
per finished question to `results.jsonl` (append + fsync, written by one thread; the folder is a
`jobs.ResumableDir`). A killed run is resumed by running it again: finished questions are skipped
unless their memory changed since (each row records the `memory_hash` it was answered from), and
the response cache makes repeated requests free, so a finished evaluation re-run makes no model
calls. Questions without a
memory are listed in `missing.json` and counted in the table, never dropped silently; when no
question has a memory the run stops with an error naming the video ids looked for and where. A
question whose model call fails is not written (the next run retries it), and one whose every
reply was empty is written but asked again on the next run (`answered`); a model that answered in
words no reading could parse keeps its row.

Output folder: `run.json` (what was evaluated, with which models, prompts and parameters),
`results.jsonl`, `missing.json`, `table.md` and `table.parquet` (Acc/Cov/Prec per benchmark,
task type and benchmark group, with 95% bootstrap intervals), `summary.json` (counts, tokens,
cost).

With `EvalParams.attribute` ("evidence" or "memory") each wrong or abstained answer also gets an
`attribution` (`attribution.py`: was the needed fact in memory?), asked of the judge model; a
finished row that lacks one (or has one asked under other settings) is attributed on the next
run without answering again. `summary.json` then has `errors` (memorization_miss,
answering_miss, unattributed: they sum to the wrong plus abstained answers) and `table.md` their
shares per task type.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import taskmem_lab
from taskmem_lab.backends.base import ChatModel, model_identity, sum_usage
from taskmem_lab.bench import get_benchmark
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import ConfigError, ModelError
from taskmem_lab.evaluation.attribution import (
    EVIDENCE,
    MODES,
    NONE,
    attribute,
    attribution_key,
    error_counts,
    error_split,
    errors_markdown,
    is_current,
)
from taskmem_lab.evaluation.judge import Verdict, judge
from taskmem_lab.evaluation.judge import prompt_hashes as judge_prompt_hashes
from taskmem_lab.evaluation.metrics import (
    DEFAULT_N_BOOT,
    READINGS,
    WRONG,
    MetricRow,
    Outcome,
    metrics_table,
    to_markdown,
    to_records,
)
from taskmem_lab.evaluation.qa import (
    ANSWERED,
    QAParams,
    answer_question,
    build_context,
    prompt_hashes,
    retrieval_query,
)
from taskmem_lab.evaluation.retrieval import Retriever, index_folder
from taskmem_lab.jobs import Progress, ResumableDir, bounded_map
from taskmem_lab.memory import Memory, dumps_jsonl, load_any
from taskmem_lab.params import check_finite, check_param
from taskmem_lab.paths import safe_name
from taskmem_lab.schema import SCHEMA_VERSION
from taskmem_lab.store import LOCK_FILE, FolderLock, atomic_write_json, mark_stopped, utc_now

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
RUN = "run.json"
MISSING = "missing.json"
TABLE_MD = "table.md"
# table.md's first line when a fake model answered or judged (summary.json: "fake_models": true)
FAKE_NOTE = "*Made with a fake model (a test double): these numbers are not a result.*\n\n"
TABLE_PARQUET = "table.parquet"
# Recorded since results were keyed by what a model spec resolved to; older folders lack them.
LATER_SETTINGS = ("answerer_endpoint", "judge_endpoint")
MEMORY_SUFFIXES = (".jsonl", ".pkl", ".pickle")


@dataclass(frozen=True)
class EvalParams:
    """Parameters of an evaluation run (the QA parameters are `QAParams`).

    Attributes:
        concurrency: questions in flight at once (endpoints also bound their own concurrency).
        limit: evaluate only the first N questions (a smoke run; resumable like any other).
        judge_reasks: how often an unreadable judge reply is asked again.
        n_boot: bootstrap resamples per table line.
        max_consecutive_failures: stop dispatching after this many failed questions in a row.
        unparseable: how a reply with no readable answer counts: "wrong" (answered and wrong,
            the paper's reading) or "abstain" (not answered).
        attribute: why wrong and abstained answers failed (`attribution`): "evidence" asks the
            judge model whether the entries at the evidence windows hold the answer, "memory"
            asks it over the whole memory before the question (one long prompt per error: more
            expensive), "none" does not ask.
    """

    concurrency: int = 8
    limit: int | None = None
    judge_reasks: int = 1
    n_boot: int = DEFAULT_N_BOOT
    max_consecutive_failures: int = 8
    unparseable: str = field(default=WRONG, metadata={"choices": READINGS})
    attribute: str = field(default=NONE, metadata={"choices": MODES})

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(self.attribute in MODES, "attribute", f"must be one of {MODES}")
        check_param(self.unparseable in READINGS, "unparseable", f"must be one of {READINGS}")
        check_param(1 <= self.concurrency <= 256, "concurrency", "must be in 1..256")
        check_param(self.limit is None or self.limit >= 1, "limit", "must be >= 1")
        check_param(0 <= self.judge_reasks <= 5, "judge_reasks", "must be in 0..5")
        check_param(0 <= self.n_boot <= 100_000, "n_boot", "must be in 0..100000")
        check_param(self.max_consecutive_failures >= 1, "max_consecutive_failures", "must be >= 1")


# --------------------------------------------------------------------------- memories


@dataclass(frozen=True)
class MemoryLocator:
    """Finds a video's memory under `root`, in this order:

    1. a run directory `<root>/<video_id>/memory/<tag>/` (with `--tag`);
    2. an original TaskMem pickle `<root>/<video_id>/<video_id>_<tag>.pkl`, else the same under
       `<root>/<video_id>/test_time/` (with `--tag`; the original scripts' layout);
    3. a file `<root>/<video_id>.jsonl` / `.pkl` / `.pickle` (memories of other systems).
    """

    root: Path
    tag: str | None = None

    def check(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"memories directory not found: {self.root}")
        if self.tag is None:
            tags = sorted({p.name for p in self.root.glob("*/memory/*") if p.is_dir()})
            tags += sorted(
                f"{p.stem[len(p.parent.name) + 1 :]} (original pickles)"
                for p in self.root.glob("*/*.pkl")
                if p.stem.startswith(p.parent.name + "_")
            )
            if tags:
                shown = sorted(set(tags))
                raise ConfigError(f"{self.root} holds memories with tags {shown[:8]}; pass --tag")

    def candidates(self, video_id: str) -> list[Path]:
        """Every path looked at for `video_id`, in order (all inside `root`)."""
        for what, name in (("video id", video_id), ("--tag", self.tag)):
            if name is not None and not _plain_name(name):
                raise ConfigError(
                    f"{what} {name!r} is not a plain name (a path separator or '..'): memories "
                    f"are only looked for inside {self.root}"
                )
        paths = []
        if self.tag is not None:
            folder = self.root / video_id
            paths += [
                folder / "memory" / self.tag / "manifest.json",
                folder / f"{video_id}_{self.tag}.pkl",
                folder / "test_time" / f"{video_id}_{self.tag}.pkl",
            ]
        return paths + [self.root / f"{video_id}{suffix}" for suffix in MEMORY_SUFFIXES]

    def find(self, video_id: str) -> Path | None:
        for path in self.candidates(video_id):
            if path.is_file():
                return path.parent if path.name == "manifest.json" else path
        return None

    def patterns(self) -> str:
        """Where memories are looked for, as patterns (for error messages)."""
        return ", ".join(str(p) for p in self.candidates("<video_id>"))


def _plain_name(name: str) -> bool:
    """One harmless path component (`paths.safe_name`'s rule)."""
    try:
        safe_name(name, "name")
    except ConfigError:
        return False
    return True


# --------------------------------------------------------------------------- run folder


def _groups(benchmark: str) -> tuple[str, ...]:
    """A registered benchmark's breakdown fields; none for a question set of one's own."""
    from taskmem_lab.bench import BENCHMARKS

    return tuple(get_benchmark(benchmark).groups) if benchmark in BENCHMARKS else ()


def records_digest(records: Sequence[QARecord]) -> str:
    data = json.dumps([r.to_row() for r in records], sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _identity(
    records: Sequence[QARecord],
    locator: MemoryLocator,
    answerer: ChatModel,
    judge_model: ChatModel | None,
    qa: QAParams,
) -> dict[str, Any]:
    kinds = sorted({r.answer_kind for r in records})
    prompts: dict[str, str] = {}
    for kind in kinds:
        prompts.update(prompt_hashes(kind))
    if "open" in kinds:
        prompts.update(judge_prompt_hashes())
    return {
        "benchmark": sorted({r.benchmark for r in records}),
        "records": records_digest(records),
        "memories": str(locator.root.resolve()),
        "tag": locator.tag,
        "answerer": answerer.model_id,
        "answerer_endpoint": model_identity(answerer),
        "judge": judge_model.model_id if judge_model is not None and "open" in kinds else None,
        "judge_endpoint": (
            model_identity(judge_model) if judge_model is not None and "open" in kinds else None
        ),
        "qa": qa.to_json(),
        "prompts": prompts,
    }


def results_dir(out: Path) -> ResumableDir:
    """The evaluation's results folder: `run.json` settings, one row per question id."""
    return ResumableDir(
        out,
        kind="eval",
        key=lambda row: str(row["id"]),
        settings_name=RUN,
        rows_name=RESULTS,
        ok=answered,  # a question whose model call failed is never written
        hint="use another --out, or delete the folder to start over",
    )


def answered(row: Mapping[str, Any]) -> bool:
    """Whether a results row is done: anything but an unparseable answer from replies that were
    all empty (a server that sent nothing; a resumed run asks again)."""
    if row.get("status") != "unparseable":
        return True
    samples = (row.get("answerer") or {}).get("samples") or []
    return any(str(s.get("text") or "").strip() for s in samples)


def adopt_later_settings(folder: ResumableDir, identity: dict[str, Any]) -> None:
    """A results folder written before endpoints were recorded takes the current ones (with a
    warning) instead of being refused; a folder that records them must match them."""
    if not folder.exists():
        return
    old = folder.settings()
    missing = {k: identity[k] for k in LATER_SETTINGS if k not in old}
    if missing:
        log.warning("%s: no endpoints recorded; assuming the current ones", folder.path)
        atomic_write_json(folder.settings_path, {**old, **missing})


def memory_hash(memory: Memory) -> str:
    """A short sha256 of a memory's entries (times, text, knowledge): rows record which memory
    they were answered from, so a resumed evaluation re-asks questions whose memory changed."""
    return hashlib.sha256(dumps_jsonl(memory).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- one question


def evaluate_question(
    record: QARecord,
    memory: Memory,
    memory_path: str,
    answerer: ChatModel,
    judge_model: ChatModel | None,
    qa: QAParams,
    retriever: Retriever | None = None,
    judge_reasks: int = 1,
    memory_digest: str | None = None,
) -> dict[str, Any]:
    """Answer (and judge) one question; the results row. `ModelError` propagates.

    `memory_digest` is `memory_hash(memory)` when the caller already has it (it is recorded in
    the row as `memory_hash`).
    """
    context = build_context(record, memory, qa, retriever, memory_path)
    answer = answer_question(answerer, record, context, qa)
    final = answer.final
    verdict: Verdict | None = None
    correct, score = False, None
    if final.status == ANSWERED:
        if record.answer_kind == "choice":
            correct = final.value == record.answer
        else:
            if judge_model is None:
                raise ConfigError("free-form answers need a judge model (--judge SPEC)")
            verdict = judge(judge_model, record.question, record.answer, final.value, judge_reasks)
            correct = verdict.status == "ok" and bool(verdict.correct)
            score = verdict.score
    span = [context.spans[0][0], context.spans[-1][1]] if context.spans else None
    return {
        "schema": SCHEMA_VERSION,
        "id": record.id,
        "benchmark": record.benchmark,
        "video_id": record.video_id,
        "task_type": record.task_type,
        "answer_kind": record.answer_kind,
        "query_time": record.query_time,
        "evidence": [list(w) for w in record.evidence],
        "groups": {g: record.meta.get(g) for g in _groups(record.benchmark)},
        "question": record.question,
        "options": list(record.options),
        "reference": record.answer,
        "status": final.status,
        "prediction": final.value,
        "correct": correct,
        "score": score,
        "memory_hash": memory_digest or memory_hash(memory),
        "context": {
            "mode": qa.context,
            "memory": memory_path,
            "memory_entries": len(memory),
            "entries": context.entries,
            "span": span,
            # the retrieved entries cannot be derived again without the embedder: keep them
            "spans": [list(x) for x in context.spans] if qa.context == "retrieval" else None,
            "chars": len(context.text),
            "truncated": context.truncated,
            "note": context.note,
        },
        "answerer": {
            "model": answer.model,
            "prompts": prompt_hashes(record.answer_kind),
            "samples": [s.to_json() for s in answer.samples],
            "usage": sum_usage(s.usage for s in answer.samples),
        },
        "judge": verdict.to_json() if verdict is not None else None,
        "fake": any(s.fake for s in answer.samples) or bool(verdict and verdict.fake),
        "version": taskmem_lab.__version__,
        "created": utc_now(),
    }


def outcome_of(row: Mapping[str, Any]) -> Outcome:
    judged = row.get("judge") or {}
    return Outcome(
        benchmark=row["benchmark"],
        task_type=row["task_type"],
        status=row["status"],
        correct=bool(row["correct"]),
        score=row.get("score"),
        judge_unparseable=judged.get("status") == "unparseable",
        groups={k: str(v) for k, v in (row.get("groups") or {}).items() if v not in (None, "")},
        video=str(row.get("video_id") or "") if _clustered(row["benchmark"]) else "",
    )


def _clustered(benchmark: str) -> bool:
    """Whether a benchmark's intervals resample videos (a question set of one's own: yes)."""
    from taskmem_lab.bench import BENCHMARKS

    return benchmark not in BENCHMARKS or get_benchmark(benchmark).cluster_by_video


# --------------------------------------------------------------------------- usage and cost


def tally(
    per: dict[str, dict[str, Any]],
    role: str,
    model: str,
    usage: Mapping[str, int],
    calls: int,
    cached: int,
) -> None:
    """Add one row's calls and tokens to `per` (keyed `role:model`)."""
    entry = per.setdefault(
        f"{role}:{model}",
        {
            "role": role,
            "model": model,
            "calls": 0,
            "cached_calls": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        },
    )
    entry["calls"] += calls
    entry["cached_calls"] += cached
    entry["prompt_tokens"] += int(usage.get("prompt_tokens", 0))
    entry["completion_tokens"] += int(usage.get("completion_tokens", 0))


def tally_asked(per: dict[str, dict[str, Any]], role: str, asked: Mapping[str, Any]) -> None:
    """Add a stored verdict (a judge's or an attribution): each reply is a call."""
    cached = [bool(c) for c in asked.get("cached") or []]
    model = asked["model"] if "model" in asked else asked["key"]["model"]
    tally(per, role, model, asked.get("usage") or {}, len(cached), sum(cached))


def priced(
    per: dict[str, dict[str, Any]], prices: Mapping[str, tuple[float, float]] | None
) -> dict[str, dict[str, Any]]:
    """`per` with `cost_usd` (from USD per million input/output tokens; None: no price)."""
    for entry in per.values():
        price = (prices or {}).get(entry["model"])
        entry["cost_usd"] = (
            round(
                (entry["prompt_tokens"] * price[0] + entry["completion_tokens"] * price[1]) / 1e6, 6
            )
            if price
            else None
        )
    return per


def usage_summary(
    rows: Sequence[Mapping[str, Any]], prices: Mapping[str, tuple[float, float]] | None = None
) -> dict[str, dict[str, Any]]:
    """Calls, cached calls, tokens and cost (USD, from per-million-token prices) per model."""
    per: dict[str, dict[str, Any]] = {}
    for row in rows:
        model = row["answerer"]["model"]
        for s in row["answerer"]["samples"]:
            tally(per, "answerer", model, s.get("usage") or {}, 1, int(bool(s.get("cached"))))
        if row.get("judge"):  # usage is summed over the judge's re-asks
            tally_asked(per, "judge", row["judge"])
        attributed = row.get("attribution")
        if attributed and attributed.get("cached"):  # verdicts decided without a call have none
            tally_asked(per, "attributor", attributed)
    return priced(per, prices)


def fresh_calls(rows: Sequence[Mapping[str, Any]]) -> int:
    """Model calls that were not answered from the cache."""
    n = 0
    for row in rows:
        n += sum(not s.get("cached") for s in row["answerer"]["samples"])
        for part in ("judge", "attribution"):
            n += fresh_replies(row.get(part))
    return n


def fresh_replies(asked: Mapping[str, Any] | None) -> int:
    """Fresh calls behind a judge verdict or an attribution (replies not from the cache)."""
    return sum(not c for c in (asked or {}).get("cached") or [])


# --------------------------------------------------------------------------- the run


@dataclass
class EvalResult:
    """What an evaluation produced (also on disk under `out`)."""

    out: Path
    rows: list[dict[str, Any]]
    table: list[MetricRow]
    missing: list[dict[str, str]]
    failures: list[str]
    summary: dict[str, Any]

    @property
    def markdown(self) -> str:
        """table.md's text: a note when a fake model made the numbers, the metrics, and the
        error split when errors were attributed."""
        note = FAKE_NOTE if self.summary.get("fake_models") else ""
        return note + to_markdown(self.table) + _errors_section(self.rows, self.summary)


def _load_memories(
    selected: Sequence[QARecord], paths: Mapping[str, Path | None]
) -> tuple[dict[str, Memory], list[str]]:
    """Each needed memory, loaded once; and the runs that did not finish (named, not fatal)."""
    memories: dict[str, Memory] = {}
    incomplete: list[str] = []
    for vid in sorted({r.video_id for r in selected}):
        path = paths[vid]
        if path is None:
            continue
        memories[vid] = load_any(path)
        status = memories[vid].meta.get("status")
        if status not in (None, "complete"):
            incomplete.append(f"{vid} ({status})")
    return memories, incomplete


def evaluate(
    records: Sequence[QARecord],
    locator: MemoryLocator,
    answerer: ChatModel,
    judge_model: ChatModel | None,
    qa: QAParams,
    out: str | Path,
    params: EvalParams = EvalParams(),
    prices: Mapping[str, tuple[float, float]] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate `records` (resuming `out`); see the module docstring.

    A kept row counts as done only when it was answered from the memory as it is now (its
    `memory_hash`); questions whose memory changed since are asked again. One process at a time:
    `out` is locked (`store.FolderLock`) for the whole call, and a refusal before anything was
    written leaves no empty results folder behind.
    """
    out = Path(out)
    if not records:
        raise ConfigError("no questions to evaluate")
    locator.check()  # before the lock creates the results folder (by default under memories)
    created = not out.exists()
    with FolderLock(out, "evaluation"):
        try:
            return _evaluate_locked(
                records, locator, answerer, judge_model, qa, out, params, prices, progress
            )
        except BaseException:
            mark_stopped(out / "run.json")
            if created:
                with contextlib.suppress(OSError):
                    (out / LOCK_FILE).unlink()
                    out.rmdir()
            raise


def _evaluate_locked(
    records: Sequence[QARecord],
    locator: MemoryLocator,
    answerer: ChatModel,
    judge_model: ChatModel | None,
    qa: QAParams,
    out: Path,
    params: EvalParams,
    prices: Mapping[str, tuple[float, float]] | None,
    progress: bool,
) -> EvalResult:
    if any(r.answer_kind == "open" for r in records) and judge_model is None:
        raise ConfigError(
            "this benchmark has free-form answers: pass --judge SPEC (the judge is a run "
            "parameter, never a default)"
        )
    if qa.context == "evidence" and not any(r.evidence for r in records):
        raise ConfigError(
            f"{records[0].benchmark} has no evidence windows: use --context full or retrieval"
        )
    if params.attribute != NONE and judge_model is None:
        raise ConfigError(
            f"--attribute {params.attribute} asks the judge model whether the memory holds each "
            "wrong answer's fact: pass --judge SPEC"
        )
    if params.attribute == EVIDENCE and not any(r.evidence for r in records):
        raise ConfigError(
            f"{records[0].benchmark} has no evidence windows: use --attribute memory (it asks "
            "over the whole memory before each question, which costs more)"
        )
    selected = list(records[: params.limit] if params.limit else records)
    paths: dict[str, Path | None] = {}
    for r in selected:
        if r.video_id not in paths:
            paths[r.video_id] = locator.find(r.video_id)
    missing = [{"id": r.id, "video_id": r.video_id} for r in selected if paths[r.video_id] is None]
    if len(missing) == len(selected):
        ids = sorted(paths)
        shown = ", ".join(ids[:5]) + (f" (+{len(ids) - 5} more)" if len(ids) > 5 else "")
        raise ConfigError(
            f"no memory for any of the {len(selected)} question(s): looked for video id(s) "
            f"{shown} as {locator.patterns()}; check --memories and --tag"
        )
    identity = _identity(records, locator, answerer, judge_model, qa)
    adopt_later_settings(results_dir(out), identity)
    store = results_dir(out).open(identity)
    atomic_write_json(out / MISSING, {"count": len(missing), "questions": missing})
    memories, incomplete = _load_memories(selected, paths)
    hashes = {vid: memory_hash(m) for vid, m in memories.items()}
    by_id = {r.id: r for r in selected}
    done = {
        key: row
        for key, row in store.good().items()
        if key in by_id and row.get("memory_hash") == hashes.get(by_id[key].video_id)
    }
    asked_as = (
        attribution_key(params.attribute, judge_model, qa)
        if params.attribute != NONE and judge_model is not None
        else None
    )

    def unattributed(row: Mapping[str, Any]) -> bool:
        return (
            asked_as is not None
            and not row["correct"]
            and not is_current(row.get("attribution"), asked_as)
        )

    # new questions, and finished ones whose wrong answer still needs its attribution
    todo = [
        (r, done.get(r.id))
        for r in selected
        if paths[r.video_id] is not None and (r.id not in done or unattributed(done[r.id]))
    ]

    retriever = None
    if qa.context == "retrieval" and any(row is None for _, row in todo):
        retriever = Retriever(qa.embedder)
        for vid in sorted({r.video_id for r, row in todo if row is None}):
            # stored beside the memory: a re-run, or a memory with new clips, embeds only new text
            retriever.index(str(paths[vid]), memories[vid], index_folder(paths[vid]))
        # one batch, not one per question
        retriever.prepare([retrieval_query(r) for r, row in todo if row is None])

    def ask_one(item: tuple[QARecord, dict[str, Any] | None]) -> tuple[dict[str, Any], int]:
        """The row (answered now, or kept) with its attribution; and the fresh calls made."""
        r, row = item
        calls = 0
        if row is None:
            row = evaluate_question(
                r,
                memories[r.video_id],
                str(paths[r.video_id]),
                answerer,
                judge_model,
                qa,
                retriever,
                params.judge_reasks,
                hashes[r.video_id],
            )
            calls = fresh_calls([row])
        if unattributed(row):
            assert judge_model is not None and asked_as is not None
            verdict = attribute(judge_model, r, memories[r.video_id], asked_as, params.judge_reasks)
            row = {**row, "attribution": verdict, "fake": bool(row["fake"] or verdict["fake"])}
            calls += fresh_replies(verdict)
        return row, calls

    failures: list[str] = []
    new_rows: list[dict[str, Any]] = []
    calls = 0
    bar = Progress(
        f"eval {selected[0].benchmark}",
        total=len(selected) - len(missing),
        initial=len(selected) - len(missing) - len(todo),
        unit="q",
        enabled=progress,
    )
    for outcome in bounded_map(
        ask_one,
        todo,
        params.concurrency,
        key=lambda item: item[0].id,
        progress=bar,
        catch=(ModelError,),
        stop_after_failures=params.max_consecutive_failures,
    ):
        if not outcome.ok:
            failures.append(outcome.message)
            continue
        assert outcome.value is not None
        row, made = outcome.value
        calls += made
        store.append(row)
        new_rows.append(row)
        done[row["id"]] = row

    rows = [done[r.id] for r in selected if r.id in done]
    name = selected[0].benchmark
    table = (
        metrics_table(
            [outcome_of(row) for row in rows],
            by=("task_type", *_groups(name)),
            n_boot=params.n_boot,
            missing={name: len(missing)},
            unparseable=params.unparseable,
        )
        if rows
        else []
    )
    complete = not failures and len(rows) + len(missing) == len(selected)
    summary: dict[str, Any] = {
        "benchmark": name,
        "status": "complete" if complete else "partial",
        "questions": len(selected),
        "evaluated": len(rows),
        "missing_memory": len(missing),
        "unparseable_reading": params.unparseable,
        "failed": len(failures),
        "failures": failures[:50],
        "incomplete_memories": incomplete,
        "fake_models": any(row.get("fake") for row in rows),
        "usage": list(usage_summary(rows, prices).values()),
        "this_run": {"questions": len(new_rows), "model_calls": calls},
        "updated": utc_now(),
    }
    if asked_as is not None and rows:
        summary["outcomes"] = outcome_counts(table)
        summary["errors"] = error_counts(rows, params.attribute)
        summary["attribution"] = {"mode": params.attribute, "model": asked_as["model"]}
    _write_outputs(store, table, summary, _errors_section(rows, summary))
    return EvalResult(out, rows, table, missing, failures, summary)


def _errors_section(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    attribution = summary.get("attribution")
    if not attribution:
        return ""
    mode = attribution["mode"]
    return errors_markdown(error_split(rows, mode), mode)


def outcome_counts(table: Sequence[MetricRow]) -> dict[str, int]:
    """Correct, wrong and abstained answers over every benchmark's overall line (unparseable
    replies fall under the run's reading)."""
    overall = [r for r in table if r.group == "all"]
    correct = sum(r.correct for r in overall)
    answered = sum(r.answered for r in overall)
    n = sum(r.n for r in overall)
    return {"correct": correct, "wrong": answered - correct, "abstained": n - answered}


def _write_outputs(
    store: ResumableDir, table: Sequence[MetricRow], summary: dict[str, Any], extra: str = ""
) -> None:
    out = store.path
    note = FAKE_NOTE if summary.get("fake_models") else ""
    (out / TABLE_MD).write_text(note + to_markdown(table) + extra, encoding="utf-8")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        log.warning(
            "pyarrow is not installed: %s not written (pip install 'taskmem_lab[eval]')",
            TABLE_PARQUET,
        )
        summary["table_parquet"] = None
    else:
        records = to_records(table)
        if records:
            pq.write_table(pa.Table.from_pylist(records), out / TABLE_PARQUET)
        summary["table_parquet"] = TABLE_PARQUET if records else None
    store.write_summary(summary, summary["status"])


__all__ = [
    "EvalParams",
    "EvalResult",
    "MemoryLocator",
    "evaluate",
    "evaluate_question",
    "memory_hash",
    "results_dir",
    "outcome_of",
    "usage_summary",
]
