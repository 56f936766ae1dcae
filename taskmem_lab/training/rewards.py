"""Memory-quality rewards for episodic entries: Format, Thinking length, Quality and Richness.

Floor 5. The same figures train the memorization policy (Phase One RL) and measure memory
quality in ablations (`taskmem score-memory`). Pure functions hold the arithmetic:

- Format (`check_format`): the reply after the reasoning block is strict JSON whose only key is
  a non-empty string `description`; the reasoning block closes exactly once (at most once when
  thinking is not required); face tags other than `<face_N>` fail.
- Thinking length (`thinking_reward`): 0 up to `think_threshold` tokens, then a penalty that
  grows linearly to `-think_penalty` at twice the threshold (and stays there).
- Quality (`quality_reward`): a video judge (supported by the span's frames and speech, coherent
  with the preceding entries) and a text judge (no repeated context, no boxes or coordinates, no
  "the subtitle says", no speaker labels inside quotes, no conclusion statements); an entry is
  correct when both pass and it is within `max_entry_tokens`; correct/wrong give
  `correct_reward`/`wrong_reward`.
- Richness (`richness_bonuses`): a judge ranks the correct entries of several candidates for a
  clip by unique, non-redundant information (ties allowed); the fractional rank r of k becomes
  `richness_bonus * (k - r) / (k - 1)` (the best gets the full bonus, the worst 0, a lone correct
  candidate the full bonus).

`total = format + thinking + quality + richness`. Judges are `ChatModel`s given by the caller
(never picked from the environment); `score_clips` runs them with bounded concurrency and
`score_run` stores one row per entry beside the run (`rewards/<name>/entries.jsonl`, resumable)
with `summary.json` (rates and means).

The pure arithmetic and the judge-reply parsers live in `reward_math` and are re-exported
here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import ChatModel, Request, Sampling, TextPart, VideoPart
from taskmem_lab.errors import ConfigError, ModelError, ParseError, StoreError
from taskmem_lab.jobs import Progress, ResumableDir, bounded_map, keep_latest
from taskmem_lab.media.video import Frame
from taskmem_lab.memorize import preceding_text
from taskmem_lab.prompts import prompt_hash, render
from taskmem_lab.schema import SCHEMA_VERSION, ClipSpec
from taskmem_lab.timefmt import hms, span
from taskmem_lab.training.replay import ReplayedClip, RunReplay
from taskmem_lab.training.reward_rules import (
    TEXT_FLAGS,
    FormatCheck,
    Quality,
    RewardParams,
    TextVerdict,
    VideoVerdict,
    bad_face_tags,
    check_format,
    completion_text,
    compute_score,
    count_tokens,
    fractional_ranks,
    parse_pair_verdict,
    parse_ranking,
    parse_text_verdict,
    parse_video_verdict,
    quality_reward,
    richness_bonuses,
    rule_rewards,
    thinking_reward,
)

REWARD_PROMPTS = (
    "reward_video_system",
    "reward_video_user",
    "reward_text_system",
    "reward_text_user",
    "reward_richness_system",
    "reward_richness_user",
)


# --------------------------------------------------------------------------- judge requests


@dataclass(frozen=True)
class ClipContext:
    """What the judges see of a clip: its new span, speech, preceding entries and frames."""

    stream_id: str
    clip: ClipSpec
    preceding: str
    speech: str
    frames: tuple[Frame, ...]
    fps: float
    jpeg_quality: int

    @classmethod
    def from_replayed(cls, replayed: ReplayedClip) -> ClipContext:
        inputs = replayed.inputs
        video = [p for m in inputs.request.messages for p in m.parts if isinstance(p, VideoPart)][0]
        new = [f for f in video.frames if f.time >= replayed.clip.start] or list(video.frames[-1:])
        lines = [
            f"[{span(float(s['start']), float(s['end']), True)}] "
            f"{inputs.ids.to_local(str(s.get('speaker') or 'unknown'))}: {s['text']}"
            for s in replayed.record.transcript
        ]
        return cls(
            stream_id=replayed.stream_id,
            clip=replayed.clip,
            preceding=preceding_text(inputs.preceding, inputs.ids),
            speech="\n".join(lines) or "(no speech transcribed)",
            frames=tuple(new),
            fps=video.fps,
            jpeg_quality=video.jpeg_quality,
        )

    @property
    def times(self) -> dict[str, str]:
        return {"new_start": hms(self.clip.start, True), "new_end": hms(self.clip.end, True)}


def _judge_sampling(params: RewardParams) -> Sampling:
    return Sampling(temperature=0.0, max_tokens=params.judge_max_tokens)


def video_judge_request(ctx: ClipContext, entry: str, params: RewardParams) -> Request:
    user = render(
        "reward_video_user", speech=ctx.speech, preceding=ctx.preceding, entry=entry, **ctx.times
    )
    parts = (TextPart(user), VideoPart(ctx.frames, ctx.fps, ctx.jpeg_quality))
    return Request.chat(
        render("reward_video_system"),
        parts,
        _judge_sampling(params),
        "reward_video",
    )


def text_judge_request(ctx: ClipContext, entry: str, params: RewardParams) -> Request:
    user = render("reward_text_user", preceding=ctx.preceding, entry=entry)
    return Request.chat(render("reward_text_system"), user, _judge_sampling(params), "reward_text")


def richness_request(ctx: ClipContext, entries: Sequence[str], params: RewardParams) -> Request:
    candidates = "\n".join(
        f'<candidate n="{i}">\n{e}\n</candidate>' for i, e in enumerate(entries, 1)
    )
    user = render(
        "reward_richness_user", preceding=ctx.preceding, candidates=candidates, **ctx.times
    )
    return Request.chat(
        render("reward_richness_system"), user, _judge_sampling(params), "reward_richness"
    )


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Candidate:
    """One entry to score for a clip.

    `entry` carries the window's local face ids as the model wrote it ("" when no description
    could be read from the reply); `completion` is the full reply (reasoning block + answer), or
    None when it was not stored, in which case format and thinking length are not scored.
    `reasks` counts replies the memorizer had to ask again (each fails the format).
    """

    name: str
    entry: str
    completion: str | None
    reasoning: str = ""
    reasks: int = 0


@dataclass(frozen=True)
class Judges:
    """The text judge (text checks and richness) and the video judge."""

    text: ChatModel
    video: ChatModel

    def ids(self) -> dict[str, str]:
        return {"text": self.text.model_id, "video": self.video.model_id}


@dataclass
class _Judged:
    candidate: Candidate
    row: dict[str, Any]
    correct: bool = False
    error: str = ""


def _judge_candidate(
    ctx: ClipContext, cand: Candidate, judges: Judges, params: RewardParams
) -> _Judged:
    row: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "stream": ctx.stream_id,
        "clip": ctx.clip.index,
        "start": ctx.clip.start,
        "end": ctx.clip.end,
        "candidate": cand.name,
        "entry": cand.entry,
        "judges": judges.ids(),
    }
    if cand.completion is None:
        row["format"] = None
        row["thinking"] = None
    else:
        fmt = check_format(cand.completion, params.require_thinking)
        problems = list(fmt.problems)
        if cand.reasks:
            problems.insert(
                0, f"the memorizer re-asked {cand.reasks} time(s): the first reply was unreadable"
            )
        ok = not problems
        row["format"] = {
            "ok": ok,
            "problems": problems,
            "reward": params.format_reward if ok else params.format_fail,
        }
        tokens = count_tokens(cand.reasoning or fmt.reasoning, params.tokenizer)
        row["thinking"] = {
            "tokens": tokens,
            "reward": thinking_reward(tokens, params.think_threshold, params.think_penalty),
        }
    judged = _Judged(cand, row)
    entry_tokens = count_tokens(cand.entry, params.tokenizer)
    if not cand.entry:
        q = quality_reward(None, None, entry_tokens, params)
        row["quality"] = {"video": None, "text": None, **asdict(q), "note": "no description"}
        return judged
    try:
        video = ask(
            judges.video,
            video_judge_request(ctx, cand.entry, params),
            parse_video_verdict,
            '{"supported": true, "coherent": true, "reason": "..."}',
            params.judge_reasks,
        ).value
        text = ask(
            judges.text,
            text_judge_request(ctx, cand.entry, params),
            parse_text_verdict,
            '{"repeats_context": false, ..., "reason": "..."}',
            params.judge_reasks,
        ).value
    except (ModelError, ParseError) as exc:
        judged.error = f"{type(exc).__name__}: {exc}"
        return judged
    q = quality_reward(video, text, entry_tokens, params)
    row["quality"] = {"video": asdict(video), "text": asdict(text), **asdict(q)}
    judged.correct = q.correct
    return judged


def _richness(
    ctx: ClipContext, judged: list[_Judged], judges: Judges, params: RewardParams
) -> tuple[dict[str, float], str]:
    """Bonus per correct candidate name (empty when the group has one candidate); error text."""
    if len(judged) < 2:
        return {}, ""
    correct = [j for j in judged if j.correct]
    if not correct:
        return {}, ""
    if len(correct) == 1:
        return {correct[0].candidate.name: params.richness_bonus}, ""
    entries = [j.candidate.entry for j in correct]
    try:
        ranking = ask(
            judges.text,
            richness_request(ctx, entries, params),
            lambda t: parse_ranking(t, len(entries)),
            '{"ranking": [[1], [2, 3]], "reason": "..."}',
            params.judge_reasks,
        ).value
    except (ModelError, ParseError) as exc:
        return {}, f"{type(exc).__name__}: {exc}"
    ranks = fractional_ranks(ranking)
    bonuses = richness_bonuses(ranking, params.richness_bonus)
    out = {}
    for i, j in enumerate(correct, 1):
        out[j.candidate.name] = bonuses[i]
        j.row["richness_rank"] = {"rank": ranks[i], "of": len(correct)}
    return out, ""


def score_clip(
    ctx: ClipContext,
    candidates: Sequence[Candidate],
    judges: Judges,
    params: RewardParams,
    submit: Callable[..., Future[Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows for the candidates of one clip: the four figures and the total, or the error.

    `submit` (an executor's) runs the candidates' judge calls concurrently; the richness call
    follows once every candidate is judged.
    """
    if submit is None:
        judged = [_judge_candidate(ctx, c, judges, params) for c in candidates]
    else:
        futures = [submit(_judge_candidate, ctx, c, judges, params) for c in candidates]
        judged = [f.result() for f in futures]
    if any(j.error for j in judged):
        bonuses, rich_error = {}, ""
    elif submit is not None:
        bonuses, rich_error = submit(_richness, ctx, judged, judges, params).result()
    else:
        bonuses, rich_error = _richness(ctx, judged, judges, params)
    failed = [f"{j.candidate.name}: {j.error}" for j in judged if j.error]
    if rich_error:
        failed.append(f"richness: {rich_error}")
    rows = []
    for j in judged:
        row = j.row
        if failed:
            # A group is scored as a whole: richness ranks all its correct candidates together.
            row.update(status="failed", error="; ".join(failed))
            rows.append(row)
            continue
        if len(judged) < 2:
            row["richness"] = None
        else:
            row["richness"] = {
                "bonus": bonuses.get(j.candidate.name, 0.0),
                **row.pop("richness_rank", {"rank": None, "of": len(bonuses)}),
            }
        parts = [
            (row["format"] or {}).get("reward", 0.0),
            (row["thinking"] or {}).get("reward", 0.0),
            row["quality"]["reward"],
            (row["richness"] or {}).get("bonus", 0.0),
        ]
        row.update(status="ok", error="", total=round(sum(parts), 6))
        rows.append(row)
    return rows


def score_clips(
    groups: Iterable[tuple[ClipContext, Sequence[Candidate]]],
    judges: Judges,
    params: RewardParams,
    concurrency: int = 8,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Score clip groups with at most `concurrency` groups and judge calls in flight.

    Groups are consumed lazily (`jobs.bounded_map`: their frames are in memory only while they
    are scored); `on_rows` receives each finished group's rows in completion order.
    """
    out: list[dict[str, Any]] = []
    if concurrency < 1:
        raise ConfigError(f"parameter 'concurrency': must be >= 1, got {concurrency}")
    with ThreadPoolExecutor(concurrency, thread_name_prefix="taskmem-judge") as calls:

        def one(group: tuple[ClipContext, Sequence[Candidate]]) -> list[dict[str, Any]]:
            return score_clip(group[0], group[1], judges, params, calls.submit)

        # score_clip records model failures in its rows; anything else is a bug and propagates
        for outcome in bounded_map(
            one,
            groups,
            concurrency,
            key=lambda g: g[0].clip.index,
            progress=progress,
            catch=(),
            ahead=concurrency,  # the next clips' frames are decoded while judges answer
        ):
            rows = outcome.value or []
            out.extend(rows)
            if on_rows is not None:
                on_rows(rows)
    return out


# --------------------------------------------------------------------------- summaries


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return round(sum(vals) / len(vals), 6) if vals else None


def _score_key(row: Mapping[str, Any]) -> tuple[int, str]:
    return int(row["clip"]), str(row["candidate"])


def latest_rows(rows: Iterable[Mapping[str, Any]]) -> dict[Hashable, dict[str, Any]]:
    """The latest row per (clip, candidate); an ok row wins over earlier failures."""
    return keep_latest(rows, _score_key)


def reward_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Rates and means of the four figures over the scored entries (failed ones counted apart)."""
    latest = list(latest_rows(rows).values())
    ok = [r for r in latest if r.get("status") == "ok"]
    fmt = [r["format"] for r in ok if r.get("format")]
    think = [r["thinking"] for r in ok if r.get("thinking")]
    quality = [r["quality"] for r in ok]
    judged = [q for q in quality if q.get("video")]
    rich = [r["richness"] for r in ok if r.get("richness") is not None]
    return {
        "entries": len(latest),
        "scored": len(ok),
        "failed": len(latest) - len(ok),
        "format": {
            "scored": len(fmt),
            "rate": _mean(1.0 if f["ok"] else 0.0 for f in fmt),
            "reward_mean": _mean(f["reward"] for f in fmt),
        },
        "thinking": {
            "scored": len(think),
            "tokens_mean": _mean(t["tokens"] for t in think),
            "penalized_rate": _mean(1.0 if t["reward"] < 0 else 0.0 for t in think),
            "reward_mean": _mean(t["reward"] for t in think),
        },
        "quality": {
            "correct_rate": _mean(1.0 if q["correct"] else 0.0 for q in quality),
            "reward_mean": _mean(q["reward"] for q in quality),
            "video_supported_rate": _mean(1.0 if q["video"]["supported"] else 0.0 for q in judged),
            "video_coherent_rate": _mean(1.0 if q["video"]["coherent"] else 0.0 for q in judged),
            "text_pass_rate": _mean(
                0.0 if any(q["text"]["flags"].values()) else 1.0 for q in judged
            ),
            "text_flag_rates": {
                k: _mean(1.0 if q["text"]["flags"][k] else 0.0 for q in judged) for k in TEXT_FLAGS
            },
            "within_budget_rate": _mean(1.0 if q["within_budget"] else 0.0 for q in quality),
            "entry_tokens_mean": _mean(q["tokens"] for q in quality),
        },
        "richness": {
            "scored": len(rich),
            "bonus_mean": _mean(r["bonus"] for r in rich),
            "note": None if rich else "richness needs several candidates per clip (rollouts)",
        },
        "total_mean": _mean(r["total"] for r in ok),
    }


# --------------------------------------------------------------------------- stored scores


def scores_dir(path: str | Path) -> ResumableDir:
    """`<run or rollouts>/rewards/<name>/`: scoring.json, entries.jsonl (one row per (clip,
    candidate)), summary.json."""
    return ResumableDir(
        Path(path),
        kind="rewards",
        key=_score_key,
        settings_name="scoring.json",
        rows_name="entries.jsonl",
        hint="pass another --name, or delete the directory to start over",
    )


def scoring_settings(judges: Judges, params: RewardParams, candidates: str) -> dict[str, Any]:
    return {
        "judges": judges.ids(),
        "params": params.to_json(),
        "prompts": {name: prompt_hash(name) for name in REWARD_PROMPTS},
        "candidates": candidates,
    }


def run_candidates(replayed: ReplayedClip, semantic: bool) -> list[Candidate]:
    """The stored run's own entry for a clip, as one candidate named "memory".

    A run that also wrote semantic memory stores the semantic reply as its last raw reply and
    mixes both calls' reasoning, so its format and thinking length are not scored.
    """
    rec = replayed.record
    reasks = sum(1 for w in rec.warnings if w.startswith("re-asked:"))
    completion = None if semantic else completion_text(rec.raw_reply, rec.reasoning)
    return [Candidate("memory", replayed.local_entry, completion, rec.reasoning, reasks)]


def sample_candidates(rows: Iterable[dict[str, Any]]) -> list[Candidate]:
    """Stored rollout samples (`rollouts.RolloutDir` rows) as candidates `r0`, `r1`, ..."""
    return [
        Candidate(
            name=f"r{int(r['candidate'])}",
            entry=r["entry"],
            completion=completion_text(r["raw_reply"], r["reasoning"]),
            reasoning=r["reasoning"],
        )
        for r in rows
    ]


def score_run(
    replay: RunReplay,
    judges: Judges,
    params: RewardParams,
    out: str | Path,
    candidates_for: Callable[[ReplayedClip], list[Candidate]],
    expected: dict[int, set[str]],
    candidates_label: str,
    concurrency: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the candidates of the replayed run's clips into `out`; resumable.

    `expected` names the candidates of each clip; a clip whose candidates all have an ok row is
    not replayed again, any other clip is scored again as a whole (the judges' replies come from
    the response cache). Returns the summary (also written to `out/summary.json`).
    """
    settings = scoring_settings(judges, params, candidates_label)
    store = scores_dir(out).open(settings)
    done = set(store.good())
    todo = {c for c, names in expected.items() if any((c, n) not in done for n in names)}

    def groups() -> Iterator[tuple[ClipContext, list[Candidate]]]:
        for replayed in replay.clips(only=todo):
            yield ClipContext.from_replayed(replayed), candidates_for(replayed)

    def on_rows(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            store.append(row)

    bar = Progress("score", total=len(todo), unit="clip", enabled=progress)
    score_clips(groups(), judges, params, concurrency, on_rows, bar)
    summary = {**reward_summary(store.rows()), **settings}
    failed = summary["failed"] > 0 or len(store.good()) < sum(len(v) for v in expected.values())
    return store.write_summary(summary, "partial" if failed else "complete")


def score_memory(
    replay: RunReplay,
    judges: Judges,
    params: RewardParams,
    name: str,
    rollouts: str | None = None,
    concurrency: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a run's own entries (`RUN/rewards/<name>/`) or its rollout candidates
    (`RUN/rollouts/<tag>/rewards/<name>/`); the summary, with its `path`."""
    if rollouts is None:
        semantic = replay.params.semantic
        out = replay.run.path / "rewards" / name
        summary = score_run(
            replay,
            judges,
            params,
            out,
            lambda r: run_candidates(r, semantic),
            {c: {"memory"} for c in replay.records},
            "memory",
            concurrency,
            progress,
        )
        return {"path": str(out), **summary}
    from taskmem_lab.training.rollouts import rollouts_dir, samples_by_clip

    store = rollouts_dir(replay.run.path / "rollouts" / rollouts)
    store.settings()
    samples = samples_by_clip(store)
    if not samples:
        raise StoreError(f"{store.path} holds no sampled candidates")
    out = store.path / "rewards" / name
    summary = score_run(
        replay,
        judges,
        params,
        out,
        lambda r: sample_candidates(samples.get(r.clip.index, [])),
        {c: {f"r{int(s['candidate'])}" for s in rows} for c, rows in samples.items()},
        f"rollouts/{rollouts}",
        concurrency,
        progress,
    )
    return {"path": str(out), **summary}


def reward_summaries(run: str | Path) -> dict[str, dict[str, Any]]:
    """Every stored score summary of a run (`RUN/rewards/<name>/summary.json`) by name, for
    notebooks that plot memory quality next to QA accuracy."""
    root = Path(run) / "rewards"
    if not root.is_dir():
        return {}
    return {
        p.parent.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(root.glob("*/summary.json"))
    }


__all__ = [
    "REWARD_PROMPTS",
    "TEXT_FLAGS",
    "Candidate",
    "ClipContext",
    "FormatCheck",
    "Judges",
    "Quality",
    "RewardParams",
    "TextVerdict",
    "VideoVerdict",
    "bad_face_tags",
    "check_format",
    "completion_text",
    "compute_score",
    "count_tokens",
    "fractional_ranks",
    "latest_rows",
    "parse_pair_verdict",
    "parse_ranking",
    "parse_text_verdict",
    "parse_video_verdict",
    "quality_reward",
    "reward_summaries",
    "richness_bonuses",
    "richness_request",
    "rule_rewards",
    "run_candidates",
    "sample_candidates",
    "score_clip",
    "score_clips",
    "score_memory",
    "score_run",
    "scores_dir",
    "scoring_settings",
    "reward_summary",
    "text_judge_request",
    "thinking_reward",
    "video_judge_request",
]
