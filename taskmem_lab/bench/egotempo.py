"""EgoTempo as a streaming-memory benchmark: free-form questions asked at the end of a clip.

Source: `egotempo_openQA.json` of EgoTempo (Plizzari et al., "Omnia de EgoTempo: Benchmarking
Temporal Understanding of Multi-Modal LLMs in Egocentric Videos", CVPR 2025; 500 questions in 10
temporal categories over clips cut from Ego4D videos)::

    {"info": {...},
     "annotations": [{"question_id": "<uid>_368.40_403.56_0", "clip_id": "<uid>_368.40_403.56",
                      "question_type": "object-specific action",
                      "question": "What does the person pick up before ...?",
                      "answer": "The oil remover spray."}]}

`clip_id` is `{ego4d_uid}_{start_s}_{end_s}`: the clip is `[start_s, end_s]` of the Ego4D video.

Conversion: `id` = `question_id`; `video_id` = `clip_id` (memorize the cut clip saved as
`{clip_id}.mp4`, whose stream time starts at 0); `query_time` = `end_s - start_s`, the end of the
clip; free-form answers (`answer_kind` "open", judged by an LLM); no evidence windows. The Ego4D
uid and the clip bounds in the source video are kept as meta.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmem_lab.bench.base import Benchmark, records_from_path, require_fields
from taskmem_lab.bench.record import QARecord, check_unique
from taskmem_lab.errors import BenchmarkError

NAME = "egotempo"
FIELDS = ("question_id", "clip_id", "question_type", "question", "answer")


def parse_clip_id(clip_id: str) -> tuple[str, float, float]:
    """`"<uid>_368.40_403.56"` -> (uid, 368.40, 403.56)."""
    parts = str(clip_id).rsplit("_", 2)
    try:
        uid, start, end = parts[0], float(parts[1]), float(parts[2])
    except (IndexError, ValueError) as exc:
        raise BenchmarkError(
            f"clip_id {clip_id!r} is not {{ego4d_uid}}_{{start_s}}_{{end_s}}"
        ) from exc
    if not uid or start < 0 or end <= start:
        raise BenchmarkError(f"clip_id {clip_id!r}: the clip must end after it starts")
    return uid, start, end


def convert_row(row: Mapping[str, Any], where: str) -> QARecord:
    require_fields(row, FIELDS, where)
    uid, start, end = parse_clip_id(row["clip_id"])
    return QARecord(
        id=str(row["question_id"]),
        benchmark=NAME,
        video_id=str(row["clip_id"]),
        question=str(row["question"]).strip(),
        options=(),
        answer=str(row["answer"]).strip(),
        answer_kind="open",
        task_type=str(row["question_type"]),
        query_time=round(end - start, 6),
        evidence=(),
        meta={"ego4d_uid": uid, "clip_start": start, "clip_end": end},
    )


def from_rows(rows: Sequence[Mapping[str, Any]], origin: str) -> list[QARecord]:
    records = [convert_row(r, f"{origin} annotation {i}") for i, r in enumerate(rows)]
    check_unique(records, origin)
    return records


def from_path(path: Path) -> list[QARecord]:
    """`egotempo_openQA.json` (`{info, annotations}`), or a folder holding it."""
    return records_from_path(path, from_rows, "*.json")


BENCHMARK = Benchmark(
    name=NAME,
    title="EgoTempo",
    from_path=from_path,
    from_rows=from_rows,
    answer_kind="open",
    hub_original=None,
    groups=(),
    has_evidence=False,
)
