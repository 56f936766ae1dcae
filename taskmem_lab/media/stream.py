"""Streams: a single video, or a manifest of ordered files with absolute start times.

Floor 1. A manifest is JSON or YAML:

    stream_id: A1_JAKE
    files:
      - {path: DAY1/DAY1_A1_JAKE_11094208.mp4, start: 40182.1}
      - {path: DAY1/DAY1_A1_JAKE_11101208.mp4, start: 40212.1, duration: 30.0}

Paths are relative to the manifest; `start` is stream seconds; `duration` is probed when absent,
and clamped (with a warning) to the file's decodable end when it claims more. Every field is
checked: NaN, infinite or huge times, non-numbers and folders are refused with one line.
An entry may carry the file's `size`, `mtime_ns` and `inode` (bench plans write them): while
they match the file, its `duration` was checked against this very file when written, and the
file is not opened again (a week of 5,000 files loads without probing each).
Give `offset` with `duration` to use a time range of a longer file: `{path, start: 0,
offset: 368.4, duration: 35.2}` plays seconds 368.4-403.6 of the file as stream time 0-35.2,
with no copy on disk.
Clip times are stream times; files that abut (within `GAP_TOLERANCE_S`) form one segment and the
schedule skips the gaps between segments.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import yaml

from taskmem_lab.errors import ConfigError, VideoError
from taskmem_lab.media.video import MIN_TAIL_S, decodable_end, probe
from taskmem_lab.paths import file_sha256, safe_name, stamp_matches
from taskmem_lab.schema import Stream, StreamFile

log = logging.getLogger(__name__)
GAP_TOLERANCE_S = 0.5
MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")
MAX_SECONDS = 10 * 365 * 24 * 3600.0  # stream times beyond ten years are a typo


def load_stream(path: str | Path) -> Stream:
    """A `Stream` from a video file or a stream manifest (every field checked, one line each)."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video or stream manifest not found: {p}")
    if p.is_dir():
        raise VideoError(f"{p} is a folder; give a video file or a stream manifest (.json/.yaml)")
    if p.suffix.lower() not in MANIFEST_SUFFIXES:
        info = probe(p)
        stream_id = safe_name(p.stem, "stream id (the video's file name)")
        return Stream(stream_id=stream_id, files=(StreamFile(str(p), 0.0, info.duration),))
    try:
        text = p.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if p.suffix != ".json" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"stream manifest {p} is not valid JSON/YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"stream manifest {p} is nested too deeply to read") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list) or not data["files"]:
        raise ConfigError(f"stream manifest {p} needs a non-empty 'files' list")
    stream_id = safe_name(data.get("stream_id") or p.stem, f"stream manifest {p}: stream_id")
    files = []
    for i, entry in enumerate(data["files"]):
        where = f"stream manifest {p}: files[{i}]"
        if not isinstance(entry, dict) or "path" not in entry or "start" not in entry:
            raise ConfigError(f"{where} needs 'path' and 'start'")
        if not isinstance(entry["path"], str) or not entry["path"]:
            raise ConfigError(f"{where}.path must be a file path (text)")
        fp = Path(entry["path"])
        fp = fp if fp.is_absolute() else p.parent / fp
        if fp.is_dir():
            raise ConfigError(f"{where}.path {fp} is a folder, not a video file")
        start = _seconds(entry["start"], f"{where}.start", allow_negative=True)
        offset = _seconds(entry.get("offset") or 0.0, f"{where}.offset")
        duration = entry.get("duration")
        if duration is None:
            duration = probe(fp).duration - offset
            if duration <= 0:
                raise ConfigError(f"{where}.offset {offset} is past the file's end")
        else:
            duration = _seconds(duration, f"{where}.duration")
            if duration <= 0:
                raise ConfigError(f"{where}.duration must be > 0 seconds, got {duration}")
            if stamp_matches(fp, entry):
                # written with this very file's stamp (as `bench` plans do), checked then
                files.append(StreamFile(str(fp), start, duration, offset))
                continue
            end = decodable_end(fp) - offset
            if end <= 0:
                raise ConfigError(
                    f"{where}.offset {offset} is past the file's end "
                    f"({end + offset:.3f} s of decodable video)"
                )
            if duration > end + MIN_TAIL_S:
                log.warning(
                    "%s: duration %.3f s runs past the file's decodable end (%.3f s); "
                    "clamped to %.3f s so no clip repeats a frozen frame",
                    where,
                    duration,
                    end,
                    end,
                )
                duration = end
        files.append(StreamFile(str(fp), start, duration, offset))
    _check_overlaps(files, f"stream manifest {p}")
    files.sort(key=lambda f: f.start)
    return Stream(stream_id=stream_id, files=tuple(files))


def _check_overlaps(files: list[StreamFile], where: str) -> None:
    """Files may abut or leave gaps in stream time, never overlap (beyond `GAP_TOLERANCE_S`
    of rounding): the later file's first seconds would never be memorized."""
    order = sorted(range(len(files)), key=lambda i: files[i].start)
    for a, b in zip(order, order[1:], strict=False):
        end = files[a].start + files[a].duration
        if files[b].start < end - GAP_TOLERANCE_S:
            raise ConfigError(
                f"{where}: files[{b}] starts at {files[b].start:g} s, inside files[{a}] "
                f"({files[a].start:g}-{end:g} s); files must not overlap in stream time "
                "(fix its start, or cut the earlier file with 'duration')"
            )


def _seconds(value: object, where: str, allow_negative: bool = False) -> float:
    """A finite number of seconds within `MAX_SECONDS`, or a `ConfigError` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number of seconds, got {value!r}")
    if isinstance(value, int) and abs(value) > MAX_SECONDS:
        raise ConfigError(f"{where} must be in 0..{MAX_SECONDS:.0f} seconds, got {value!r:.40}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number of seconds, got {value!r}")
    if abs(number) > MAX_SECONDS or (number < 0 and not allow_negative):
        raise ConfigError(f"{where} must be in 0..{MAX_SECONDS:.0f} seconds, got {value!r}")
    return number


def segments(stream: Stream) -> list[tuple[float, float]]:
    """Contiguous spans of stream time covered by files; gaps separate segments."""
    spans: list[tuple[float, float]] = []
    for f in stream.files:
        a, b = f.start, f.start + f.duration
        if spans and a <= spans[-1][1] + GAP_TOLERANCE_S:
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        else:
            spans.append((a, b))
    return spans


def source_identity(stream: Stream) -> list[dict[str, object]]:
    """The content identity of a stream's files (start, size, sha256; not their paths), which
    keys stored perception: a different video under the same file name is never mistaken."""
    return [
        {"start": f.start, "size": Path(f.path).stat().st_size, "sha256": file_sha256(f.path)}
        for f in stream.files
    ]
