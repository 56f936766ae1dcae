"""Memory-quality rewards for episodic entries: Format, Thinking length, Quality and Richness.

Floor 4. The same figures train the memorization policy (Phase One RL) and measure memory
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
(never picked from the environment); `score_groups` runs them with bounded concurrency and
`score_run` stores one row per entry beside the run (`rewards/<name>/entries.jsonl`, resumable)
with `summary.json` (rates and means).
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import ChatModel, Message, Request, Sampling, TextPart, VideoPart
from taskmem_lab.errors import ConfigError, ModelError, ParseError, StoreError
from taskmem_lab.ids import LOCAL_ID
from taskmem_lab.memorize import preceding_text
from taskmem_lab.params import require
from taskmem_lab.prompts import prompt_hash, render
from taskmem_lab.replay import ReplayedClip, RunReplay
from taskmem_lab.replies import parse_object
from taskmem_lab.schema import SCHEMA_VERSION, ClipSpec
from taskmem_lab.store import append_jsonl, atomic_write_json, read_jsonl
from taskmem_lab.timefmt import hms, span
from taskmem_lab.video import Frame

REWARD_PROMPTS = (
    "reward_video_system",
    "reward_video_user",
    "reward_text_system",
    "reward_text_user",
    "reward_richness_system",
    "reward_richness_user",
)
TEXT_FLAGS = (
    "repeats_context",
    "mentions_boxes_or_coordinates",
    "cites_subtitles",
    "speaker_label_in_quotes",
    "conclusion_statement",
)


@dataclass(frozen=True)
class RewardParams:
    """Parameters of the memory-quality rewards.

    Attributes:
        think_threshold: reasoning tokens allowed without penalty (T).
        think_penalty: size of the full thinking penalty, reached at 2T.
        max_entry_tokens: length budget of a correct entry.
        correct_reward: quality reward of a correct entry.
        wrong_reward: quality reward of any other entry.
        format_reward: format reward of a well-formed reply.
        format_fail: format reward of a malformed reply.
        richness_bonus: richness bonus of the richest correct candidate.
        require_thinking: a reply without a closed reasoning block fails the format.
        tokenizer: Hugging Face tokenizer (name or local path) that counts tokens; None counts
            words and punctuation marks.
        judge_max_tokens: completion budget of a judge call.
        judge_reasks: how often an unreadable judge reply is asked again.
    """

    think_threshold: int = 1024
    think_penalty: float = 0.5
    max_entry_tokens: int = 300
    correct_reward: float = 1.0
    wrong_reward: float = 0.0
    format_reward: float = 1.0
    format_fail: float = 0.0
    richness_bonus: float = 0.5
    require_thinking: bool = False
    tokenizer: str | None = None
    judge_max_tokens: int = 1024
    judge_reasks: int = 1

    def __post_init__(self) -> None:
        require(self.think_threshold >= 1, "think_threshold", "must be >= 1 token")
        require(self.think_penalty >= 0, "think_penalty", "must be >= 0 (the size of a penalty)")
        require(self.max_entry_tokens >= 1, "max_entry_tokens", "must be >= 1 token")
        require(self.richness_bonus >= 0, "richness_bonus", "must be >= 0")
        require(self.judge_max_tokens >= 16, "judge_max_tokens", "must be >= 16")
        require(0 <= self.judge_reasks <= 5, "judge_reasks", "must be in 0..5")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- token counts

_TOKEN = re.compile(r"\w+|[^\w\s]")


@cache
def _hf_tokenizer(name: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ConfigError(
            "counting tokens with a tokenizer needs transformers: pip install 'taskmem_lab[hf]'"
        ) from exc
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise ConfigError(f"tokenizer {name!r} could not be loaded: {exc}") from exc


def count_tokens(text: str, tokenizer: str | None = None) -> int:
    """Tokens of `text`: with a Hugging Face tokenizer, or words and punctuation marks."""
    if not text:
        return 0
    if tokenizer:
        return len(_hf_tokenizer(tokenizer).encode(text, add_special_tokens=False))
    return len(_TOKEN.findall(text))


# --------------------------------------------------------------------------- format

_TAG = re.compile(r"<[^<>\s]{1,40}>|<[^<>]{0,40}face[^<>]{0,40}>", re.IGNORECASE)
_FACE_WORD = re.compile(r"\[?face[\s_-]?\d+\]?", re.IGNORECASE)


def bad_face_tags(text: str) -> list[str]:
    """Tags in `text` other than `<face_N>`: `<Face_1>`, `<face 1>`, `<person_2>`, `[face_3]`,
    a bare `face_4`; ordinary words ("her face") pass."""
    bad, covered = [], []
    for m in _TAG.finditer(text):
        covered.append(m.span())
        if not LOCAL_ID.fullmatch(m.group(0)):
            bad.append(m.group(0))
    for m in _FACE_WORD.finditer(text):
        if not any(a <= m.start() and m.end() <= b for a, b in covered):
            bad.append(m.group(0))
    return bad


@dataclass(frozen=True)
class FormatCheck:
    """The format verdict of one completion and, when it is readable, its description."""

    ok: bool
    problems: tuple[str, ...]
    description: str | None
    reasoning: str


def check_format(completion: str, require_thinking: bool = False) -> FormatCheck:
    """Strict format check of a full completion (reasoning block + answer)."""
    problems: list[str] = []
    opens, closes = completion.count("<think>"), completion.count("</think>")
    answer, reasoning = completion, ""
    if closes > 1:
        problems.append(f"the reasoning block closes {closes} times")
    if opens > 1:
        problems.append(f"the reasoning block opens {opens} times")
    if opens > closes:
        problems.append("the reasoning block never closes")
    if closes >= 1:
        head, answer = completion.rsplit("</think>", 1)
        reasoning = head.replace("<think>", "").strip()
        if opens == 1 and head.strip() and not head.lstrip().startswith("<think>"):
            problems.append("text before the reasoning block")
    elif require_thinking:
        problems.append("no reasoning block")
    answer = answer.strip()
    description: str | None = None
    try:
        obj = json.loads(answer)
    except json.JSONDecodeError:
        problems.append("the answer is not strict JSON")
        obj = None
    if obj is not None:
        if not isinstance(obj, dict):
            problems.append("the answer is not a JSON object")
        elif list(obj) != ["description"]:
            problems.append(f"the keys must be exactly ['description'], got {sorted(obj)}")
        elif not isinstance(obj["description"], str) or not obj["description"].strip():
            problems.append("'description' is not a non-empty string")
        else:
            description = obj["description"].strip()
            bad = bad_face_tags(description)
            if bad:
                problems.append(f"invalid face tags {bad} (only <face_N>)")
    return FormatCheck(not problems, tuple(problems), description, reasoning)


def completion_text(answer: str, reasoning: str) -> str:
    """A backend's split reply put back together as the policy produced it."""
    return f"<think>\n{reasoning}\n</think>\n\n{answer}" if reasoning else answer


# --------------------------------------------------------------------------- thinking length


def thinking_reward(tokens: int, threshold: int, penalty: float) -> float:
    """0 up to `threshold` tokens, then linearly down to `-penalty` at `2 * threshold`."""
    if tokens <= threshold:
        return 0.0
    return -penalty * min(1.0, (tokens - threshold) / threshold)


def rule_rewards(completion: str, params: RewardParams | None = None) -> dict[str, float]:
    """Format and thinking-length rewards of a raw completion: the judge-free part of the reward,
    cheap enough to compute inside a trainer's reward function."""
    params = params or RewardParams()
    fmt = check_format(completion, params.require_thinking)
    tokens = count_tokens(fmt.reasoning, params.tokenizer)
    fmt_reward = params.format_reward if fmt.ok else params.format_fail
    think = thinking_reward(tokens, params.think_threshold, params.think_penalty)
    return {"score": fmt_reward + think, "format": fmt_reward, "thinking": think}


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any = None, extra_info: Any = None
) -> dict[str, float]:
    """A verl custom reward function (`custom_reward_function.name: compute_score`): the rule
    rewards with default parameters; judge-based Quality and Richness come from
    `score-memory` or a reward server."""
    return rule_rewards(solution_str)


# --------------------------------------------------------------------------- judge verdicts


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "false", "no"):
        return value.strip().lower() in ("true", "yes")
    raise ParseError(f"the JSON object needs a true/false field {key!r}")


@dataclass(frozen=True)
class VideoVerdict:
    supported: bool
    coherent: bool
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.supported and self.coherent


@dataclass(frozen=True)
class TextVerdict:
    flags: dict[str, bool]
    reason: str = ""

    @property
    def passed(self) -> bool:
        return not any(self.flags.values())


def parse_video_verdict(text: str) -> VideoVerdict:
    obj = parse_object(text)
    return VideoVerdict(_bool(obj, "supported"), _bool(obj, "coherent"), str(obj.get("reason", "")))


def parse_text_verdict(text: str) -> TextVerdict:
    obj = parse_object(text)
    return TextVerdict({k: _bool(obj, k) for k in TEXT_FLAGS}, str(obj.get("reason", "")))


def parse_ranking(text: str, k: int) -> list[list[int]]:
    """Groups of candidate numbers 1..k, best first; every number exactly once."""
    obj = parse_object(text)
    ranking = obj.get("ranking")
    if not isinstance(ranking, list) or not ranking:
        raise ParseError("the JSON object needs a non-empty list field 'ranking'")
    groups: list[list[int]] = []
    for g in ranking:
        items = g if isinstance(g, list) else [g]
        try:
            groups.append([int(x) for x in items])
        except (TypeError, ValueError) as exc:
            raise ParseError(f"'ranking' must hold candidate numbers, got {g!r}") from exc
    flat = sorted(x for g in groups for x in g)
    if flat != list(range(1, k + 1)):
        raise ParseError(f"'ranking' must list each candidate 1..{k} exactly once, got {flat}")
    return [g for g in groups if g]


def parse_pair_verdict(text: str) -> str:
    """ "A", "B" or "tie"."""
    obj = parse_object(text)
    better = str(obj.get("better", "")).strip().strip(".").lower()
    mapping = {"a": "A", "b": "B", "tie": "tie", "entry a": "A", "entry b": "B", "neither": "tie"}
    if better not in mapping:
        raise ParseError('the JSON object needs a field "better" with "A", "B" or "tie"')
    return mapping[better]


# --------------------------------------------------------------------------- quality, richness


@dataclass(frozen=True)
class Quality:
    correct: bool
    reward: float
    tokens: int
    within_budget: bool


def quality_reward(
    video: VideoVerdict | None, text: TextVerdict | None, tokens: int, params: RewardParams
) -> Quality:
    """Correct when both judges pass and the entry is within the length budget."""
    within = tokens <= params.max_entry_tokens
    correct = bool(video and video.passed and text and text.passed and within)
    return Quality(
        correct, params.correct_reward if correct else params.wrong_reward, tokens, within
    )


def fractional_ranks(ranking: Sequence[Sequence[int]]) -> dict[int, float]:
    """Rank of each candidate (1 = best); tied candidates share the mean of their positions."""
    ranks: dict[int, float] = {}
    position = 1
    for group in ranking:
        mean = position + (len(group) - 1) / 2
        for c in group:
            ranks[c] = mean
        position += len(group)
    return ranks


def richness_bonuses(ranking: Sequence[Sequence[int]], bonus: float) -> dict[int, float]:
    """Normalized bonus per candidate: `bonus * (k - r) / (k - 1)`; a lone candidate gets `bonus`."""
    ranks = fractional_ranks(ranking)
    k = len(ranks)
    if k == 1:
        return {c: bonus for c in ranks}
    return {c: bonus * (k - r) / (k - 1) for c, r in ranks.items()}


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
    return Request(
        messages=(Message.text("system", render("reward_video_system")), Message("user", parts)),
        sampling=_judge_sampling(params),
        purpose="reward_video",
    )


def text_judge_request(ctx: ClipContext, entry: str, params: RewardParams) -> Request:
    user = render("reward_text_user", preceding=ctx.preceding, entry=entry)
    return Request(
        messages=(
            Message.text("system", render("reward_text_system")),
            Message.text("user", user),
        ),
        sampling=_judge_sampling(params),
        purpose="reward_text",
    )


def richness_request(ctx: ClipContext, entries: Sequence[str], params: RewardParams) -> Request:
    candidates = "\n".join(
        f'<candidate n="{i}">\n{e}\n</candidate>' for i, e in enumerate(entries, 1)
    )
    user = render(
        "reward_richness_user", preceding=ctx.preceding, candidates=candidates, **ctx.times
    )
    return Request(
        messages=(
            Message.text("system", render("reward_richness_system")),
            Message.text("user", user),
        ),
        sampling=_judge_sampling(params),
        purpose="reward_richness",
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


def score_group(
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


def score_groups(
    groups: Iterable[tuple[ClipContext, Sequence[Candidate]]],
    judges: Judges,
    params: RewardParams,
    concurrency: int = 8,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Score clip groups with at most `concurrency` judge calls in flight.

    Groups are consumed lazily and at most `2 * concurrency` are held at once (their frames are
    in memory); `on_rows` receives each finished group's rows in completion order.
    """
    if concurrency < 1:
        raise ConfigError(f"parameter 'concurrency': must be >= 1, got {concurrency}")
    out: list[dict[str, Any]] = []
    lock = threading.Lock()

    def done(rows: list[dict[str, Any]]) -> None:
        with lock:
            out.extend(rows)
            if on_rows is not None:
                on_rows(rows)

    with (
        ThreadPoolExecutor(concurrency, thread_name_prefix="taskmem-judge") as calls,
        ThreadPoolExecutor(concurrency, thread_name_prefix="taskmem-group") as group_pool,
    ):
        pending: deque[Future[list[dict[str, Any]]]] = deque()
        for ctx, cands in groups:
            pending.append(group_pool.submit(score_group, ctx, cands, judges, params, calls.submit))
            while len(pending) >= 2 * concurrency or (pending and pending[0].done()):
                done(pending.popleft().result())
        while pending:
            done(pending.popleft().result())
    return out


# --------------------------------------------------------------------------- summaries


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return round(sum(vals) / len(vals), 6) if vals else None


def latest_rows(rows: Iterable[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """The latest row per (clip, candidate); an ok row wins over earlier failures."""
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        key = (int(r["clip"]), str(r["candidate"]))
        if r.get("status") == "ok" or latest.get(key, r).get("status") != "ok":
            latest[key] = r
    return dict(sorted(latest.items()))


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
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


@dataclass
class ScoreDir:
    """`<run or rollouts>/rewards/<name>/`: scoring.json, entries.jsonl, summary.json."""

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def entries_path(self) -> Path:
        return self.path / "entries.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def open(self, settings: dict[str, Any]) -> ScoreDir:
        """Create, or reopen for resuming when made with the same judges, prompts and params."""
        manifest = self.path / "scoring.json"
        if manifest.is_file():
            old = json.loads(manifest.read_text(encoding="utf-8"))
            for key in ("judges", "params", "prompts", "candidates"):
                if old.get(key) != settings.get(key):
                    raise StoreError(
                        f"{self.path} holds scores made with a different {key!r}; "
                        "pass another --name, or delete the directory to start over"
                    )
        else:
            atomic_write_json(manifest, {"schema": SCHEMA_VERSION, "kind": "rewards", **settings})
        self.settings = settings
        return self

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.entries_path)

    def done(self) -> set[tuple[int, str]]:
        return {k for k, r in latest_rows(self.rows()).items() if r.get("status") == "ok"}

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            append_jsonl(self.entries_path, row)

    def write_summary(self) -> dict[str, Any]:
        summary = {**summarize(self.rows()), **self.settings}
        atomic_write_json(self.summary_path, summary)
        return summary


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
    from tqdm.auto import tqdm

    store = ScoreDir(Path(out)).open(scoring_settings(judges, params, candidates_label))
    done = store.done()
    todo = {c for c, names in expected.items() if any((c, n) not in done for n in names)}
    bar = tqdm(total=len(todo), disable=not progress, desc="score", unit="clip")

    def groups() -> Iterator[tuple[ClipContext, list[Candidate]]]:
        for replayed in replay.clips(only=todo):
            yield ClipContext.from_replayed(replayed), candidates_for(replayed)

    def on_rows(rows: list[dict[str, Any]]) -> None:
        store.append(rows)
        bar.update(1)

    score_groups(groups(), judges, params, concurrency, on_rows)
    bar.close()
    return store.write_summary()


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
    from taskmem_lab.rollouts import RolloutDir

    store = RolloutDir(replay.run.path / "rollouts" / rollouts)
    store.manifest()
    samples = store.by_clip()
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
