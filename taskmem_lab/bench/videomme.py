"""Video-MME as a streaming-memory benchmark: multiple choice, asked at the end of the video.

Source: the `videomme` config of the Hugging Face dataset `lmms-lab/Video-MME`, split `test`
(2,700 rows, 900 videos; Fu et al., "Video-MME", CVPR 2025). Read from the Hub, or from a local
copy: the parquet shard, or JSON/JSONL with the same columns. One source row::

    {"video_id": "001", "duration": "short", "domain": "Knowledge",
     "sub_category": "Humanity & History", "url": "https://www.youtube.com/watch?v=...",
     "videoID": "fFjv93ACGo8", "question_id": "001-1", "task_type": "Counting Problem",
     "question": "How many ...?", "options": ["A. Apples.", "B. Candles.", ...], "answer": "C"}

Conversion: `id` = `question_id`; `video_id` = `videoID` (the media file is `{videoID}.mp4`, so a
memory written by `taskmem memorize {videoID}.mp4` is found under that id); options lose their
`"A. "` prefixes (letters are positional); `query_time` = None (the question arrives at the end of
the video, i.e. the whole memory is available); no evidence windows (Video-MME has none). The
source's own `video_id` ("001"), `duration`, `domain`, `sub_category` and `url` are kept as meta;
the metrics table also breaks results down by `duration` (short/medium/long), as the original
leaderboard does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmem_lab.bench.base import TASK_KEY, Benchmark, located, records_from_path, require_fields
from taskmem_lab.bench.record import LETTERS, QARecord, check_unique, text_field
from taskmem_lab.errors import BenchmarkError

NAME = "videomme"
HUB_REPO = "lmms-lab/Video-MME"
HUB_CONFIG = "videomme"
HUB_IDS = (HUB_REPO, "lmms-eval/Video-MME")  # Hub ids that name the original
FIELDS = (
    "video_id",
    "duration",
    "domain",
    "sub_category",
    "videoID",
    "question_id",
    "task_type",
    "question",
    "options",
    "answer",
)
_PREFIX = re.compile(r"^\s*\(?([A-Da-d])\s*[.):]\s*")
ORIGINAL_FIELDS = ("videoID", "question", "options", "answer")
_DURATION_FILE = re.compile(r"video_info_(short|medium|long)", re.IGNORECASE)


def strip_option(text: str, index: int, where: str) -> str:
    """`"B. Candles."` -> `"Candles."`; a prefix must name the option's own position."""
    m = _PREFIX.match(text)
    if not m:
        return text.strip()
    if m.group(1).upper() != LETTERS[index]:
        raise BenchmarkError(
            f"{where}: option {index + 1} is labelled {m.group(1)!r}, expected {LETTERS[index]!r}"
        )
    return text[m.end() :].strip()


def convert_row(row: Mapping[str, Any], where: str, fallback: Mapping[str, str]) -> QARecord:
    """One Video-MME row; `fallback` fills `question_id`/`duration`/`task_type` for rows of the
    original TaskMem `video_info_*.json` files, which may lack them."""
    original = TASK_KEY in row or ("videoID" in row and not set(FIELDS) <= set(row))
    require_fields(row, ORIGINAL_FIELDS if original else FIELDS, where)
    options = row["options"]
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise BenchmarkError(f"{where}: 'options' must be a list of strings, got {options!r}")
    task_type = row.get("task_type") or row.get(TASK_KEY) or fallback.get("task_type")
    if not task_type:
        raise BenchmarkError(f"{where}: no task_type")
    return QARecord(
        id=str(row.get("question_id") or fallback["question_id"]),
        benchmark=NAME,
        video_id=str(row["videoID"]),
        question=text_field(row, "question", where).strip(),
        options=tuple(strip_option(str(o), i, where) for i, o in enumerate(options)),
        answer=str(row["answer"]).strip().upper(),
        answer_kind="choice",
        task_type=str(task_type),
        query_time=None,
        evidence=(),
        meta={
            "source_video_id": str(row.get("video_id") or ""),
            "duration": str(row.get("duration") or fallback.get("duration") or ""),
            "domain": str(row.get("domain") or ""),
            "sub_category": str(row.get("sub_category") or ""),
            "url": str(row.get("url") or ""),
        },
    )


def from_rows(rows: Sequence[Mapping[str, Any]], origin: str) -> list[QARecord]:
    m = _DURATION_FILE.search(Path(origin).name)
    duration = m.group(1).lower() if m else ""
    per_video: dict[str, int] = {}
    records = []
    for i, r in enumerate(rows):
        vid = str(r.get("videoID", "")) if isinstance(r, Mapping) else ""
        per_video[vid] = per_video.get(vid, 0) + 1
        fallback = {"question_id": f"{vid}-{per_video[vid]}", "duration": duration, "task_type": ""}
        records.append(located(convert_row, r, f"{origin} row {i}", fallback))
    check_unique(records, origin)
    return records


def from_path(path: Path) -> list[QARecord]:
    """A parquet/JSON/JSONL file, or a folder of them (e.g. a snapshot of the Hub repo)."""
    return records_from_path(path, from_rows)


BENCHMARK = Benchmark(
    name=NAME,
    title="Video-MME",
    from_path=from_path,
    from_rows=from_rows,
    answer_kind="choice",
    hub_original=(HUB_REPO, HUB_CONFIG),
    groups=("duration", "domain", "sub_category"),
    hub_ids=HUB_IDS,
    has_evidence=False,
)
