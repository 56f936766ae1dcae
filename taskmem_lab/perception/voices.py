"""Who speaks: voice embeddings, speaker-to-face matching by a VLM, and voice re-identification.

Floor 3 (perception). For each clip's transcript segments:

1. `embed_segments` computes a voice embedding per segment of at least 1.5 s (`resemblyzer`'s
   `VoiceEncoder`, whose weights ship in its wheel; or the user module named by
   `TASKMEM_AUDIO_EMBED_BACKEND`, whose `get_audio_embeddings(wav_b64_list)` replaces it).
2. `match_speakers` asks a VLM, with the annotated window (boxes labelled `<face_N>`) and the
   numbered segments, which visible face says each segment (prompts `speakers_*.txt`); replies
   are parsed tolerantly and ids the window does not show become "unknown".
3. `assign_speakers` sets `Segment.speaker` to global ids: a face match wins and banks the
   segment's voice with that character; otherwise the voice is re-identified against the
   identity registry (off-screen speakers); otherwise "unknown".

The registry is `perception.identities.IdentityRegistry`; this module relies only on its voice
methods (`VoiceRegistry` below).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import ChatModel, Request, Sampling, TextPart, VideoPart
from taskmem_lab.errors import ConfigError, ParseError, PluginError, missing_extra
from taskmem_lab.face_ids import IdMap
from taskmem_lab.media.audio import SAMPLE_RATE, wav_bytes
from taskmem_lab.media.video import Frame
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import MIN_VOICE_S, VoiceParams
from taskmem_lab.perception.records import UNKNOWN_SPEAKER, Segment, unit
from taskmem_lab.plugins import call_plugin, plugin_function
from taskmem_lab.prompts import render
from taskmem_lab.replies import parse_object
from taskmem_lab.timefmt import span

log = logging.getLogger(__name__)

PLUGIN_ENV = "TASKMEM_AUDIO_EMBED_BACKEND"
PLUGIN_FUNCTION = "get_audio_embeddings"
SPEAKER_PROMPTS = ("speakers_system", "speakers_user")


# --------------------------------------------------------------------------- embeddings


class VoiceEmbedder(Protocol):
    """Speaker embeddings of mono clips at `sr` Hz; None where a clip yields none."""

    name: str

    def embed(self, clips: Sequence[np.ndarray], sr: int) -> list[np.ndarray | None]: ...


class ResemblyzerEmbedder:
    """resemblyzer's GE2E `VoiceEncoder` (256-d, unit length), loaded on first use."""

    name = "resemblyzer"

    def __init__(self, device: str = VoiceParams.device) -> None:
        self.device = device
        self._encoder: Any = None

    def _load(self) -> Any:
        if self._encoder is None:
            # resemblyzer imports webrtcvad, which warns that pkg_resources is deprecated: a
            # notice about a dependency's packaging, nothing a user of this run can act on.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
                try:
                    from resemblyzer import VoiceEncoder
                except ImportError as exc:
                    raise missing_extra("resemblyzer", "asr", exc) from exc
            self._encoder = VoiceEncoder(self.device, verbose=False)
        return self._encoder

    def embed(self, clips: Sequence[np.ndarray], sr: int) -> list[np.ndarray | None]:
        """Embeddings as `VoiceEncoder.embed_utterance` computes them (the mean of its 1.6 s
        partials, normalized), with the partials of all clips in one forward pass: the LSTM
        runs its time steps once per batch instead of once per clip."""
        import torch

        encoder = self._load()
        from resemblyzer import audio, preprocess_wav
        from resemblyzer.hparams import sampling_rate

        mels: list[np.ndarray] = []
        owner: list[int] = []
        out: list[np.ndarray | None] = [None] * len(clips)
        for k, clip in enumerate(clips):
            # Volume normalization and long-silence trimming, as the encoder was trained with.
            wav = preprocess_wav(
                np.asarray(clip, np.float32), source_sr=None if sr == sampling_rate else sr
            )
            if len(wav) < 0.5 * sampling_rate:
                continue  # nothing voiced left after trimming
            wav_slices, mel_slices = encoder.compute_partial_slices(len(wav), 1.3, 0.75)
            if wav_slices[-1].stop >= len(wav):
                wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)), "constant")
            mel = audio.wav_to_mel_spectrogram(wav)
            mels += [mel[s] for s in mel_slices]
            owner += [k] * len(mel_slices)
        if not mels:
            return out
        with torch.no_grad():
            partials = encoder(torch.from_numpy(np.stack(mels)).to(encoder.device)).cpu().numpy()
        index = np.asarray(owner)
        for k in sorted(set(owner)):
            out[k] = unit(partials[index == k].mean(axis=0))
        return out


class PluginEmbedder:
    """A user module whose `get_audio_embeddings(wav_b64_list) -> list[list[float]]` embeds voices.

    Each item of `wav_b64_list` is a base64 string of a 16-bit PCM mono WAV file. The plug-in
    returns one vector per item (all of one length; `None` for an item it cannot embed). Any
    exception or malformed result is a `PluginError`: a failing plug-in never means "no voices".
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.name = f"plugin:{spec}"
        self._fn: Callable[[list[str]], Any] = plugin_function(PLUGIN_ENV, spec, PLUGIN_FUNCTION)

    def embed(self, clips: Sequence[np.ndarray], sr: int) -> list[np.ndarray | None]:
        if not clips:
            return []
        payload = [base64.b64encode(wav_bytes(c, sr)).decode() for c in clips]
        result = call_plugin(PLUGIN_ENV, self.spec, self._fn, payload)
        return _check_plugin_result(self.name, result, len(clips))


def _check_plugin_result(name: str, result: Any, n: int) -> list[np.ndarray | None]:
    if not isinstance(result, list | tuple) or len(result) != n:
        got = f"{len(result)} items" if isinstance(result, list | tuple) else type(result).__name__
        raise PluginError(f"{name}: expected a list of {n} embeddings, got {got}")
    out: list[np.ndarray | None] = []
    dim: int | None = None
    for i, item in enumerate(result):
        if item is None:
            out.append(None)
            continue
        try:
            vec = np.asarray(item, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{name}: embedding {i} is not a list of numbers ({exc})") from exc
        if vec.size == 0 or not np.all(np.isfinite(vec)) or not np.any(vec):
            raise PluginError(f"{name}: embedding {i} is empty, all zero or not finite")
        if dim is not None and vec.size != dim:
            raise PluginError(f"{name}: embedding {i} has {vec.size} values, earlier ones {dim}")
        dim = vec.size
        out.append(unit(vec))
    return out


VOICE_BACKENDS: dict[str, Callable[[str], VoiceEmbedder]] = {
    "resemblyzer": ResemblyzerEmbedder,
}


def make_voice_embedder(
    backend: str = VoiceParams.backend, device: str = VoiceParams.device, plugin: str | None = None
) -> VoiceEmbedder:
    """The voice embedder: the plug-in (`plugin`, else `$TASKMEM_AUDIO_EMBED_BACKEND`) when one is
    named, else `backend` from `VOICE_BACKENDS`."""
    plugin = plugin if plugin is not None else os.environ.get(PLUGIN_ENV, "").strip()
    if plugin:
        return PluginEmbedder(plugin)
    if backend not in VOICE_BACKENDS:
        raise ConfigError(
            f"unknown voice backend {backend!r}: expected one of {sorted(VOICE_BACKENDS)}"
        )
    return VOICE_BACKENDS[backend](device)


def embed_segments(
    segments: Sequence[Segment],
    audio: np.ndarray,
    t0: float,
    embedder: VoiceEmbedder,
    sr: int = SAMPLE_RATE,
    min_s: float = MIN_VOICE_S,
) -> list[np.ndarray | None]:
    """One embedding per segment (None for segments shorter than `min_s` within `audio`).

    `audio` holds stream times `[t0, t0 + len(audio) / sr)`; each segment is cut from it, so a
    segment reaching outside it is embedded from the part it covers. All eligible segments go to
    the embedder in one call.
    """
    clips: list[np.ndarray] = []
    where: list[int] = []
    for i, seg in enumerate(segments):
        a = max(0, int(round((seg.start - t0) * sr)))
        b = min(len(audio), int(round((seg.end - t0) * sr)))
        if (b - a) / sr >= min_s:
            clips.append(np.asarray(audio[a:b], np.float32))
            where.append(i)
    out: list[np.ndarray | None] = [None] * len(segments)
    for i, emb in zip(where, embedder.embed(clips, sr) if clips else [], strict=True):
        out[i] = emb
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0


# --------------------------------------------------------------------------- speaker <-> face

_FACE = re.compile(r"face[_ ]?(\d+)", re.IGNORECASE)
_INDEX = re.compile(r"\d+")


def speakers_request(
    segments: Sequence[Segment],
    frames: Sequence[Frame],
    visible: Sequence[str],
    fps: float,
    jpeg_quality: int = MemorizeParams.jpeg_quality,
    temperature: float = VoiceParams.temperature,
    max_tokens: int = VoiceParams.max_tokens,
) -> Request:
    """Annotated window frames and the numbered transcript; asks who says each line."""
    lines = "\n".join(
        f"{i}. [{span(s.start, s.end, True)}] {s.text}" for i, s in enumerate(segments, 1)
    )
    user = render("speakers_user", faces=", ".join(visible), lines=lines)
    parts = (VideoPart(tuple(frames), fps, jpeg_quality), TextPart(user))
    return Request.chat(
        render("speakers_system"),
        parts,
        Sampling(temperature=temperature, max_tokens=max_tokens),
        "speakers",
    )


@dataclass(frozen=True)
class SpeakerMatches:
    """Per segment, the visible local id `<face_N>` that says it, or "unknown"; plus the ids the
    reply named that the window does not show (turned into "unknown")."""

    labels: tuple[str, ...]
    invalid: tuple[str, ...] = ()


def _local_id(value: Any) -> str | None:
    """`<face_3>`, `face_3`, `[face_3]`, "Face 3" -> `<face_3>`; None for unknown/none/empty."""
    if not isinstance(value, str):
        return None
    m = _FACE.search(value)
    return f"<face_{int(m.group(1))}>" if m else None


def parse_speakers_reply(text: str, n: int, visible: Sequence[str]) -> SpeakerMatches:
    """Tolerant parse of `{"speakers": {"1": "<face_2>", "2": "unknown"}}` for `n` segments.

    Accepted shapes: a dict keyed by 1-based line number (ints, "1", "line 1", "segment 1"), a
    list of labels in line order, or a list of `{"segment": 1, "speaker": "<face_2>"}` items.
    Missing lines, "unknown"-like values and ids not in `visible` become "unknown"; the latter are
    reported in `invalid`. Raises `ParseError` when there is no "speakers" field.
    """
    obj = parse_object(text)
    raw = obj.get("speakers")
    if raw is None:
        raise ParseError("the JSON object has no field 'speakers'")
    by_line: dict[int, Any] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            m = _INDEX.search(str(key))
            if m:
                by_line[int(m.group(0))] = value
    elif isinstance(raw, list):
        for pos, item in enumerate(raw, 1):
            if isinstance(item, dict):
                key = next((item[k] for k in ("segment", "line", "index", "id") if k in item), pos)
                m = _INDEX.search(str(key))
                value = next((item[k] for k in ("speaker", "face", "label") if k in item), None)
                by_line[int(m.group(0)) if m else pos] = value
            else:
                by_line[pos] = item
    else:
        raise ParseError("the field 'speakers' is neither an object nor a list")
    allowed = set(visible)
    labels: list[str] = []
    invalid: list[str] = []
    for line in range(1, n + 1):
        local = _local_id(by_line.get(line))
        if local is not None and local not in allowed:
            invalid.append(local)
            local = None
        labels.append(local or UNKNOWN_SPEAKER)
    return SpeakerMatches(tuple(labels), tuple(invalid))


def match_speakers(
    model: ChatModel,
    segments: Sequence[Segment],
    frames: Sequence[Frame],
    visible: Sequence[str],
    fps: float,
    params: VoiceParams | None = None,
) -> SpeakerMatches:
    """Ask `model` which visible `<face_N>` says each segment; no call when nothing is visible."""
    params = params or VoiceParams()
    if not segments:
        return SpeakerMatches(())
    if not visible or not frames:
        return SpeakerMatches(tuple(UNKNOWN_SPEAKER for _ in segments))
    request = speakers_request(
        segments, frames, visible, fps, temperature=params.temperature, max_tokens=params.max_tokens
    )
    asked = ask(
        model,
        request,
        lambda text: parse_speakers_reply(text, len(segments), visible),
        '{"speakers": {"1": "<face_1>", "2": "unknown"}}',
        params.reasks,
    )
    matches: SpeakerMatches = asked.value
    if matches.invalid:
        log.warning(
            "The speaker-matching model (%s) named %s, which no face in this clip's frames has; "
            "those lines keep an unknown speaker.",
            model.model_id,
            ", ".join(matches.invalid),
        )
    return matches


# --------------------------------------------------------------------------- assignment


class VoiceRegistry(Protocol):
    """The voice side of `perception.identities.IdentityRegistry`."""

    def match_voice(self, embedding: np.ndarray) -> str | None: ...

    def add_voice(self, global_id: str, embedding: np.ndarray) -> None: ...

    def new_voice_character(self, embedding: np.ndarray) -> str: ...

    def has_voice(self, global_id: str) -> bool: ...

    def add_evidence(self, voice_id: str, face_id: str, seconds: float) -> float: ...

    def evidence_share(self, voice_id: str, face_id: str) -> float: ...

    def link_voice(self, voice_id: str, face_id: str, how: str) -> None: ...


def cluster_voices(embeddings: Sequence[np.ndarray], min_similarity: float) -> list[int]:
    """Speaker labels 0..k-1 for unit voice embeddings: average-linkage clustering on cosine
    distance, cut where clusters are less similar than `min_similarity` on average."""
    n = len(embeddings)
    if n <= 1:
        return [0] * n
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    matrix = np.stack([np.asarray(e, np.float64) for e in embeddings])
    tree = linkage(pdist(matrix, "cosine"), method="average")
    labels = fcluster(tree, t=1.0 - min_similarity, criterion="distance")
    order: dict[int, int] = {}
    return [order.setdefault(int(label), len(order)) for label in labels]


def assign_speakers(
    segments: Sequence[Segment],
    face_matches: Sequence[str],
    embeddings: Sequence[np.ndarray | None],
    registry: VoiceRegistry | None,
    ids: IdMap,
    new_voices: bool = False,
    alone: Sequence[str | frozenset[str] | None] | None = None,
    params: VoiceParams | None = None,
) -> list[str]:
    """Set each segment's `speaker` to a global id (`[face_N]`, `[voice_N]`) or "unknown":

    1. face: the VLM matched a visible `<face_N>` (mapped to its global id through `ids`); the
       segment's embedding, if any, is banked with that character.
    2. label: the ASR gave the segment a speaker label (`vlm:S1`) that another segment of the
       same clip has, and all face-matched segments with that label agree on one person.
    3. voice: the embedding matches a character's voice bank (`registry.match_voice`), which is
       how speakers who are off screen are recognized.
    4. new_voice: with `new_voices`, the unmatched embeddings of the clip are clustered
       (`cluster_voices`) and each cluster starts a voice-only character `[voice_N]`.
    5. visible_alone: with `alone` (per segment, the face ids in view while it was said, or
       one face id, or None when unclear) and `params.link_faces`, a voice-only speaker gains
       evidence for the one face in view that has no voice yet (faces with a voice bank speak
       with their own voice), and is linked to it once the evidence is strong (see
       `VoiceParams.link_min_s`); its segments of this clip then take the face's id.
    6. continues: a segment still undecided (too short to embed) that starts within
       `params.continue_gap_s` of the end of the segment before it takes that segment's
       speaker (Whisper cuts one speaker's sentence at a comma or full stop into pieces).
    7. unknown.

    Face matches are banked before any voice is matched, so a voice seen with a face earlier in
    the same clip is already known. Returns how each segment was decided.
    """
    if not (len(segments) == len(face_matches) == len(embeddings)):
        raise ValueError(
            f"{len(segments)} segments, {len(face_matches)} face matches and "
            f"{len(embeddings)} embeddings: need one of each per segment"
        )
    params = params or VoiceParams()
    to_global = ids.to_global_ids
    how = [UNKNOWN_SPEAKER] * len(segments)
    labels = [s.speaker if s.speaker.startswith("vlm:") else "" for s in segments]
    label_people: dict[str, set[str]] = {}
    decided: list[str | None] = [None] * len(segments)
    for i, local in enumerate(face_matches):
        gid = to_global.get(local)
        if gid is None:
            if local != UNKNOWN_SPEAKER:
                log.warning(
                    "The speaker-matching model named %s, which no face in this clip's frames "
                    "has; that line keeps an unknown speaker.",
                    local,
                )
            continue
        decided[i], how[i] = gid, "face"
        if labels[i]:
            label_people.setdefault(labels[i], set()).add(gid)
        emb = embeddings[i]
        if emb is not None and registry is not None:
            registry.add_voice(gid, emb)
    unmatched: list[int] = []
    for i in range(len(segments)):
        if decided[i] is not None:
            continue
        people = label_people.get(labels[i], set())
        if len(people) == 1:
            decided[i], how[i] = next(iter(people)), "label"
            continue
        emb = embeddings[i]
        if emb is None or registry is None:
            continue
        gid = registry.match_voice(emb)
        if gid is not None:
            decided[i], how[i] = gid, "voice"
        else:
            unmatched.append(i)
    if new_voices and unmatched and registry is not None:
        threshold = float(getattr(getattr(registry, "params", None), "voice_threshold", 0.7))
        groups: dict[int, list[int]] = {}
        found = cluster_voices([embeddings[i] for i in unmatched], threshold)  # type: ignore[misc]
        for i, label in zip(unmatched, found, strict=True):
            groups.setdefault(label, []).append(i)
        for members in groups.values():
            rows = np.stack([embeddings[i] for i in members])  # type: ignore[misc]
            gid = registry.new_voice_character(rows)
            for i in members:
                decided[i], how[i] = gid, "new_voice"
    if alone is not None and registry is not None and params.link_faces:
        for i, seen in enumerate(alone):
            voice = decided[i]
            if seen is None or voice is None or not voice.startswith("[voice_"):
                continue
            candidates = {seen} if isinstance(seen, str) else set(seen)
            if len(candidates) > 1:
                candidates = {f for f in candidates if not registry.has_voice(f)}
            if len(candidates) != 1:
                continue
            face = candidates.pop()
            seconds = registry.add_evidence(voice, face, segments[i].end - segments[i].start)
            if (
                seconds >= params.link_min_s
                and registry.evidence_share(voice, face) >= params.link_share
            ):
                registry.link_voice(voice, face, "visible_alone")
                for k in range(len(segments)):
                    if decided[k] == voice:
                        decided[k], how[k] = face, "visible_alone"
    if params.continue_gap_s > 0:
        order = sorted(range(len(segments)), key=lambda k: (segments[k].start, segments[k].end))
        for before, i in zip(order, order[1:], strict=False):
            gap = segments[i].start - segments[before].end
            undecided = decided[i] is None and embeddings[i] is None
            if (
                undecided
                and decided[before] is not None
                and -1e-6 <= gap <= params.continue_gap_s + 1e-6
            ):
                decided[i], how[i] = decided[before], "continues"
    for seg, gid in zip(segments, decided, strict=True):
        seg.speaker = gid if gid is not None else UNKNOWN_SPEAKER
    return how


def identify_speakers(
    segments: Sequence[Segment],
    audio: np.ndarray,
    t0: float,
    frames: Sequence[Frame],
    fps: float,
    ids: IdMap,
    registry: VoiceRegistry | None,
    model: ChatModel | None,
    embedder: VoiceEmbedder | None,
    params: VoiceParams | None = None,
    visible: Sequence[str] | None = None,
    alone: Sequence[str | frozenset[str] | None] | None = None,
) -> list[str]:
    """One clip's speakers, end to end: embed, match faces, assign. Returns how each was decided.

    `audio` covers stream times from `t0` (the audio the transcript came from, e.g.
    `ClipTranscriber.audio`); `frames` are the annotated window frames; `visible` the local ids
    drawn on them (default: every local id of `ids`); `alone` per segment the global face ids
    in view while it was said (None: unclear), for voice-face links.
    """
    params = params or VoiceParams()
    if not segments:
        return []
    visible = list(visible) if visible is not None else list(ids.to_local_ids.values())
    if params.embed and embedder is not None:
        embeddings = embed_segments(segments, audio, t0, embedder, min_s=params.min_segment_s)
    else:
        embeddings = [None] * len(segments)
    if params.match_faces and model is not None:
        faces = match_speakers(model, segments, frames, visible, fps, params).labels
    else:
        faces = tuple(UNKNOWN_SPEAKER for _ in segments)
    return assign_speakers(
        segments, faces, embeddings, registry, ids, params.new_voices, alone, params
    )


__all__ = [
    "MIN_VOICE_S",
    "PLUGIN_ENV",
    "PluginEmbedder",
    "ResemblyzerEmbedder",
    "SpeakerMatches",
    "VoiceEmbedder",
    "VoiceParams",
    "VoiceRegistry",
    "assign_speakers",
    "cluster_voices",
    "cosine",
    "embed_segments",
    "identify_speakers",
    "make_voice_embedder",
    "match_speakers",
    "parse_speakers_reply",
    "speakers_request",
]
