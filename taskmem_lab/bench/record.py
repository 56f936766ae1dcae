"""The one record every benchmark converts to: a question in stream time, with its evidence.

Floor 2 (bench). A `QARecord` is what the QA step answers and the scorer scores, whatever the
source benchmark: multiple-choice questions carry their option texts (letters are implied by
position, A-D; E is reserved for "cannot tell from memory"), free-form questions carry a reference
answer. `query_time` is the stream time at which the question arrives (None: at the end of the
video); `evidence` lists the `[start, end]` stream-time windows where the answer can be seen
(a point annotation is a zero-length window).

Source fields a benchmark keeps beyond the common ones travel in `meta` (flat, JSON-able values);
the published dataset stores each of them as its own column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskmem_lab.errors import BenchmarkError

ANSWER_KINDS = ("choice", "open")
LETTERS = "ABCD"
ABSTAIN_LETTER = "E"
COMMON_FIELDS = (
    "id",
    "benchmark",
    "video_id",
    "question",
    "options",
    "answer",
    "answer_kind",
    "task_type",
    "query_time",
    "evidence",
)


def text_field(row: Mapping[str, Any], key: str, where: str) -> str:
    """`row[key]` as text, refused when it is not a string (`"question": null` would otherwise
    be asked as the text "None")."""
    value = row[key]
    if not isinstance(value, str):
        raise BenchmarkError(f"{where}: {key!r} must be text, got {value!r:.60}")
    return value


def _bad(record_id: str, message: str) -> BenchmarkError:
    return BenchmarkError(f"question {record_id!r}: {message}")


@dataclass(frozen=True)
class QARecord:
    """One benchmark question, converted to stream time."""

    id: str
    benchmark: str
    video_id: str
    question: str
    options: tuple[str, ...]
    answer: str
    answer_kind: str
    task_type: str
    query_time: float | None
    evidence: tuple[tuple[float, float], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        rid = self.id
        for name in ("id", "benchmark", "video_id", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise _bad(rid, f"field {name!r} must be a non-empty string, got {value!r}")
        if self.answer_kind not in ANSWER_KINDS:
            raise _bad(rid, f"answer_kind must be one of {ANSWER_KINDS}, got {self.answer_kind!r}")
        if self.answer_kind == "choice":
            if not 2 <= len(self.options) <= len(LETTERS):
                raise _bad(
                    rid,
                    f"a choice question needs 2-{len(LETTERS)} options, got {len(self.options)}",
                )
            allowed = LETTERS[: len(self.options)]
            if self.answer not in allowed:
                raise _bad(rid, f"answer must be one of {list(allowed)}, got {self.answer!r}")
        elif self.options:
            raise _bad(rid, "a free-form question has no options")
        if self.query_time is not None and (
            not math.isfinite(self.query_time) or self.query_time < 0
        ):
            raise _bad(rid, f"query_time must be a finite time >= 0, got {self.query_time}")
        for start, end in self.evidence:
            if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
                raise _bad(rid, f"evidence window [{start}, {end}] is not a valid span")
        clash = set(self.meta) & set(COMMON_FIELDS)
        if clash:
            raise _bad(rid, f"meta keys {sorted(clash)} clash with common fields")

    @property
    def letters(self) -> str:
        """The option letters of a choice question (`"ABCD"` for four options)."""
        return LETTERS[: len(self.options)]

    def to_row(self) -> dict[str, Any]:
        """A flat JSON/parquet row: the common fields, then the meta fields."""
        return {
            "id": self.id,
            "benchmark": self.benchmark,
            "video_id": self.video_id,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
            "answer_kind": self.answer_kind,
            "task_type": self.task_type,
            "query_time": self.query_time,
            "evidence": [[s, e] for s, e in self.evidence],
            **self.meta,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> QARecord:
        """The inverse of `to_row`; columns beyond the common ones become `meta`."""
        missing = [k for k in COMMON_FIELDS if k not in row]
        if missing:
            raise BenchmarkError(
                f"row {row.get('id', '?')!r} is not a converted benchmark row: lacks {missing}"
            )
        query_time = row["query_time"]
        if query_time is not None and isinstance(query_time, float) and math.isnan(query_time):
            query_time = None
        return cls(
            id=str(row["id"]),
            benchmark=str(row["benchmark"]),
            video_id=str(row["video_id"]),
            question=text_field(row, "question", f"question {row['id']!r}"),
            options=tuple(str(o) for o in (row["options"] or ())),
            answer=str(row["answer"]),
            answer_kind=str(row["answer_kind"]),
            task_type=str(row["task_type"]),
            query_time=None if query_time is None else float(query_time),
            evidence=tuple((float(s), float(e)) for s, e in (row["evidence"] or ())),
            meta={k: v for k, v in row.items() if k not in COMMON_FIELDS},
        )


def check_unique(records: Sequence[QARecord], where: str) -> None:
    """Ids must be unique: results are resumed and joined by id."""
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise BenchmarkError(f"{where}: question id {r.id!r} appears more than once")
        seen.add(r.id)
