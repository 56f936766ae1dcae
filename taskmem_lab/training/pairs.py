"""Preference pairs for the task-relevance phase: which of two correct entries serves the tasks better.

Floor 5 (`taskmem pairs RUN --rollouts TAG --tasks FILE --judge ... --video-judge ...`). The
rollout candidates of every clip are scored for quality (`rewards.score_run`, stored under
`RUN/rollouts/<tag>/rewards/<name>/`); every two distinct correct candidates of a clip go to a
pairwise judge that sees example questions from the task file, the preceding entries and the two
entries, and says which one better serves such questions. Each pair is asked in both orders; only
a consistent verdict (the same entry wins in both) becomes a (chosen, rejected) pair, ties and
order-inconsistent verdicts are dropped and counted. Every verdict is stored
(`verdicts.jsonl`, resumable); kept pairs are written as `pairs.jsonl` / `pairs.parquet` with the
clip's prompt and media, ready for preference training, and `summary.json` counts the outcomes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import ChatModel, Request, Sampling
from taskmem_lab.errors import ConfigError, ModelError, ParseError, StoreError
from taskmem_lab.jobs import Progress, ResumableDir
from taskmem_lab.params import check_finite, check_param
from taskmem_lab.prompts import prompt_hash, render
from taskmem_lab.schema import SCHEMA_VERSION, ClipSpec, Task
from taskmem_lab.tasks import arrived_before, tasks_digest
from taskmem_lab.timefmt import hms
from taskmem_lab.training.export import (
    MEDIA_MODES,
    ExportParams,
    MediaWriter,
    clip_record,
    require_pyarrow,
    write_clip_media,
    write_jsonl,
    write_parquet,
)
from taskmem_lab.training.replay import RunReplay
from taskmem_lab.training.rewards import (
    ClipContext,
    Judges,
    RewardParams,
    parse_pair_verdict,
    score_memory,
    scores_dir,
)
from taskmem_lab.training.rollouts import candidate_name, rollouts_dir, samples_by_clip

PAIR_PROMPTS = ("pairs_system", "pairs_user")
QUESTION_MODES = ("arrived", "all")


@dataclass(frozen=True)
class PairParams:
    """Parameters of pair making.

    Attributes:
        max_questions: example questions shown to the pairwise judge.
        questions: "arrived" (the latest tasks that arrived before the clip's end, as the
            memorizer shows them; clips before the first task get no pairs) or "all" (questions
            spread evenly over the whole task file, the same for every clip).
        max_pairs_per_clip: cap on judged pairs per clip (None: every two correct candidates).
        media: media written beside the pairs (see `training.ExportParams.media`).
    """

    max_questions: int = 5
    questions: str = field(default="arrived", metadata={"choices": QUESTION_MODES})
    max_pairs_per_clip: int | None = None
    media: str = field(default=ExportParams.media, metadata={"choices": MEDIA_MODES})

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(1 <= self.max_questions <= 50, "max_questions", "must be in 1..50")
        check_param(
            self.questions in QUESTION_MODES,
            "questions",
            f"must be one of {QUESTION_MODES}, got {self.questions!r}",
        )
        if self.max_pairs_per_clip is not None:
            check_param(self.max_pairs_per_clip >= 1, "max_pairs_per_clip", "must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def questions_for(tasks: Sequence[Task], clip: ClipSpec, params: PairParams) -> list[Task]:
    """Example questions for a clip's pairwise judgements."""
    if params.questions == "arrived":
        return arrived_before(tasks, clip.end, params.max_questions)
    if len(tasks) <= params.max_questions:
        return list(tasks)
    step = (len(tasks) - 1) / (params.max_questions - 1) if params.max_questions > 1 else 0
    return [tasks[round(i * step)] for i in range(params.max_questions)]


def pair_request(
    ctx: ClipContext, questions: Sequence[Task], entry_a: str, entry_b: str, max_tokens: int
) -> Request:
    lines = "\n".join(f"- [{hms(t.time)}] {t.question}" for t in questions)
    user = render(
        "pairs_user",
        questions=lines,
        preceding=ctx.preceding,
        entry_a=entry_a,
        entry_b=entry_b,
        **ctx.times,
    )
    return Request.chat(
        render("pairs_system"),
        user,
        Sampling(temperature=0.0, max_tokens=max_tokens),
        "pairs",
    )


def outcome(first: str, second: str) -> str:
    """ "a", "b" (the same entry won in both orders), "tie" (both ties) or "inconsistent".

    `first` was asked with (A=a, B=b), `second` with (A=b, B=a).
    """
    if first == "A" and second == "B":
        return "a"
    if first == "B" and second == "A":
        return "b"
    if first == second == "tie":
        return "tie"
    return "inconsistent"


def judge_pair(
    judge: ChatModel,
    ctx: ClipContext,
    questions: Sequence[Task],
    a: tuple[str, str],
    b: tuple[str, str],
    params: RewardParams,
) -> dict[str, Any]:
    """Ask one pair of (name, entry) candidates in both orders; a verdict row."""
    row: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "stream": ctx.stream_id,
        "clip": ctx.clip.index,
        "a": a[0],
        "b": b[0],
        "questions": [t.task_id for t in questions],
        "judge": judge.model_id,
    }
    shape = '{"better": "A", "reason": "..."}'
    verdicts = []
    try:
        for x, y in ((a, b), (b, a)):
            request = pair_request(ctx, questions, x[1], y[1], params.judge_max_tokens)
            asked = ask(judge, request, parse_pair_verdict, shape, params.judge_reasks)
            verdicts.append(asked.value)
            row.setdefault("replies", []).append(asked.replies[-1].text)
    except (ModelError, ParseError) as exc:
        return {**row, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {**row, "status": "ok", "error": "", "verdicts": verdicts, "outcome": outcome(*verdicts)}


def pair_settings(
    pair_judge: ChatModel,
    judges: Judges,
    reward_params: RewardParams,
    params: PairParams,
    tasks: Sequence[Task],
    rollouts: str,
) -> dict[str, Any]:
    return {
        "pair_judge": pair_judge.model_id,
        "judges": judges.ids(),
        "reward_params": reward_params.to_json(),
        "params": params.to_json(),
        "prompts": {name: prompt_hash(name) for name in PAIR_PROMPTS},
        "tasks": tasks_digest(tasks),
        "rollouts": rollouts,
    }


def pairs_dir(path: str | Path) -> ResumableDir:
    """The pairs folder: pairs_manifest.json, verdicts.jsonl (one row per (clip, a, b)),
    pairs.jsonl / pairs.parquet and summary.json."""
    return ResumableDir(
        Path(path),
        kind="pairs",
        key=lambda row: (int(row["clip"]), str(row["a"]), str(row["b"])),
        settings_name="pairs_manifest.json",
        rows_name="verdicts.jsonl",
        hint="pass another --out, or delete the directory to start over",
    )


def make_pairs(
    replay: RunReplay,
    rollout_tag: str,
    judges: Judges,
    pair_judge: ChatModel,
    tasks: Sequence[Task],
    out: str | Path | None = None,
    reward_params: RewardParams | None = None,
    params: PairParams = PairParams(),
    score_name: str = "default",
    concurrency: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the rollout candidates, judge their pairs in both orders, write the kept pairs."""
    reward_params = reward_params or RewardParams()
    if not tasks:
        raise ConfigError("pairs need example questions: the task file holds no tasks")
    require_pyarrow()
    from taskmem_lab.paths import safe_name

    safe_name(score_name, "scores name")
    rollouts = rollouts_dir(replay.run.path / "rollouts" / safe_name(rollout_tag, "rollouts tag"))
    rollouts.settings()
    samples = samples_by_clip(rollouts)
    if not samples:
        raise StoreError(f"{rollouts.path} holds no sampled candidates")
    label = f"rollouts/{rollout_tag}"
    root = Path(out) if out is not None else rollouts.path / "pairs" / score_name
    settings = pair_settings(pair_judge, judges, reward_params, params, tasks, label)
    store = pairs_dir(root).open(settings)

    # 1. Quality (and the other figures) of every candidate, stored beside the rollouts.
    quality = score_memory(
        replay, judges, reward_params, score_name, rollout_tag, concurrency, progress
    )
    scores = scores_dir(quality["path"]).latest()
    if quality["failed"]:
        raise ModelError(
            f"{quality['failed']} candidates could not be scored (see {quality['path']}/"
            "entries.jsonl); run again to retry"
        )

    # 2. Pairs of distinct correct candidates per clip.
    entries = {
        c: {candidate_name(int(s["candidate"])): s["entry"] for s in rows}
        for c, rows in samples.items()
    }
    plan: dict[int, list[tuple[str, str]]] = {}
    for clip, names in entries.items():
        correct, seen = [], set()
        for name, text in names.items():
            row = scores.get((clip, name))
            if row and row.get("status") == "ok" and row["quality"]["correct"] and text not in seen:
                correct.append(name)
                seen.add(text)
        pairs = list(itertools.combinations(correct, 2))
        if params.max_pairs_per_clip is not None:
            pairs = pairs[: params.max_pairs_per_clip]
        if pairs:
            plan[clip] = pairs

    # 3. Judge every pair not judged yet (both orders), clip by clip.
    specs = {c.index: c for c in replay.schedule}
    shown = {c: questions_for(tasks, specs[c], params) for c in plan}
    no_questions = sorted(c for c, qs in shown.items() if not qs)
    done = store.good()
    todo = {
        c: [(a, b) for a, b in pairs if (c, a, b) not in done]
        for c, pairs in plan.items()
        if shown[c]
    }
    media = MediaWriter(root, params.media, absolute=False)
    base: dict[int, dict[str, Any]] = {}

    def jobs() -> Iterator[tuple[ClipContext, str, str]]:
        for replayed in replay.clips(only={c for c in plan if shown[c]}):
            clip = replayed.clip.index
            clip_media = write_clip_media(replayed, media, replay.stream_id, replay.tag)
            base[clip] = clip_record(replayed, clip_media, 0, str(replay.run.path))
            ctx = ClipContext.from_replayed(replayed)
            for a, b in todo[clip]:
                yield ctx, a, b

    def one(job: tuple[ClipContext, str, str]) -> dict[str, Any]:
        ctx, a, b = job
        clip = ctx.clip.index
        return judge_pair(
            pair_judge,
            ctx,
            shown[clip],
            (a, entries[clip][a]),
            (b, entries[clip][b]),
            reward_params,
        )

    failed = 0
    bar = Progress("pairs", total=sum(len(v) for v in todo.values()), enabled=progress)
    try:
        # judge_pair stores a model failure as a failed row; anything else propagates
        for row in store.run(
            one,
            jobs(),
            concurrency,
            key=lambda j: (j[0].clip.index, j[1], j[2]),
            progress=bar,
            ahead=concurrency,  # the next clip is replayed while the judge answers
        ):
            if row["status"] == "ok":
                done[store.key(row)] = row
            else:
                failed += 1
    finally:
        media.close()

    # 4. Kept pairs, with the clip's prompt and media.
    kept = []
    counts = {"a": 0, "b": 0, "tie": 0, "inconsistent": 0}
    for key, row in sorted(done.items(), key=lambda kv: cast(tuple[int, str, str], kv[0])):
        clip, a, b = cast(tuple[int, str, str], key)
        if clip not in base or (a, b) not in plan.get(clip, []):
            continue
        counts[row["outcome"]] += 1
        if row["outcome"] not in ("a", "b"):
            continue
        win, lose = (a, b) if row["outcome"] == "a" else (b, a)
        rec = base[clip]
        kept.append(
            {
                "schema": SCHEMA_VERSION,
                "id": f"{rec['stream']}*{clip}*{win}>{lose}",
                "type": "episodic_preference",
                "data_source": "taskmem/episodic_preference",
                "stream": rec["stream"],
                "clip": clip,
                "prompt": rec["prompt"],
                "videos": rec["videos"],
                "messages": rec["messages"],
                "sampling": rec["sampling"],  # with messages, the request `taskmem adapt` rebuilds
                "chosen": json.dumps({"description": entries[clip][win]}, ensure_ascii=False),
                "rejected": json.dumps({"description": entries[clip][lose]}, ensure_ascii=False),
                "chosen_candidate": win,
                "rejected_candidate": lose,
                "chosen_reward": scores[(clip, win)]["total"],
                "rejected_reward": scores[(clip, lose)]["total"],
                "questions": [t.question for t in shown[clip]],
                "verdicts": row["verdicts"],
                "judge": row["judge"],
                "fake": bool(rec["fake"]),
            }
        )
    write_jsonl(root / "pairs.jsonl", kept)
    write_parquet(root / "pairs.parquet", kept)
    summary = {
        "schema": SCHEMA_VERSION,
        "out": str(root),
        "clips_with_candidates": len(samples),
        "clips_with_pairs": len(plan),
        "clips_without_questions": no_questions,
        "pairs_judged": sum(counts.values()),
        "kept": len(kept),
        "ties": counts["tie"],
        "inconsistent": counts["inconsistent"],
        "failed": failed,
        "quality": quality["quality"],
        **settings,
    }
    store.write_summary(summary, "partial" if failed else "complete")
    if failed:
        raise ModelError(
            f"{failed} pair judgements failed (see {store.rows_path}); run again to retry"
        )
    return summary
