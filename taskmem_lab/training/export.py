"""Training export: one record per memorized clip, as JSONL and parquet for SFT and RL trainers.

Floor 5 (`taskmem export-training RUN... --out DIR`). Each stored run is replayed
(`replay.RunReplay`), so a record holds the exact messages the memorizer sent for its clip: the
text blocks, and the window's frames as the JPEG files that were sent (content-addressed, shared
by overlapping windows) and as an mp4 of the window, plus the new span alone for judges. The
written entry is the `response`. Columns follow what verl-style RL trainers read: `prompt` (a
chat list whose user text has a `<video>` placeholder), `videos`, `response`, `id`
(`<stream>*<clip>`), `type` (`episodic`) and `need_rollout`.

Two files per export: `episodic.*` (off-policy: the preceding-description slot filled with the
entries the run wrote) and `episodic_on_policy.*` (the slot left as `PRECEDING_PLACEHOLDER`, to be
filled by the trainer with the policy's own entries for `preceding_clips`, rolled out in `step`
order). `request_from_record` turns a record back into the `Request` it came from.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import taskmem_lab
from taskmem_lab.backends.base import Message, Request, Sampling, TextPart, VideoPart
from taskmem_lab.errors import ConfigError, ReplayError
from taskmem_lab.face_ids import IdMap
from taskmem_lab.media.video import Frame, encode_mp4
from taskmem_lab.memorize import preceding_text
from taskmem_lab.paths import slug
from taskmem_lab.perception.base import Perceiver
from taskmem_lab.schema import SCHEMA_VERSION, ClipRecord
from taskmem_lab.store import atomic_file, atomic_write_bytes
from taskmem_lab.training.replay import ReplayedClip, RunReplay

VIDEO_TOKEN = "<video>"
PRECEDING_PLACEHOLDER = "<preceding_description>"
DATA_SOURCE = "taskmem/episodic"
OFF_POLICY = "episodic"
ON_POLICY = "episodic_on_policy"
MEDIA_MODES = ("both", "frames", "mp4")


@dataclass(frozen=True)
class ExportParams:
    """Parameters of the training export.

    Attributes:
        media: "both" (frame JPEGs and mp4s), "frames" (only the JPEGs that were sent) or "mp4"
            (only the window and new-span videos).
        on_policy: also write the on-policy records.
        absolute_paths: media paths in records are absolute (default: relative to the export).
        parquet: also write parquet files (needs pyarrow).
    """

    media: str = field(default="both", metadata={"choices": MEDIA_MODES})
    on_policy: bool = True
    absolute_paths: bool = False
    parquet: bool = True

    def __post_init__(self) -> None:
        if self.media not in MEDIA_MODES:
            raise ConfigError(
                f"parameter 'media': must be one of {MEDIA_MODES}, got {self.media!r}"
            )


# --------------------------------------------------------------------------- media


class MediaWriter:
    """Writes frames (content-addressed, once per export) and window videos under `root/media`.

    Frames are written by the caller's thread; mp4s are encoded by `workers` background threads
    (PyAV encodes without the GIL), at most `2 * workers` clips queued, so replay decoding and
    encoding overlap. Call `close()` to wait for them (it raises the first failure).
    """

    def __init__(self, root: Path, mode: str, absolute: bool, workers: int = 2) -> None:
        self.root = root
        self.mode = mode
        self.absolute = absolute
        self.frames_written = 0
        self.videos_written = 0
        self.bytes_written = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="taskmem-mp4")
        self._pending: deque[Future[None]] = deque()
        self._limit = 2 * max(1, workers)

    def _ref(self, path: Path) -> str:
        return str(path.resolve()) if self.absolute else path.relative_to(self.root).as_posix()

    def _write(self, path: Path, data: bytes) -> None:
        # Media files can be re-made from the run, so they are renamed into place unsynced.
        atomic_write_bytes(path, data, fsync=False)
        with self._lock:
            self.bytes_written += len(data)

    def frames(self, stream_id: str, frames: Sequence[Frame], quality: int) -> list[str]:
        """Paths of the frames' JPEGs (the bytes that were sent), or [] when frames are off."""
        if self.mode == "mp4":
            return []
        out = []
        for f in frames:
            jpeg = f.jpeg(quality)
            digest = hashlib.sha256(jpeg).hexdigest()[:12]
            ms = int(round(f.time * 1000))
            path = self.root / "media" / slug(stream_id) / "frames" / f"{ms:010d}-{digest}.jpg"
            if not path.exists():
                self._write(path, jpeg)
                self.frames_written += 1
            out.append(self._ref(path))
        return out

    def _encode(self, path: Path, frames: Sequence[Frame], fps: float) -> None:
        self._write(path, encode_mp4(frames, fps))
        with self._lock:
            self.videos_written += 1

    def video(
        self, stream_id: str, tag: str, name: str, frames: Sequence[Frame], fps: float
    ) -> str | None:
        """Path of an mp4 of `frames` (as `VideoPart.mp4` encodes it; written in the background),
        or None when mp4 is off."""
        if self.mode == "frames" or not frames:
            return None
        while len(self._pending) >= self._limit:
            self._pending.popleft().result()
        path = self.root / "media" / slug(stream_id) / slug(tag) / f"{name}.mp4"
        self._pending.append(self._pool.submit(self._encode, path, tuple(frames), fps))
        return self._ref(path)

    def close(self) -> None:
        """Wait for every queued mp4; raises the first encoding failure."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- records


def _sampling_json(s: Sampling) -> dict[str, Any]:
    return {
        "temperature": s.temperature,
        "max_tokens": s.max_tokens,
        "top_p": s.top_p,
        "seed": s.seed,
    }


def _chat_text(blocks: Sequence[str]) -> str:
    for b in blocks:
        if VIDEO_TOKEN in b and b != VIDEO_TOKEN:
            raise ReplayError(f"a prompt text holds the literal {VIDEO_TOKEN!r}; cannot export it")
    return "\n".join(blocks)


@dataclass
class ClipMedia:
    """Where one clip's media went: window frames and video, new-span frames and video."""

    frames: list[str]
    frame_times: list[float]
    video: str | None
    new_frames: list[str]
    new_frame_times: list[float]
    new_video: str | None
    fps: float


def write_clip_media(
    replayed: ReplayedClip, media: MediaWriter, stream_id: str, tag: str
) -> ClipMedia:
    """The window and new-span media of a replayed clip, written under the export root."""
    params_fps = _video_part(replayed.inputs.request).fps
    quality = _video_part(replayed.inputs.request).jpeg_quality
    window = list(_video_part(replayed.inputs.request).frames)
    new = [f for f in window if f.time >= replayed.clip.start] or window[-1:]
    name = f"clip_{replayed.clip.index:05d}"
    frame_paths = media.frames(stream_id, window, quality)
    by_time = dict(zip([f.time for f in window], frame_paths, strict=False))
    return ClipMedia(
        frames=frame_paths,
        frame_times=[f.time for f in window],
        video=media.video(stream_id, tag, f"{name}_window", window, params_fps),
        new_frames=[by_time[f.time] for f in new] if frame_paths else [],
        new_frame_times=[f.time for f in new],
        new_video=media.video(stream_id, tag, f"{name}_new", new, params_fps),
        fps=params_fps,
    )


def _video_part(request: Request) -> VideoPart:
    parts = [p for m in request.messages for p in m.parts if isinstance(p, VideoPart)]
    if len(parts) != 1:
        raise ReplayError(f"expected one video part in the episodic request, found {len(parts)}")
    return parts[0]


def _messages(request: Request, media: ClipMedia, user_text: Callable[[str], str]) -> list[dict]:
    """The exact message parts, media by reference; `user_text` may rewrite user text blocks."""
    out = []
    for m in request.messages:
        content: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                text = user_text(p.text) if m.role == "user" else p.text
                content.append({"type": "text", "text": text})
            elif isinstance(p, VideoPart):
                content.append(
                    {
                        "type": "video",
                        "video": media.video,
                        "frames": media.frames,
                        "times": media.frame_times,
                        "fps": p.fps,
                        "jpeg_quality": p.jpeg_quality,
                    }
                )
            else:
                raise ReplayError(f"cannot export a {type(p).__name__} of an episodic request")
        out.append({"role": m.role, "content": content})
    return out


def _prompt(messages: list[dict]) -> list[dict[str, str]]:
    """verl's chat list: each message's text blocks joined by newlines, the video as `<video>`."""
    return [
        {
            "role": m["role"],
            "content": _chat_text(
                [c["text"] if c["type"] == "text" else VIDEO_TOKEN for c in m["content"]]
            ),
        }
        for m in messages
    ]


def _videos(media: ClipMedia) -> list[dict[str, Any]]:
    # encode_mp4 writes the frames at round(fps) frames per second; sampling the file at that
    # rate gives back every frame once. Without an mp4 the video is its list of frame files.
    if media.video is not None:
        return [{"video": media.video, "fps": float(max(1, round(media.fps)))}]
    return [{"video": list(media.frames), "fps": float(media.fps)}]


def clip_record(
    replayed: ReplayedClip,
    media: ClipMedia,
    step: int,
    run_label: str,
    on_policy: bool = False,
) -> dict[str, Any]:
    """The export record of one clip (off-policy, or on-policy with the preceding slot open)."""
    rec, clip, inputs = replayed.record, replayed.clip, replayed.inputs
    stream_id = replayed.stream_id
    slot = preceding_text(inputs.preceding, inputs.ids)

    def open_slot(text: str) -> str:
        if not on_policy or slot not in text:
            return text
        return text.replace(slot, PRECEDING_PLACEHOLDER, 1)

    messages = _messages(inputs.request, media, open_slot)
    if on_policy and PRECEDING_PLACEHOLDER not in json.dumps(messages):
        raise ReplayError(f"clip {clip.index}: the preceding-description slot was not found")
    response = json.dumps({"description": replayed.local_entry}, ensure_ascii=False)
    record_id = f"{stream_id}*{clip.index}"
    return {
        "schema": SCHEMA_VERSION,
        "id": record_id,
        "type": "episodic",
        "need_rollout": on_policy,
        "data_source": DATA_SOURCE,
        "prompt": _prompt(messages),
        "videos": _videos(media),
        "response": response,
        "stream": stream_id,
        "clip": clip.index,
        "step": step,
        "start": clip.start,
        "end": clip.end,
        "window_start": clip.window_start,
        "window_end": clip.end,
        "messages": messages,
        "sampling": _sampling_json(inputs.request.sampling),
        "frames": media.frames,
        "frame_times": media.frame_times,
        "new_video": media.new_video,
        "new_frames": media.new_frames,
        "new_frame_times": media.new_frame_times,
        "transcript": [_segment(s, inputs.ids) for s in rec.transcript],
        "tasks": [{"id": t.task_id, "question": t.question, "time": t.time} for t in inputs.tasks],
        "preceding_clips": [r.clip for r in inputs.preceding],
        "preceding_spans": [[r.start, r.end] for r in inputs.preceding],
        "local_ids": [[g, loc] for g, loc in inputs.ids.to_local_ids.items()],
        "entry": rec.episodic,
        "raw_reply": rec.raw_reply,
        "reasoning": rec.reasoning,
        "model": rec.model,
        "request_hash": rec.request_hash,
        "fake": rec.fake,
        "run": run_label,
        "reward_model": {"style": "model", "ground_truth": response},
        "extra_info": {"index": step, "stream": stream_id, "clip": clip.index, "split": "train"},
    }


def _segment(seg: dict[str, Any], ids: IdMap) -> dict[str, Any]:
    return {
        "start": float(seg["start"]),
        "end": float(seg["end"]),
        "text": str(seg["text"]),
        "speaker": ids.to_local(str(seg.get("speaker") or "unknown")),
    }


def fill_preceding(
    text: str,
    entries: Iterable[tuple[float, float, str]],
    local_ids: Iterable[Sequence[str]] = (),
) -> str:
    """An on-policy prompt text with its slot filled by `(start, end, text)` entries, oldest first.

    Formats the entries exactly as the memorizer does; trainers call it with the policy's own
    entries (global ids `[face_N]`) for the record's `preceding_clips`, and the record's
    `local_ids` (`[global, local]` pairs) to write them with the window's `<face_N>` numbering.
    """
    records = [
        ClipRecord(clip=i, start=a, end=b, window=(a, b), status="ok", episodic=t)
        for i, (a, b, t) in enumerate(entries)
    ]
    if PRECEDING_PLACEHOLDER not in text:
        raise ReplayError(f"the text has no {PRECEDING_PLACEHOLDER} slot to fill")
    ids = IdMap({g: loc for g, loc in local_ids})
    return text.replace(PRECEDING_PLACEHOLDER, preceding_text(records, ids), 1)


def request_from_record(record: dict[str, Any], root: str | Path) -> Request:
    """The `Request` a record was exported from, its frames read back from the JPEG files.

    Needs the frame files (media `both` or `frames`). The rebuilt request fingerprints like the
    one the memorizer sent, so `request.fingerprint(record["model"])[:16] == record["request_hash"]`.
    """
    import numpy as np
    from PIL import Image

    root = Path(root)
    messages = []
    for m in record["messages"]:
        parts: list[Any] = []
        for c in m["content"]:
            if c["type"] == "text":
                parts.append(TextPart(c["text"]))
                continue
            if not c.get("frames"):
                raise ReplayError(f"record {record['id']}: exported without frame files")
            quality = int(c["jpeg_quality"])
            frames = []
            for t, ref in zip(c["times"], c["frames"], strict=True):
                path = Path(ref) if Path(ref).is_absolute() else root / ref
                jpeg = path.read_bytes()
                image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                frames.append(Frame(float(t), image, {quality: jpeg}))
            # fps as stored (an int stays an int): the fingerprint hashes its JSON form.
            parts.append(VideoPart(tuple(frames), c["fps"], quality))
        messages.append(Message(m["role"], tuple(parts)))
    s = record["sampling"]
    return Request(
        messages=tuple(messages),
        sampling=Sampling(s["temperature"], s["max_tokens"], s["top_p"], s["seed"]),
        purpose="episodic",
    )


# --------------------------------------------------------------------------- files


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """All rows to `path` at once (temp file + rename); returns the row count."""
    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def require_pyarrow() -> None:
    """Fail before any work when parquet output is asked for and pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "parquet output needs pyarrow: pip install 'taskmem_lab[train]' (or pass --no-parquet)"
        ) from exc


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as a parquet file (pyarrow infers nested list/struct columns); temp file + rename."""
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_file(path, "wb") as fh:
        pq.write_table(pa.Table.from_pylist(rows), fh)


# --------------------------------------------------------------------------- export


@dataclass
class ExportSummary:
    """What an export wrote."""

    out: str
    records: int
    on_policy_records: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    frames_written: int = 0
    videos_written: int = 0
    media_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def export_training(
    runs: Sequence[str | Path],
    out: str | Path,
    params: ExportParams = ExportParams(),
    tasks_path: str | Path | None = None,
    source_dir: str | Path | None = None,
    perceiver: Perceiver | None = None,
    progress: bool = True,
) -> ExportSummary:
    """Export the finished clips of `runs` into `out` (records, media, dataset card)."""
    from tqdm.auto import tqdm

    if not runs:
        raise ConfigError("export-training needs at least one run directory")
    if params.parquet:
        require_pyarrow()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    media = MediaWriter(root, params.media, params.absolute_paths)
    off: list[dict[str, Any]] = []
    on: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    sources = []
    try:
        for run_path in runs:
            replay = RunReplay(run_path, tasks_path, source_dir, perceiver)
            label = str(replay.run.path)
            if replay.stream_id in seen:
                raise ConfigError(
                    f"runs {seen[replay.stream_id]} and {label} are both of stream "
                    f"{replay.stream_id!r}; record ids (<stream>*<clip>) would collide: export them "
                    "to separate directories"
                )
            seen[replay.stream_id] = label
            bar = tqdm(
                total=len(replay.records), disable=not progress, desc=replay.stream_id, unit="clip"
            )
            for step, replayed in enumerate(replay.clips()):
                clip_media = write_clip_media(replayed, media, replay.stream_id, replay.tag)
                off.append(clip_record(replayed, clip_media, step, label))
                if params.on_policy:
                    on.append(clip_record(replayed, clip_media, step, label, on_policy=True))
                bar.update(1)
            bar.close()
            sources.append(
                {
                    "run": label,
                    "stream": replay.stream_id,
                    "tag": replay.tag,
                    "model": replay.manifest.get("model"),
                    "clips": len(replay.records),
                    "unfinished_clips": replay.unfinished,
                    "params": replay.manifest.get("params"),
                    "prompts": replay.manifest.get("prompts"),
                    "fake": any(r.fake for r in replay.records.values()),
                }
            )
    finally:
        media.close()
    files = []
    for name, rows in ((OFF_POLICY, off), (ON_POLICY, on)):
        if name == ON_POLICY and not params.on_policy:
            continue
        write_jsonl(root / f"{name}.jsonl", rows)
        files.append(f"{name}.jsonl")
        if params.parquet:
            write_parquet(root / f"{name}.parquet", rows)
            files.append(f"{name}.parquet")
    summary = ExportSummary(
        out=str(root),
        records=len(off),
        on_policy_records=len(on),
        runs=sources,
        files=files,
        frames_written=media.frames_written,
        videos_written=media.videos_written,
        media_bytes=media.bytes_written,
    )
    from taskmem_lab.store import atomic_write_json

    atomic_write_json(
        root / "export.json",
        {
            "schema": SCHEMA_VERSION,
            "kind": "training-export",
            "taskmem_lab": taskmem_lab.__version__,
            "params": asdict(params),
            **summary.to_json(),
        },
    )
    (root / "README.md").write_text(dataset_card(summary, params), encoding="utf-8")
    return summary


def dataset_card(summary: ExportSummary, params: ExportParams) -> str:
    """A Hugging Face dataset card for an export: configs, columns, provenance."""
    ext = "parquet" if params.parquet else "jsonl"
    configs = [
        f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {stem}.{ext}"
        for name, stem in (("off_policy", OFF_POLICY), ("on_policy", ON_POLICY))
        if stem == OFF_POLICY or params.on_policy
    ]
    fake = any(r["fake"] for r in summary.runs)
    rows = "\n".join(
        f"| `{r['stream']}` | `{r['tag']}` | `{r['model']}` | {r['clips']} | "
        f"{len(r['unfinished_clips'])} | {r['params'].get('interval')} / "
        f"{r['params'].get('context_duration')} / {r['params'].get('frame_fps')} |"
        for r in summary.runs
    )
    warning = (
        "\n> **Made with a fake model.** Some source runs were written by a test double "
        "(`fake` column true); these records are for testing pipelines, not for training.\n"
        if fake
        else ""
    )
    return f"""---
pretty_name: taskmem episodic memorization (training export)
task_categories:
- video-text-to-text
tags:
- episodic-memory
- streaming-video
- taskmem_lab
configs:
{chr(10).join(configs)}
---

# taskmem episodic memorization: training export
{warning}
One record per memorized clip of a stream: the exact request the memorizer sent (system and user
text, the window's frames), the entry it wrote as `response`, and the new span's media for judges.
Written by `taskmem export-training` (taskmem_lab {taskmem_lab.__version__}); the format is
described in taskmem_lab's docs/training.md, section "Training data and memory-quality rewards",
and in `benchmarks/training/README.md`.

| file | records | rows |
| --- | --- | --- |
| `{OFF_POLICY}.jsonl` / `.parquet` | off-policy, `need_rollout: false` | {summary.records} |
| `{ON_POLICY}.jsonl` / `.parquet` | on-policy, `need_rollout: true`, slot `{PRECEDING_PLACEHOLDER}` | {summary.on_policy_records} |

Media (`media: {params.media}`) lies under `media/`; paths in records are
{"absolute" if params.absolute_paths else "relative to this directory"}.

## Source runs

| stream | tag | memorizer | clips | unfinished | interval / context s / fps |
| --- | --- | --- | --- | --- | --- |
{rows}

`export.json` holds the full parameters and prompt hashes of every source run.
"""
