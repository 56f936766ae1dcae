"""Judging free-form answers against a reference with an LLM: `correct` (yes/no) and a 0-5 score.

Floor 5. The judge model is always a run parameter (`taskmem eval --judge SPEC`), never an
environment default. Judges reply in many shapes: strict JSON, a Python dict with single quotes
(`{'pred': 'yes', 'score': 4}`, the style of the CVRR/Video-ChatGPT judges EgoTempo used), JSON
in a code fence, or loose `correct: yes, score: 4` text. `parse_verdict` reads all of them; a reply
it cannot read is asked again once, and if it still cannot be read the verdict is `unparseable`
(counted in its own column, never as correct).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import ChatModel, Request, Sampling, sum_usage
from taskmem_lab.errors import ParseError
from taskmem_lab.prompts import prompt_hash, render
from taskmem_lab.replies import parse_object

PROMPTS = ("judge_system", "judge_user", "reask")
MAX_SCORE = 5
_CORRECT_KEYS = ("correct", "pred", "is_correct", "verdict", "judgement", "judgment", "match")
_SCORE_KEYS = ("score", "rating")
_REASON_KEYS = ("reason", "explanation", "rationale", "justification")
_YES = ("yes", "true", "correct", "right", "1", "y")
_NO = ("no", "false", "incorrect", "wrong", "0", "n")
_LOOSE_CORRECT = re.compile(
    r"\b(?:correct|pred|verdict)\W{0,4}(yes|no|true|false|correct|incorrect)\b", re.IGNORECASE
)
_LOOSE_SCORE = re.compile(r"\bscore\W{0,4}(\d+(?:\.\d+)?)", re.IGNORECASE)


def reply_object(text: str) -> dict[str, Any] | None:
    """The first `{...}` of a reply as a dict: JSON, then a Python literal, then repaired JSON."""
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        chunk = text[start : end + 1]
        try:
            value = json.loads(chunk)
        except RecursionError:
            value = None
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(chunk)  # literals only: no code runs
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = None
        if isinstance(value, dict):
            return value
    if start >= 0:
        try:
            return parse_object(text)
        except ParseError:
            return None
    return None


def yes_no(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    word = str(value).strip().strip(".!").lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise ParseError(f"'correct' must be yes or no, got {value!r}")


def _score(value: Any) -> float:
    if isinstance(value, bool):
        raise ParseError(f"'score' must be a number 0-{MAX_SCORE}, got {value!r}")
    if isinstance(value, str):
        m = re.match(r"\s*(\d+(?:\.\d+)?)", value)
        if not m:
            raise ParseError(f"'score' must be a number 0-{MAX_SCORE}, got {value!r}")
        value = m.group(1)
    try:
        score = float(value)
    except (TypeError, ValueError) as exc:
        raise ParseError(f"'score' must be a number 0-{MAX_SCORE}, got {value!r}") from exc
    if not 0 <= score <= MAX_SCORE:
        raise ParseError(f"'score' must be between 0 and {MAX_SCORE}, got {score:g}")
    return score


def _pick(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    return next((lowered[k] for k in keys if k in lowered), None)


def parse_verdict(text: str) -> tuple[bool, float, str]:
    """(correct, score 0-5, reason) from a judge reply; `ParseError` says what is missing."""
    if not text or not text.strip():
        raise ParseError("the reply was empty")
    obj = reply_object(text)
    if obj is not None:
        correct, score = _pick(obj, _CORRECT_KEYS), _pick(obj, _SCORE_KEYS)
        reason = _pick(obj, _REASON_KEYS)
    else:
        c, s = _LOOSE_CORRECT.search(text), _LOOSE_SCORE.search(text)
        correct, score = (c.group(1) if c else None), (s.group(1) if s else None)
        reason = text.strip()
    if correct is None:
        raise ParseError("the reply has no 'correct' field (yes or no)")
    if score is None:
        raise ParseError(f"the reply has no 'score' field (0-{MAX_SCORE})")
    return yes_no(correct), _score(score), "" if reason is None else str(reason).strip()


def judge_request(question: str, reference: str, candidate: str, max_tokens: int = 256) -> Request:
    user = render("judge_user", question=question, reference=reference, candidate=candidate)
    return Request.chat(
        render("judge_system"),
        user,
        Sampling(temperature=0.0, max_tokens=max_tokens),
        "judge",
    )


@dataclass
class Verdict:
    """A judge's grade of one answer, with the replies behind it."""

    status: str  # "ok" | "unparseable"
    correct: bool | None
    score: float | None
    reason: str
    model: str
    raw: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    cached: list[bool] = field(default_factory=list)
    fake: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "correct": self.correct,
            "score": self.score,
            "reason": self.reason,
            "model": self.model,
            "raw": self.raw,
            "problems": self.problems,
            "usage": self.usage,
            "latency_s": round(self.latency_s, 4),
            "cached": self.cached,
            "fake": self.fake,
            "prompts": prompt_hashes(),
        }


def prompt_hashes() -> dict[str, str]:
    return {name: prompt_hash(name) for name in PROMPTS}


VERDICT_SHAPE = '{"correct": "yes" or "no", "score": 0-5, "reason": "..."}'


def judge(
    model: ChatModel, question: str, reference: str, candidate: str, reasks: int = 1
) -> Verdict:
    """Grade `candidate` against `reference`; an unreadable reply is shown back and re-asked
    (`asking.ask`), and one still unreadable after `reasks` re-asks is `unparseable`."""
    request = judge_request(question, reference, candidate)
    verdict = Verdict("unparseable", None, None, "", model.model_id)
    try:
        asked = ask(model, request, parse_verdict, VERDICT_SHAPE, reasks)
    except ParseError as exc:
        replies, verdict.problems = exc.replies, list(exc.problems)
    else:
        replies, verdict.problems = asked.replies, asked.problems
        verdict.correct, verdict.score, verdict.reason = asked.value
        verdict.status = "ok"
    verdict.raw = [r.text for r in replies]
    verdict.cached = [r.cached for r in replies]
    verdict.latency_s = sum(r.latency_s for r in replies)
    verdict.fake = any(r.fake for r in replies)
    verdict.usage = sum_usage(r.usage for r in replies)
    return verdict
