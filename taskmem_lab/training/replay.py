"""Replay a stored memory run: rebuild, clip by clip, the exact request the memorizer sent.

Floor 5 (training). The memorizer does not store its requests, but it is a pure
function of the stream, its parameters, the clip schedule, the entries already written and the
task stream, so a run directory holds everything needed to rebuild them. The selection of frames,
preceding entries, tasks and local ids is `memorize.prepare_clip` + `memorize.clip_inputs`, the
very functions the memorizer calls; every rebuilt request is checked against the `request_hash`
stored with its clip, and a mismatch stops the replay with an error naming the clip. A run made
with perception is replayed from its stored perception (`stored_perceiver`), no model runs.

Used by the training export (`training.py`), the reward judges (`rewards.py`) and the rollouts
(`rollouts.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ReplayError
from taskmem_lab.media.video import StreamFrames, probe
from taskmem_lab.memorize import (
    TASKS_FILE,
    ClipInputs,
    Perceiver,
    PreparedClip,
    clip_inputs,
    prepare_clip,
    schedule_for,
)
from taskmem_lab.params import MemorizeParams
from taskmem_lab.prompts import prompt_hash
from taskmem_lab.schema import ClipRecord, ClipSpec, Stream, StreamFile, Task
from taskmem_lab.store import RunDir
from taskmem_lab.tasks import load_tasks, tasks_digest
from taskmem_lab.timefmt import span


@dataclass
class ReplayedClip:
    """A finished clip of a stored run with the request its memorizer sent."""

    stream_id: str
    clip: ClipSpec
    record: ClipRecord
    prepared: PreparedClip
    inputs: ClipInputs

    @property
    def local_entry(self) -> str:
        """The stored entry with the window's local face ids, as the model wrote it."""
        return self.inputs.ids.to_local(self.record.episodic)


def _source_path(entry: dict[str, Any], source_dir: str | Path | None, run: Path) -> Path:
    path = Path(entry["path"])
    if path.is_file():
        return path
    if source_dir is not None and (Path(source_dir) / path.name).is_file():
        return Path(source_dir) / path.name
    hint = "pass --source-dir DIR (the folder that now holds it)"
    raise ReplayError(f"source video of {run} not found: {path}; {hint}")


def stream_of(manifest: dict[str, Any], run: Path, source_dir: str | Path | None = None) -> Stream:
    """The stream a run was made from, with file durations exactly as the memorizer had them.

    The manifest keeps durations rounded to 1e-6 s; a file whose probed duration rounds to the
    stored one gets the probed value (what `load_stream` gave the memorizer), otherwise the stored
    one (a duration written in a stream manifest).
    """
    files = []
    for entry in manifest.get("source") or []:
        path = _source_path(entry, source_dir, run)
        size = path.stat().st_size
        if entry.get("size") is not None and size != int(entry["size"]):
            raise ReplayError(
                f"source video {path} has {size} bytes but the run {run} was made from "
                f"{entry['size']} bytes; it changed since the run"
            )
        duration = float(entry["duration"])
        probed = probe(path).duration
        if round(probed, 6) == duration:
            duration = probed
        offset = float(entry.get("offset", 0.0))
        files.append(StreamFile(str(path), float(entry["start"]), duration, offset))
    if not files:
        raise ReplayError(f"the manifest of {run} lists no source files")
    return Stream(stream_id=str(manifest["stream_id"]), files=tuple(files))


def tasks_of(
    manifest: dict[str, Any], run: Path, tasks_path: str | Path | None = None
) -> list[Task]:
    """The run's task stream: stored beside it, or given; checked against the manifest digest."""
    digest = manifest.get("tasks")
    if tasks_path is not None:
        tasks = load_tasks(tasks_path)
        where = str(tasks_path)
    elif (run / TASKS_FILE).is_file():
        tasks = load_tasks(run / TASKS_FILE)
        where = str(run / TASKS_FILE)
    elif digest is None:
        return []
    else:
        raise ReplayError(
            f"{run} was memorized with a task stream (digest {digest}) that is not stored beside "
            "it; pass the task file with --run-tasks FILE"
        )
    if tasks_digest(tasks) != digest:
        raise ReplayError(
            f"the tasks in {where} (digest {tasks_digest(tasks)}) are not the ones {run} was "
            f"memorized with (digest {digest})"
        )
    return tasks


def stored_perceiver(
    manifest: dict[str, Any], stream: Stream, params: MemorizeParams, run: Path
) -> Any:
    """The perception a run used, read back from its stored records (no model runs).

    Rebuilds `perception.perceiver.StreamPerceiver` from the settings in the run's manifest and checks
    that it points at the same stored perception (settings hash); its `perceive` then answers
    every stored clip from disk, redrawing the same annotated frames.
    """
    from taskmem_lab.perception.params import (
        AsrParams,
        FaceParams,
        IdentityParams,
        PerceptionParams,
        VoiceParams,
    )
    from taskmem_lab.perception.perceiver import StreamPerceiver

    entry = manifest["perception"]
    where = manifest.get("perception_path")
    if not where or not Path(where).is_dir():
        raise ReplayError(f"the stored perception of {run} is missing ({where or 'no path'})")
    try:
        stored = entry["settings"]["perception"]
        parts: dict[str, Any] = {
            "faces": FaceParams(**stored["faces"]) if stored.get("faces") else None,
            "asr": AsrParams(**stored["asr"]) if stored.get("asr") else None,
            "voices": VoiceParams(**stored["voices"]) if stored.get("voices") else None,
            "identities": IdentityParams(**stored["identities"]),
            "speaker_model": stored.get("speaker_model"),
        }
    except (KeyError, TypeError) as exc:
        raise ReplayError(f"cannot read the perception settings of {run}: {exc}") from exc
    root = Path(where).parents[2]  # <root>/<stream>/perception/<hash>
    speaker = entry["settings"].get("speaker")
    perceiver = StreamPerceiver(
        stream, PerceptionParams(**parts), params, root, speaker_identity=speaker
    )
    if perceiver.key != entry.get("hash"):
        raise ReplayError(
            f"the perception settings of {run} hash to {perceiver.key}, the run used "
            f"{entry.get('hash')}; the perception code changed since the run"
        )
    return perceiver


class RunReplay:
    """A stored run opened for replay: its stream, parameters, tasks, schedule and records."""

    def __init__(
        self,
        run: str | Path | RunDir,
        tasks_path: str | Path | None = None,
        source_dir: str | Path | None = None,
        perceiver: Perceiver | None = None,
    ) -> None:
        self.run = run if isinstance(run, RunDir) else RunDir(Path(run))
        self.manifest = self.run.manifest()
        if self.manifest.get("kind", "memory") != "memory":
            raise ReplayError(f"{self.run.path} is not a memory run")
        self._check_prompts()
        self.params = MemorizeParams(**self.manifest["params"])
        self.stream = stream_of(self.manifest, self.run.path, source_dir)
        self.tasks = tasks_of(self.manifest, self.run.path, tasks_path)
        self.schedule = schedule_for(self.stream, self.params)
        self.records = self.run.finished()
        if not self.records:
            raise ReplayError(f"{self.run.path} has no finished clips")
        if perceiver is None and self.manifest.get("perception"):
            stored = stored_perceiver(self.manifest, self.stream, self.params, self.run.path)
            missing = sorted(set(self.records) - set(stored.records))
            if missing:
                raise ReplayError(
                    f"the stored perception of {self.run.path} lacks clips {missing[:5]}"
                )
            perceiver = stored
        self.perceiver = perceiver

    @property
    def stream_id(self) -> str:
        return self.stream.stream_id

    @property
    def tag(self) -> str:
        return str(self.manifest.get("tag") or self.run.path.name)

    @property
    def unfinished(self) -> list[int]:
        return [c.index for c in self.schedule if c.index not in self.records]

    def _check_prompts(self) -> None:
        for name, stored in (self.manifest.get("prompts") or {}).items():
            try:
                current = prompt_hash(name)
            except FileNotFoundError as exc:
                raise ReplayError(f"{self.run.path} used prompt {name!r}, which is gone") from exc
            if current != stored:
                raise ReplayError(
                    f"prompt {name!r} changed since {self.run.path} was made (hash {stored}, now "
                    f"{current}); its requests cannot be rebuilt"
                )

    def clips(self, only: set[int] | None = None) -> Iterator[ReplayedClip]:
        """Finished clips in stream order (only those in `only` when given), each verified.

        Raises `ReplayError` naming the clip when a rebuilt request does not hash to the stored
        `request_hash`.
        """
        frames = StreamFrames(self.stream, self.params.max_side)
        try:
            for clip in self.schedule:
                record = self.records.get(clip.index)
                if record is None or (only is not None and clip.index not in only):
                    continue
                prepared = prepare_clip(frames, clip, self.params, self.perceiver, self.schedule)
                inputs = clip_inputs(prepared, self.records, self.tasks, self.params)
                got = inputs.request.fingerprint(record.model)[:16]
                if got != record.request_hash:
                    raise ReplayError(
                        f"clip {clip.index} ({span(clip.start, clip.end)}) of {self.run.path}: "
                        f"the rebuilt request hashes to {got}, the stored request_hash is "
                        f"{record.request_hash}; the run's inputs (video, tasks, perception or "
                        "code) differ from what the memorizer used"
                    )
                yield ReplayedClip(self.stream_id, clip, record, prepared, inputs)
        finally:
            frames.close()
