"""Why an answer was wrong: was the needed fact ever written to memory?

Floor 5. For a question answered wrongly or abstained on, the judge model is asked one more
question: do the memory entries that cover the moments the question is about contain what is
needed to give the correct answer? Two scopes (`EvalParams.attribute`):

- `evidence`: the entries overlapping the question's evidence windows, widened by
  `QAParams.evidence_pad_s` (the same windows as `--context evidence`), among those finished by
  the question's arrival. A question without windows is `unattributed` (no call); windows that
  no entry overlaps mean nothing was written then: a memorization miss (no call).
- `memory`: every entry finished by the arrival time, for benchmarks without windows. The whole
  memory goes into one prompt per wrong answer, so it costs about one answerer call with
  `--context full` per error (capped by `QAParams.max_context_chars`, oldest entries first).

Each wrong or abstained answer is then classed (`error_class`): `memorization_miss` (the fact is
not in memory), `answering_miss` (it is, the answer still failed) or `unattributed` (no window, or
the judge reply could not be read). Unparseable replies are errors under either reading, so the
three counts sum to the wrong plus abstained answers. The verdict is stored in the results row
(`attribution`) with what it was asked under (`key`); a row whose key matches is never asked
again, so a rerun makes no calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import ChatModel, Request, Sampling, sum_usage
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import ParseError
from taskmem_lab.evaluation.judge import reply_object, yes_no
from taskmem_lab.evaluation.qa import QAParams, asked_at, overlaps, visible_entries
from taskmem_lab.memory import Entry, Memory
from taskmem_lab.prompts import prompt_hash, render

NONE, EVIDENCE, MEMORY = "none", "evidence", "memory"
MODES = (NONE, EVIDENCE, MEMORY)
PROMPTS = ("attribute_system", "attribute_user", "reask")
MEMORIZATION_MISS, ANSWERING_MISS, UNATTRIBUTED = (
    "memorization_miss",
    "answering_miss",
    "unattributed",
)
ERROR_CLASSES = (MEMORIZATION_MISS, ANSWERING_MISS, UNATTRIBUTED)
PRESENCE_SHAPE = '{"in_memory": "yes" or "no", "reason": "..."}'
_PRESENCE_KEYS = ("in_memory", "contains", "present", "answerable", "verdict")
_LOOSE = re.compile(r"\bin[_ ]memory\W{0,4}(yes|no|true|false)\b", re.IGNORECASE)


def parse_presence(text: str) -> tuple[bool, str]:
    """(the memory holds the answer, reason) from a reply; `ParseError` says what is missing."""
    if not text or not text.strip():
        raise ParseError("the reply was empty")
    obj = reply_object(text)
    if obj is not None:
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        value = next((lowered[k] for k in _PRESENCE_KEYS if k in lowered), None)
        reason = str(lowered.get("reason") or "").strip()
    else:
        m = _LOOSE.search(text)
        value, reason = (m.group(1) if m else None), text.strip()
    if value is None:
        raise ParseError("the reply has no 'in_memory' field (yes or no)")
    try:
        return yes_no(value), reason
    except ParseError as exc:
        raise ParseError(f"'in_memory' must be yes or no, got {value!r}") from exc


def prompt_hashes() -> dict[str, str]:
    return {name: prompt_hash(name) for name in PROMPTS}


def attribution_key(mode: str, model: ChatModel, qa: QAParams) -> dict[str, Any]:
    """What a verdict depends on besides the memory (rows are re-asked when it changes)."""
    return {
        "mode": mode,
        "model": model.model_id,
        "prompts": prompt_hashes(),
        "pad_s": qa.evidence_pad_s if mode == EVIDENCE else None,
        "memory_kind": qa.memory_kind,
        "max_chars": qa.max_context_chars if mode == MEMORY else None,
    }


def correct_answer(record: QARecord) -> str:
    """The reference as text: `B. Strawberries` for a choice question."""
    if record.answer_kind == "choice":
        return f"{record.answer}. {record.options[record.letters.index(record.answer)]}"
    return record.answer


def scope_entries(
    record: QARecord, memory: Memory, mode: str, pad_s: float = 0.0
) -> tuple[list[Entry], str]:
    """The entries a verdict is asked over, and the scope in words."""
    visible = visible_entries(memory, record)
    if mode == MEMORY:
        return visible, "everything written before the question"
    chosen = [
        e for e in visible if any(overlaps(e, a - pad_s, b + pad_s) for a, b in record.evidence)
    ]
    return chosen, "the notes written at the moments the question is about"


def attribution_request(record: QARecord, text: str, scope: str) -> Request:
    options = ""
    if record.answer_kind == "choice":
        listed = zip(record.letters, record.options, strict=True)
        options = "OPTIONS:\n" + "\n".join(f"{k}. {v}" for k, v in listed) + "\n"
    user = render(
        "attribute_user",
        asked_at=asked_at(record),
        question=record.question,
        options=options,
        answer=correct_answer(record),
        scope=scope,
        memory=text,
    )
    return Request.chat(
        render("attribute_system"), user, Sampling(temperature=0.0, max_tokens=256), "attribute"
    )


def attribute(
    model: ChatModel,
    record: QARecord,
    memory: Memory,
    key: Mapping[str, Any],
    reasks: int = 1,
) -> dict[str, Any]:
    """The stored verdict for one question (`ModelError` propagates): `status` is `ok`,
    `unparseable` or `no_window`; `in_memory` is True, False or None."""
    mode = key["mode"]
    base: dict[str, Any] = {"key": dict(key), "raw": [], "cached": [], "usage": {}, "fake": False}
    if mode == EVIDENCE and not record.evidence:
        return {**base, "status": "no_window", "in_memory": None, "entries": 0, "spans": [],
                "reason": "the question has no evidence window"}  # fmt: skip
    entries, scope = scope_entries(record, memory, mode, key.get("pad_s") or 0.0)
    text = Memory(entries).to_text(key["memory_kind"])
    cap, truncated = key.get("max_chars") or 0, False
    while cap and len(text) > cap and entries:
        entries, truncated = entries[1:], True
        text = Memory(entries).to_text(key["memory_kind"])
    spans = [[e.start, e.end] for e in entries]
    if not text:
        return {**base, "status": "ok", "in_memory": False, "entries": 0, "spans": [],
                "reason": "no memory entry covers these moments"}  # fmt: skip
    request = attribution_request(record, text, scope)
    out = {**base, "entries": len(entries), "spans": spans, "truncated": truncated}
    try:
        asked = ask(model, request, parse_presence, PRESENCE_SHAPE, reasks)
    except ParseError as exc:
        replies = exc.replies
        out.update(status="unparseable", in_memory=None, reason="", problems=list(exc.problems))
    else:
        replies = asked.replies
        in_memory, reason = asked.value
        out.update(status="ok", in_memory=in_memory, reason=reason, problems=asked.problems)
    out["raw"] = [r.text for r in replies]
    out["cached"] = [r.cached for r in replies]
    out["usage"] = sum_usage(r.usage for r in replies)
    out["fake"] = any(r.fake for r in replies)
    return out


def is_current(attribution: Mapping[str, Any] | None, key: Mapping[str, Any]) -> bool:
    """Whether a stored verdict was asked under `key` (else it is asked again)."""
    return bool(attribution) and dict(attribution.get("key") or {}) == dict(key)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- classes and tables


def error_class(row: Mapping[str, Any], mode: str | None = None) -> str | None:
    """None for a correct answer; else the class of its error (see the module docstring).
    `mode` given: a verdict asked under another mode counts as unattributed."""
    if row.get("correct"):
        return None
    a = row.get("attribution") or {}
    if not a or a.get("status") != "ok" or (mode and a.get("key", {}).get("mode") != mode):
        return UNATTRIBUTED
    return ANSWERING_MISS if a.get("in_memory") else MEMORIZATION_MISS


def error_counts(rows: Sequence[Mapping[str, Any]], mode: str | None = None) -> dict[str, int]:
    counts = dict.fromkeys(ERROR_CLASSES, 0)
    for row in rows:
        cls = error_class(row, mode)
        if cls is not None:
            counts[cls] += 1
    return counts


def error_split(rows: Sequence[Mapping[str, Any]], mode: str | None = None) -> list[dict[str, Any]]:
    """Per benchmark: the overall line, then one per task type: questions, errors, and each
    class's count and share of the errors (NaN when there is no error)."""
    out = []
    for bench in sorted({r["benchmark"] for r in rows}):
        mine = [r for r in rows if r["benchmark"] == bench]
        groups = [("all", mine)] + [
            (t, [r for r in mine if r["task_type"] == t])
            for t in sorted({r["task_type"] for r in mine})
        ]
        for value, part in groups:
            counts = error_counts(part, mode)
            errors = sum(counts.values())
            line: dict[str, Any] = {
                "benchmark": bench,
                "group": "all" if value == "all" else "task_type",
                "value": value,
                "n": len(part),
                "errors": errors,
            }
            for cls in ERROR_CLASSES:
                line[cls] = counts[cls]
                line[f"{cls}_share"] = counts[cls] / errors if errors else math.nan
            out.append(line)
    return out


def errors_markdown(split: Sequence[Mapping[str, Any]], mode: str) -> str:
    """The error split as a markdown table (shares of the errors, in percent)."""
    head = ["benchmark", "group", "n", "errors", "memorization miss", "answering miss",
            "unattributed"]  # fmt: skip
    lines = [
        f"\n## Why answers were wrong (--attribute {mode})\n",
        "Shares of the wrong and abstained answers, in percent (counts in brackets).\n",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for s in split:
        cells = [
            s["benchmark"],
            "all" if s["group"] == "all" else f"task_type: {s['value']}",
            str(s["n"]),
            str(s["errors"]),
        ]
        for cls in ERROR_CLASSES:
            share = s[f"{cls}_share"]
            cells.append("–" if math.isnan(share) else f"{100 * share:.1f} ({s[cls]})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
