"""Reward arithmetic and judge-reply parsers: pure functions, no model calls.

Floor 5. Format (`check_format`), thinking length (`thinking_reward`), their sum
(`rule_rewards`, `compute_score`), judge verdict parsers, the quality reward (`quality_reward`)
and the richness bonuses (`richness_bonuses`). The rules are described in `rewards`, which runs
the judges and scores runs, and re-exports every public name here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from taskmem_lab.errors import ConfigError, ParseError
from taskmem_lab.face_ids import LOCAL_ID
from taskmem_lab.params import check_finite, check_model_call, check_param
from taskmem_lab.replies import parse_object

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
        check_finite(self)
        check_param(self.think_threshold >= 1, "think_threshold", "must be >= 1 token")
        check_param(
            self.think_penalty >= 0, "think_penalty", "must be >= 0 (the size of a penalty)"
        )
        check_param(self.max_entry_tokens >= 1, "max_entry_tokens", "must be >= 1 token")
        check_param(self.richness_bonus >= 0, "richness_bonus", "must be >= 0")
        check_model_call(self, "judge_")

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
    except (json.JSONDecodeError, RecursionError):
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
