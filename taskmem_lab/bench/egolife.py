"""EgoLifeQA as a streaming-memory benchmark: a participant's week is one stream.

Source: the EgoLifeQA JSON files of EgoLife (Yang et al., "EgoLife: Towards Egocentric Life
Assistant", CVPR 2025), one per participant, e.g. `EgoLifeQA_A1_JAKE.json`: a list of rows::

    {"ID": 12, "query_time": {"date": "DAY2", "time": "11094208"}, "type": "EventRecall",
     "need_audio": false, "need_name": true, "last_time": "...", "trigger": "...",
     "question": "Who ...?", "choice_a": "...", "choice_b": "...", "choice_c": "...",
     "choice_d": "...", "answer": "B",
     "target_time": {"date": "DAY1", "time": "18202110"}, "keywords": "...", "reason": "..."}

`target_time` may instead hold `time_list` (several evidence moments). Times are `HHMMSSFF`: hours,
minutes, seconds and a frame index `FF` at 20 fps (not hundredths). The videos are 30 s files
`DAYn/DAYn_A1_JAKE_HHMMSSFF.mp4`; `stream_manifest` lists them as one stream whose time is
`(n - 1) * 86400 + seconds of day`, the same clock the questions use.

Conversion: `id` = `{participant}_{ID}`; `video_id` = the participant (`A1_JAKE`, the stream id);
options = `choice_a..choice_d`; `task_type` = `type`; `query_time` = the question's stream time;
`evidence` = one window per target moment (a point annotation is the zero-length window
`[t, t]`; an `HHMMSSFF-HHMMSSFF` range keeps both ends). The participant comes from a `participant`
or `identity` field when rows have one, else from the file name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmem_lab.bench.base import Benchmark, records_from_path, require_fields
from taskmem_lab.bench.record import QARecord, check_unique
from taskmem_lab.errors import BenchmarkError

NAME = "egolife"
FPS = 20
DAY_S = 86400.0
TASK_TYPES = ("EntityLog", "EventRecall", "HabitInsight", "RelationMap", "TaskMaster")
FIELDS = ("ID", "query_time", "type", "question", "choice_a", "choice_b", "choice_c", "choice_d")
_PARTICIPANT = re.compile(r"(A\d+_[A-Z]+)")
_DAY = re.compile(r"^\s*DAY\s*(\d+)\s*$", re.IGNORECASE)
_VIDEO = re.compile(r"^DAY(\d+)_(A\d+_[A-Z]+)_(\d{8})$")


def parse_clock(value: str | int) -> float:
    """`"11094208"` -> 40182.4 seconds of the day (11:09:42 plus frame 8 at 20 fps)."""
    text = str(value).strip()
    if isinstance(value, int) or (text.isdigit() and len(text) == 7):
        text = text.zfill(8)  # an integer time lost its leading zero
    if len(text) != 8 or not text.isdigit():
        raise BenchmarkError(f"time {value!r} is not HHMMSSFF (8 digits)")
    h, m, s, f = (int(text[i : i + 2]) for i in range(0, 8, 2))
    if m >= 60 or s >= 60 or f >= FPS:
        raise BenchmarkError(
            f"time {value!r} is not HHMMSSFF: minutes and seconds must be < 60, frame < {FPS}"
        )
    return h * 3600 + m * 60 + s + f / FPS


def parse_day(value: str) -> int:
    """`"DAY3"` -> 3."""
    m = _DAY.match(str(value))
    if not m or int(m.group(1)) < 1:
        raise BenchmarkError(f"date {value!r} is not DAYn (n >= 1)")
    return int(m.group(1))


def stream_time(date: str, clock: str | int) -> float:
    """Seconds since DAY1 00:00:00."""
    return round((parse_day(date) - 1) * DAY_S + parse_clock(clock), 4)


def _window(date: str, item: Any, where: str) -> tuple[float, float]:
    if isinstance(item, list | tuple) and len(item) == 2:
        a, b = (stream_time(date, x) for x in item)
    elif isinstance(item, str | int) and "-" in str(item):
        left, right = str(item).split("-", 1)
        a, b = stream_time(date, left), stream_time(date, right)
    elif isinstance(item, str | int):
        a = b = stream_time(date, item)
    else:
        raise BenchmarkError(f"{where}: cannot read evidence time {item!r}")
    if b < a:
        raise BenchmarkError(f"{where}: evidence range {item!r} ends before it starts")
    return a, b


def evidence_windows(target: Any, where: str) -> tuple[tuple[float, float], ...]:
    """Windows from a `target_time` (`{date, time}`, `{date, time_list}`, or a list of them)."""
    if target in (None, "", [], {}):
        return ()
    if isinstance(target, list):
        return tuple(w for t in target for w in evidence_windows(t, where))
    if not isinstance(target, Mapping) or "date" not in target:
        raise BenchmarkError(f"{where}: target_time {target!r} has no 'date'")
    if "time_list" in target:
        items = target["time_list"]
        if not isinstance(items, list):
            raise BenchmarkError(f"{where}: target_time.time_list must be a list, got {items!r}")
    elif "time" in target:
        items = [target["time"]]
    else:
        raise BenchmarkError(f"{where}: target_time {target!r} has neither 'time' nor 'time_list'")
    return tuple(sorted(_window(target["date"], item, where) for item in items))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return bool(value)


def _keywords(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return [str(k) for k in value]


def participant_of(path: Path) -> str | None:
    m = _PARTICIPANT.search(path.stem)
    return m.group(1) if m else None


def convert_row(row: Mapping[str, Any], participant: str | None, where: str) -> QARecord:
    require_fields(row, FIELDS, where)
    who = str(row.get("participant") or row.get("identity") or participant or "")
    if not who:
        raise BenchmarkError(
            f"{where}: cannot tell whose stream this is; name the file EgoLifeQA_<A1_JAKE>.json "
            "or give rows a 'participant' field"
        )
    query = row["query_time"]
    if not isinstance(query, Mapping) or not {"date", "time"} <= set(query):
        raise BenchmarkError(f"{where}: query_time must be {{date, time}}, got {query!r}")
    target = row.get("target_time")
    return QARecord(
        id=f"{who}_{row['ID']}",
        benchmark=NAME,
        video_id=who,
        question=str(row["question"]).strip(),
        options=tuple(str(row[f"choice_{c}"]).strip() for c in "abcd"),
        answer=str(row.get("answer", "")).strip().upper(),
        answer_kind="choice",
        task_type=str(row["type"]),
        query_time=stream_time(query["date"], query["time"]),
        evidence=evidence_windows(target, where),
        meta={
            "source_id": str(row["ID"]),
            "query_date": str(query["date"]),
            "query_clock": str(query["time"]),
            "target_time": json.dumps(target, sort_keys=True) if target else "",
            "need_audio": _flag(row.get("need_audio", False)),
            "need_name": _flag(row.get("need_name", False)),
            "last_time": "" if row.get("last_time") is None else str(row["last_time"]),
            "trigger": "" if row.get("trigger") is None else str(row["trigger"]),
            "keywords": _keywords(row.get("keywords")),
            "reason": "" if row.get("reason") is None else str(row["reason"]),
        },
    )


def from_rows(
    rows: Sequence[Mapping[str, Any]], origin: str, participant: str | None = None
) -> list[QARecord]:
    who = participant or participant_of(Path(origin))
    records = [convert_row(r, who, f"{origin} row {i}") for i, r in enumerate(rows)]
    check_unique(records, origin)
    return records


def from_path(path: Path) -> list[QARecord]:
    """One EgoLifeQA JSON file, or a folder of them (all participants)."""
    return records_from_path(path, from_rows, "*.json")


def stream_manifest(
    video_root: str | Path, participant: str, duration: float | None = None
) -> dict[str, Any]:
    """The stream manifest of a participant's week from `DAYn/DAYn_<participant>_HHMMSSFF.mp4`.

    Paths are relative to `video_root` (write the manifest there). `duration` (e.g. 30.0) skips
    probing every file when loading the stream.
    """
    root = Path(video_root)
    files = []
    for p in sorted(root.glob(f"DAY*/DAY*_{participant}_*.mp4")):
        m = _VIDEO.match(p.stem)
        if not m or m.group(2) != participant:
            continue
        entry: dict[str, Any] = {
            "path": p.relative_to(root).as_posix(),
            "start": stream_time(f"DAY{m.group(1)}", m.group(3)),
        }
        if duration is not None:
            entry["duration"] = duration
        files.append(entry)
    if not files:
        raise BenchmarkError(f"no DAYn/DAYn_{participant}_HHMMSSFF.mp4 files under {root}")
    files.sort(key=lambda e: e["start"])
    return {"stream_id": participant, "files": files}


BENCHMARK = Benchmark(
    name=NAME,
    title="EgoLifeQA",
    from_path=from_path,
    from_rows=from_rows,
    answer_kind="choice",
    hub_original=None,
    groups=(),
    has_evidence=True,
)
