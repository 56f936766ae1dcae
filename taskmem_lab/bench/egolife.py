"""EgoLifeQA as a streaming-memory benchmark: a participant's week is one stream.

Source: the EgoLifeQA JSON files of EgoLife (Yang et al., "EgoLife: Towards Egocentric Life
Assistant", CVPR 2025), one per participant, e.g. `EgoLifeQA_A1_JAKE.json`: a list of rows::

    {"ID": 12, "query_time": {"date": "DAY2", "time": "11094208"}, "type": "EventRecall",
     "need_audio": false, "need_name": true, "last_time": "...", "trigger": "...",
     "question": "Who ...?", "choice_a": "...", "choice_b": "...", "choice_c": "...",
     "choice_d": "...", "answer": "B",
     "target_time": {"date": "DAY1", "time": "18202110"}, "keywords": "...", "reason": "..."}

`target_time` comes in three shapes: one `time`; a `time_list` (several moments); or several
moments packed into one `time` string, `"17044917DAY4_20593813DAY6_19483807"`: the first moment
on `target_time.date`, each later one prefixed by its own `DAYn_`. `last_time` is a boolean.
Fields ending in `_chinese` (the questions' Chinese versions) are kept as meta. An unreadable
field is an error naming the file and row. Times are `HHMMSSFF`: hours,
minutes, seconds and a frame index `FF` at 20 fps (not hundredths). The videos are 30 s files
`DAYn/DAYn_A1_JAKE_HHMMSSFF.mp4`; `stream_manifest` lists them as one stream whose time is
`(n - 1) * 86400 + seconds of day`, the same clock the questions use.

Conversion: `id` = `{participant}_{ID}`; `video_id` = the participant (`A1_JAKE`, the stream id);
options = `choice_a..choice_d`; `task_type` = `type`; `query_time` = the question's stream time;
`evidence` = one window per target moment (a point annotation is the zero-length window
`[t, t]`; an `HHMMSSFF-HHMMSSFF` range keeps both ends). The participant comes from a `participant`
or `identity` field when rows have one, else from the file name.

The original TaskMem scripts read a converted `egolife_qa.json`: `{"results": [{"ID", "qa",
"qa_raw", "current_groups", "target_groups"}]}` (the EgoLifeQA row split into `qa`/`qa_raw`,
and the clip folders the script loads memories from); it loads too, the participant taken from
the clip folder names (`..._DAY2_A1_JAKE_16190000__...`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmem_lab.bench.base import Benchmark, located, records_from_path, require_fields
from taskmem_lab.bench.record import QARecord, check_unique, text_field
from taskmem_lab.errors import BenchmarkError

NAME = "egolife"
FPS = 20
DAY_S = 86400.0
TASK_TYPES = ("EntityLog", "EventRecall", "HabitInsight", "RelationMap", "TaskMaster")
FIELDS = ("ID", "query_time", "type", "question", "choice_a", "choice_b", "choice_c", "choice_d")
_PARTICIPANT = re.compile(r"(A\d+_[A-Z]+)")
_DAY = re.compile(r"^\s*DAY\s*(\d+)\s*$", re.IGNORECASE)
_VIDEO = re.compile(r"^DAY(\d+)_(A\d+_[A-Z]+)_(\d{8})$")
_PACKED = re.compile(r"DAY(\d+)_(\d{8})")


def parse_clock(value: str | int) -> float:
    """`"11094208"` -> 40182.4 seconds of the day (11:09:42 plus frame 8 at 20 fps)."""
    text = str(value).strip()
    if isinstance(value, int) or (text.isdigit() and len(text) == 7):
        text = text.zfill(8)  # an integer time lost its leading zero
    if len(text) != 8 or not text.isdigit():
        raise BenchmarkError(f"time {value!r} is not HHMMSSFF (8 digits)")
    h, m, s, f = (int(text[i : i + 2]) for i in range(0, 8, 2))
    if h >= 24 or m >= 60 or s >= 60 or f >= FPS:
        raise BenchmarkError(
            f"time {value!r} is not HHMMSSFF: hours must be < 24, minutes and seconds < 60, "
            f"frame < {FPS}"
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


def _moments(date: str, item: str | int, where: str) -> list[tuple[float, float]]:
    """Windows of one time item: `HHMMSSFF`, a range `A-B`, or packed moments
    `HHMMSSFFDAYn_HHMMSSFF...` (the first on `date`, each later one on its own day)."""
    text = str(item).strip()
    if "-" in text:
        left, right = text.split("-", 1)
        a, b = stream_time(date, left), stream_time(date, right)
        if b < a:
            raise BenchmarkError(f"{where}: evidence range {item!r} ends before it starts")
        return [(a, b)]
    upper = text.upper()
    head, tail = (
        (text[: upper.index("DAY")], upper[upper.index("DAY") :]) if "DAY" in upper else (text, "")
    )
    found = _PACKED.findall(tail)
    if "".join(f"DAY{d}_{c}" for d, c in found) != tail:
        raise BenchmarkError(
            f"{where}: cannot read time {item!r} (several moments are packed as "
            "HHMMSSFF followed by DAYn_HHMMSSFF ...)"
        )
    windows = [(stream_time(date, head),) * 2]
    windows += [(stream_time(f"DAY{d}", c),) * 2 for d, c in found]
    return windows


def _window_items(date: str, item: Any, where: str) -> list[tuple[float, float]]:
    if isinstance(item, list | tuple) and len(item) == 2:
        a, b = (stream_time(date, x) for x in item)
        if b < a:
            raise BenchmarkError(f"{where}: evidence range {item!r} ends before it starts")
        return [(a, b)]
    if isinstance(item, str | int) and not isinstance(item, bool):
        return _moments(date, item, where)
    raise BenchmarkError(f"{where}: cannot read evidence time {item!r}")


def evidence_windows(target: Any, where: str) -> tuple[tuple[float, float], ...]:
    """Windows from a `target_time` (`{date, time}`, `{date, time_list}`, a `time` string
    packing several moments, or a list of these)."""
    if target in (None, "", [], {}):
        return ()
    if isinstance(target, list):
        return tuple(sorted(w for t in target for w in evidence_windows(t, where)))
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
    return tuple(sorted(w for item in items for w in _window_items(target["date"], item, where)))


def _flag(value: Any, name: str = "flag") -> bool:
    """A boolean field: true/false, or the strings "true"/"false" (None: false)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "yes",
        "1",
        "false",
        "no",
        "0",
        "",
    ):
        return value.strip().lower() in ("true", "yes", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BenchmarkError(f"{name} must be true or false, got {value!r}")


def _keywords(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return [str(k) for k in value]


def participant_of(path: Path) -> str | None:
    m = _PARTICIPANT.search(path.stem)
    return m.group(1) if m else None


def _flatten_original(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of the original TaskMem `egolife_qa.json` as an EgoLifeQA row."""
    flat = {**(row.get("qa_raw") or {}), **(row.get("qa") or {})}
    flat.setdefault("ID", row.get("ID", row.get("id")))
    if not flat.get("participant"):
        for group in [*(row.get("current_groups") or []), *(row.get("target_groups") or [])]:
            m = _PARTICIPANT.search(str(group.get("output", "")) if isinstance(group, dict) else "")
            if m:
                flat["participant"] = m.group(1)
                break
    return flat


def convert_row(row: Mapping[str, Any], where: str, participant: str | None = None) -> QARecord:
    if "qa_raw" in row or "qa" in row:
        row = _flatten_original(row)
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
    chinese = {k: str(v) for k, v in row.items() if k.endswith("_chinese") and v is not None}
    return QARecord(
        id=f"{who}_{row['ID']}",
        benchmark=NAME,
        video_id=who,
        question=text_field(row, "question", where).strip(),
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
            "need_audio": _flag(row.get("need_audio", False), "need_audio"),
            "need_name": _flag(row.get("need_name", False), "need_name"),
            "last_time": _flag(row.get("last_time"), "last_time"),
            "trigger": "" if row.get("trigger") is None else str(row["trigger"]),
            "keywords": _keywords(row.get("keywords")),
            "reason": "" if row.get("reason") is None else str(row["reason"]),
            **chinese,
        },
    )


def from_rows(
    rows: Sequence[Mapping[str, Any]], origin: str, participant: str | None = None
) -> list[QARecord]:
    who = participant or participant_of(Path(origin))
    records = [located(convert_row, r, f"{origin} row {i}", who) for i, r in enumerate(rows)]
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
    cluster_by_video=False,  # one "video" is a participant's week: too few to resample
)
