"""Planning a benchmark run: which streams its questions need, how long they are, what they cost.

Floor 2 (bench). `plan_streams` turns a benchmark's records and a folder of videos into one
`StreamPlan` per stream, in the published layouts:

- Video-MME: `<DIR>/<videoID>.mp4` (any depth below DIR; the Hub archive layout);
- EgoLife: `<DIR>/<participant>/DAYn/DAYn_<participant>_HHMMSSFF.mp4` (or the DAYn folders directly
  under DIR): one stream per participant, days laid end to end as stream time, gaps skipped;
- EgoTempo: each clip `{uid}_{start}_{end}` is the time range `[start, end]` of `<DIR>/<uid>.mp4`,
  read in place through a stream manifest with a file `offset` (no re-encoded copy on disk); a
  start below zero becomes a stream that begins `-start` seconds in, so question times hold.

Nothing is decoded: durations come from container headers, and are remembered (`KnownFiles`,
`files.json` beside the benchmark's runs) by each file's size, mtime_ns and inode, so re-planning
a week of 5,000 files or 900 videos opens none of them again. The plan's file entries carry those
stamps into the stream manifests it writes, and `load_stream` trusts a duration whose stamp still
matches. The plan counts clips and model calls exactly as the memorizer will schedule them, so
`--plan` and `--price` need no model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskmem_lab.bench import egolife
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import BenchmarkError, ConfigError
from taskmem_lab.media.stream import segments
from taskmem_lab.media.video import clip_schedule, decodable_end, window_size
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import STAMP_FIELDS, file_stamp, stamp_matches
from taskmem_lab.schema import Stream, StreamFile

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")
TASK_MODES = ("questions", "none")
# Rough token counts for `--price` (a plan, not a bill): text of one episodic request, tokens of
# one frame, one reply; the answerer's prompt holds the memory (tokens per stored entry).
PROMPT_TEXT_TOKENS = 900
TOKENS_PER_FRAME = 300
REPLY_TOKENS = 150
QA_BASE_TOKENS = 400
QA_TOKENS_PER_ENTRY = 60
QA_REPLY_TOKENS = 40


@dataclass
class StreamPlan:
    """One stream a benchmark needs: its files (a manifest), schedule size and its questions."""

    stream_id: str
    files: list[dict[str, Any]]
    duration: float
    clips: int
    frames: int
    calls: int
    questions: list[str]
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def single_file(self) -> bool:
        """Whether the stream is one whole video (memorized from the file itself)."""
        return (
            len(self.files) == 1 and not self.files[0].get("offset") and not self.files[0]["start"]
        )

    def stream(self) -> Stream:
        return Stream(
            self.stream_id,
            tuple(
                StreamFile(f["path"], f["start"], f["duration"], f.get("offset", 0.0))
                for f in self.files
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchPlan:
    """The streams of one benchmark run, and the questions whose videos were not found."""

    benchmark: str
    streams: list[StreamPlan]
    missing: dict[str, str]  # stream id -> why it could not be planned
    params: dict[str, Any]

    @property
    def clips(self) -> int:
        return sum(s.clips for s in self.streams)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.streams)

    def table(self) -> str:
        """One line per stream: id, length, files, clips, model calls, questions, tasks."""
        lines = [f"{'stream':<28} {'length':>10} {'files':>6} {'clips':>6} {'calls':>6} {'qs':>5}"]
        for s in self.streams:
            lines.append(
                f"{s.stream_id[:28]:<28} {_hms(s.duration):>10} {len(s.files):>6} "
                f"{s.clips:>6} {s.calls:>6} {len(s.questions):>5}"
            )
        total = sum(s.duration for s in self.streams)
        lines.append(
            f"{'total: ' + str(len(self.streams)) + ' streams':<28} {_hms(total):>10} "
            f"{sum(len(s.files) for s in self.streams):>6} {self.clips:>6} {self.calls:>6} "
            f"{sum(len(s.questions) for s in self.streams):>5}"
        )
        for sid, why in sorted(self.missing.items()):
            lines.append(f"not planned: {sid}: {why}")
        return "\n".join(lines)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def video_index(root: str | Path) -> dict[str, Path]:
    """Video files under `root` (any depth) by file stem; hidden folders are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"videos folder not found: {base}")
    found: dict[str, Path] = {}
    for p in sorted(base.rglob("*")):
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file():
            rel = p.relative_to(base).parts
            if not any(part.startswith(".") for part in rel):
                found.setdefault(p.stem, p)
    return found


class KnownFiles:
    """Each video's decodable end, remembered in a JSON file by path and stamp
    (`paths.STAMP_FIELDS`): a file is probed again only when its size, mtime_ns or inode
    changes. Without a path it remembers for this process only; `read_only` reads the file but
    never writes it (a `--plan` writes nothing)."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.read_only = read_only
        self._known: dict[str, dict[str, Any]] = {}
        self._changed = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                data = {}  # a torn or foreign file only costs probing again
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                self._known = {k: v for k, v in data["files"].items() if isinstance(v, dict)}

    def entry(self, path: Path, start: float) -> dict[str, Any]:
        """A plan file entry for all of `path` at stream time `start`, with its stamp."""
        key = os.path.abspath(path)  # callers resolve the videos folder once, not every file
        known = self._known.get(key)
        if known is None or not stamp_matches(key, known) or not _is_seconds(known.get("end")):
            known = {**file_stamp(key), "end": decodable_end(key)}
            self._known[key] = known
            self._changed = True
        stamp = {k: known[k] for k in STAMP_FIELDS}
        return {"path": key, "start": start, "duration": known["end"], **stamp}

    def save(self) -> None:
        """Write what was learnt (atomically; nothing when nothing changed or no path)."""
        if self.path is not None and self._changed and not self.read_only:
            _write_if_changed(self.path, {"schema": 1, "files": self._known})
            self._changed = False


def _is_seconds(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and value >= 0


def _whole_file(path: Path, known: KnownFiles) -> list[dict[str, Any]]:
    return [known.entry(path.resolve(), 0.0)]


def _egolife_files(videos: Path, participant: str, known: KnownFiles) -> list[dict[str, Any]]:
    root = (videos / participant if (videos / participant).is_dir() else videos).resolve()
    manifest = egolife.stream_manifest(root, participant)
    return [known.entry(root / entry["path"], entry["start"]) for entry in manifest["files"]]


def _egotempo_files(
    record: QARecord, index: Mapping[str, Path], known: KnownFiles
) -> list[dict[str, Any]]:
    uid = str(record.meta.get("ego4d_uid", ""))
    if "clip_start" not in record.meta or "clip_end" not in record.meta:
        raise BenchmarkError(f"question {record.id!r} has no clip bounds (clip_start/clip_end)")
    start, end = float(record.meta["clip_start"]), float(record.meta["clip_end"])
    if uid not in index:
        raise FileNotFoundError(f"no video {uid}.mp4")
    path = index[uid]
    entry = known.entry(path.resolve(), 0.0)
    whole = float(entry["duration"])
    offset = max(0.0, start)
    length = min(end, whole) - offset
    if length <= 0:
        raise BenchmarkError(
            f"clip {record.video_id} starts at {start}s but {path.name} lasts {whole:.1f}s"
        )
    return [
        {
            "path": str(path.resolve()),
            "start": round(offset - start, 6),
            "offset": round(offset, 6),
            "duration": round(length, 6),
            **{k: entry[k] for k in STAMP_FIELDS},
        }
    ]


def _schedule_size(stream: Stream, params: MemorizeParams) -> tuple[int, int]:
    clips = clip_schedule(
        segments(stream), params.interval, params.context_duration, params.start, params.end
    )
    frames = sum(window_size(c, params.frame_fps, params.max_frames) for c in clips)
    return len(clips), frames


def question_tasks(records: Sequence[QARecord]) -> list[dict[str, Any]]:
    """The questions of one stream as online tasks (`{id, question, time, options}`).

    A question arrives at its `query_time`; one asked at the end of the video (no query time)
    could reach no clip and is left out.
    """
    return [
        {"id": r.id, "question": r.question, "time": r.query_time, "options": list(r.options)}
        for r in sorted(records, key=lambda r: (r.query_time or 0.0, r.id))
        if r.query_time is not None
    ]


def select_streams(
    ids: Sequence[str], only: Sequence[str] = (), limit: int | None = None
) -> list[str]:
    """Stream ids in plan order, kept to `only` (an unknown id is an error), then the first `limit`."""
    chosen = list(ids)
    if only:
        unknown = sorted(set(only) - set(ids))
        if unknown:
            raise ConfigError(
                f"--only: no stream {', '.join(unknown[:5])} in this benchmark "
                f"(streams look like {', '.join(list(ids)[:3])})"
            )
        wanted = set(only)
        chosen = [i for i in chosen if i in wanted]
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit-streams must be >= 1, got {limit}")
        chosen = chosen[:limit]
    return chosen


def plan_streams(
    benchmark: str,
    records: Sequence[QARecord],
    videos: str | Path,
    params: MemorizeParams,
    tasks: str = "none",
    only: Sequence[str] = (),
    limit: int | None = None,
    known: KnownFiles | None = None,
) -> BenchPlan:
    """One `StreamPlan` per stream the selected questions need (streams sorted by id).

    A stream whose videos are missing is listed in `missing` with the reason; the others are
    planned. `tasks="questions"` makes each stream's questions its online tasks. `known`
    remembers the videos' lengths between plans (saved here when it learnt any).
    """
    known = known or KnownFiles()
    if tasks not in TASK_MODES:
        raise ConfigError(f"--tasks must be one of {TASK_MODES}, got {tasks!r}")
    by_stream: dict[str, list[QARecord]] = {}
    for r in records:
        by_stream.setdefault(r.video_id, []).append(r)
    chosen = select_streams(sorted(by_stream), only, limit)
    videos = Path(videos)
    index = video_index(videos) if benchmark != egolife.NAME else {}
    if benchmark == egolife.NAME and not videos.is_dir():
        raise ConfigError(f"videos folder not found: {videos}")
    plans: list[StreamPlan] = []
    missing: dict[str, str] = {}
    for sid in chosen:
        rows = by_stream[sid]
        try:
            if benchmark == egolife.NAME:
                files = _egolife_files(videos, sid, known)
            elif benchmark == "egotempo":
                files = _egotempo_files(rows[0], index, known)
            elif sid in index:
                files = _whole_file(index[sid], known)
            else:
                raise FileNotFoundError(f"no video {sid}.mp4 under {videos}")
        except (FileNotFoundError, BenchmarkError) as exc:
            missing[sid] = str(exc)
            continue
        plan = StreamPlan(sid, files, 0.0, 0, 0, 0, [r.id for r in rows])
        stream = plan.stream()
        plan.duration = round(sum(b - a for a, b in segments(stream)), 3)
        plan.clips, plan.frames = _schedule_size(stream, params)
        plan.calls = plan.clips * (2 if params.semantic else 1)
        if tasks == "questions":
            plan.tasks = question_tasks(rows)
        plans.append(plan)
    known.save()
    return BenchPlan(benchmark, plans, missing, params.to_json())


def write_sources(plan: BenchPlan, folder: str | Path) -> dict[str, tuple[str, str | None]]:
    """Write each stream's manifest (when it is not one whole file) and task file under `folder`.

    Returns stream id -> (what to memorize: a video file or a manifest, the task file or None).
    Files are rewritten only when their content changes, so a resumed run sees the same inputs.
    """
    out = Path(folder)
    sources: dict[str, tuple[str, str | None]] = {}
    for s in plan.streams:
        if s.single_file:
            source = s.files[0]["path"]
        else:
            source = str(
                _write_if_changed(
                    out / "streams" / f"{s.stream_id}.json",
                    {"stream_id": s.stream_id, "files": s.files},
                )
            )
        task_file = None
        if s.tasks:
            task_file = str(_write_if_changed(out / "tasks" / f"{s.stream_id}.json", s.tasks))
        sources[s.stream_id] = (source, task_file)
    return sources


def _write_if_changed(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def estimate_cost(
    plan: BenchPlan,
    model: str,
    answerer: str | None,
    prices: Mapping[str, tuple[float, float]],
) -> dict[str, Any]:
    """A rough price of the run from token estimates (see the constants above), per model.

    `prices` maps a model spec to USD per million input and output tokens; a model without a
    price is counted in tokens only.
    """
    mem_in = sum(s.calls * PROMPT_TEXT_TOKENS + s.frames * TOKENS_PER_FRAME for s in plan.streams)
    mem_out = plan.calls * REPLY_TOKENS
    qa_in = sum(
        len(s.questions) * (QA_BASE_TOKENS + s.clips * QA_TOKENS_PER_ENTRY) for s in plan.streams
    )
    qa_out = sum(len(s.questions) for s in plan.streams) * QA_REPLY_TOKENS
    rows = [("memorizer", model, plan.calls, mem_in, mem_out)]
    if answerer:
        rows.append(
            ("answerer", answerer, sum(len(s.questions) for s in plan.streams), qa_in, qa_out)
        )
    out = []
    for role, spec, calls, tin, tout in rows:
        price = prices.get(spec)
        cost = None if price is None else (tin * price[0] + tout * price[1]) / 1e6
        out.append(
            {
                "role": role,
                "model": spec,
                "calls": calls,
                "prompt_tokens": tin,
                "completion_tokens": tout,
                "cost_usd": cost,
            }
        )
    known = [r["cost_usd"] for r in out if r["cost_usd"] is not None]
    return {"rows": out, "total_usd": sum(known) if known else None}
