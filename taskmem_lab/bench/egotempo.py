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
A few published clips start slightly below zero (`<uid>_-0.1055..._66.97...`): the start is
clamped at 0 (`clip_start`) and the raw value kept (`clip_start_raw`); only end > start is required.
Question types in the file include "object-specific action", "action-specific object",
"temporal event ordering", "counting actions" and "counting objects".

The original TaskMem scripts read a converted `video_info.json` instead: `{question type or
"all": [{"videoID": <clip_id>, "question", "answer", ...}]}`; it loads too (ids
`{clip_id}_{k}` when rows have no `question_id`).

Conversion: `id` = `question_id`; `video_id` = `clip_id` (memorize the cut clip saved as
`{clip_id}.mp4`, whose stream time starts at 0); `query_time` = None: EgoTempo asks at the end of
the clip, so everything memorized from the clip is available (not `end_s - start_s` rounded: a
clip cut to whole frames can be slightly longer, and its last entry must not be hidden);
free-form answers (`answer_kind` "open", judged by an LLM); no evidence windows. The Ego4D uid
and the clip bounds in the source video are kept as meta.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmem_lab.bench.base import TASK_KEY, Benchmark, located, records_from_path, require_fields
from taskmem_lab.bench.record import QARecord, check_unique, text_field
from taskmem_lab.errors import BenchmarkError

NAME = "egotempo"
FIELDS = ("question_id", "clip_id", "question_type", "question", "answer")


def parse_clip_id(clip_id: str) -> tuple[str, float, float]:
    """`"<uid>_368.40_403.56"` -> (uid, 368.40, 403.56); a start may be slightly below zero."""
    parts = str(clip_id).rsplit("_", 2)
    try:
        uid, start, end = parts[0], float(parts[1]), float(parts[2])
    except (IndexError, ValueError) as exc:
        raise BenchmarkError(
            f"clip_id {clip_id!r} is not {{ego4d_uid}}_{{start_s}}_{{end_s}}"
        ) from exc
    if not uid or not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise BenchmarkError(f"clip_id {clip_id!r}: the clip must end after it starts")
    return uid, start, end


def convert_row(row: Mapping[str, Any], where: str, index: int = 0) -> QARecord:
    """One annotation of `egotempo_openQA.json`, or one row of the original TaskMem
    `video_info.json` (`videoID` = clip id, the task type from its key)."""
    clip_id = row.get("clip_id", row.get("videoID"))
    if clip_id is None:
        require_fields(row, FIELDS, where)
    qtype = row.get("question_type", row.get(TASK_KEY))
    require_fields({**row, "clip_id": clip_id, "question_type": qtype}, FIELDS[1:], where)
    uid, raw_start, end = parse_clip_id(str(clip_id))
    start = max(raw_start, 0.0)  # a cut that begins a hair before the video does
    qid = row.get("question_id", f"{clip_id}_{index}")
    return QARecord(
        id=str(qid),
        benchmark=NAME,
        video_id=str(clip_id),
        question=text_field(row, "question", where).strip(),
        options=(),
        answer=str(row["answer"]).strip(),
        answer_kind="open",
        task_type=str(qtype),
        query_time=None,  # at the end of the clip: everything memorized is available
        evidence=(),
        meta={"ego4d_uid": uid, "clip_start": start, "clip_end": end, "clip_start_raw": raw_start},
    )


def from_rows(rows: Sequence[Mapping[str, Any]], origin: str) -> list[QARecord]:
    records = []
    per_clip: dict[str, int] = {}
    for i, r in enumerate(rows):
        clip = str(r.get("clip_id", r.get("videoID")))
        records.append(located(convert_row, r, f"{origin} annotation {i}", per_clip.get(clip, 0)))
        per_clip[clip] = per_clip.get(clip, 0) + 1
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
