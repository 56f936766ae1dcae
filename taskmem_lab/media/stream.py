"""Streams: a single video, or a manifest of ordered files with absolute start times.

Floor 1. A manifest is JSON or YAML:

    stream_id: A1_JAKE
    files:
      - {path: DAY1/DAY1_A1_JAKE_11094208.mp4, start: 40182.1}
      - {path: DAY1/DAY1_A1_JAKE_11101208.mp4, start: 40212.1, duration: 30.0}

Paths are relative to the manifest; `start` is stream seconds; `duration` is probed when absent
(give it with `offset` to use a time range of a longer file: `{path, start: 0, offset: 368.4,
duration: 35.2}` plays seconds 368.4-403.6 of the file as stream time 0-35.2, no copy on disk).
Clip times are stream times; files that abut (within `GAP_TOLERANCE_S`) form one segment and the
schedule skips the gaps between segments.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from taskmem_lab.errors import ConfigError, VideoError
from taskmem_lab.media.video import probe
from taskmem_lab.schema import Stream, StreamFile

GAP_TOLERANCE_S = 0.5
MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")


def load_stream(path: str | Path) -> Stream:
    """A `Stream` from a video file or a stream manifest."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video or stream manifest not found: {p}")
    if p.suffix.lower() not in MANIFEST_SUFFIXES:
        info = probe(p)
        return Stream(stream_id=p.stem, files=(StreamFile(str(p), 0.0, info.duration),))
    try:
        data = yaml.safe_load(p.read_text()) if p.suffix != ".json" else json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"stream manifest {p} is not valid JSON/YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), list) or not data["files"]:
        raise ConfigError(f"stream manifest {p} needs a non-empty 'files' list")
    files = []
    for i, entry in enumerate(data["files"]):
        if not isinstance(entry, dict) or "path" not in entry or "start" not in entry:
            raise ConfigError(f"stream manifest {p}: files[{i}] needs 'path' and 'start'")
        fp = Path(entry["path"])
        fp = fp if fp.is_absolute() else p.parent / fp
        duration = entry.get("duration")
        if duration is None:
            duration = probe(fp).duration
        offset = float(entry.get("offset", 0.0) or 0.0)
        if offset < 0:
            raise ConfigError(f"stream manifest {p}: files[{i}].offset must be >= 0")
        files.append(StreamFile(str(fp), float(entry["start"]), float(duration), offset))
    files.sort(key=lambda f: f.start)
    return Stream(stream_id=str(data.get("stream_id") or p.stem), files=tuple(files))


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
