"""How speech is cut into clips: one pass over the file, or a live policy with agreement.

Floor 3 (perception). The clip (10 s by default) is the memorizer's unit, not a good unit for
Whisper: words near its edges are heard with half their context. Three transcribers share one
interface (`transcribe_clip(clip)`, `warnings`, `audio`, `state()` / `restore()`), made by
`make_transcriber` from `AsrParams.resolved_mode`:

- `FileTranscriber` ("file", the default for files): one Whisper pass over each contiguous
  stretch of the stream (a file, or files without gaps), whose sentences are then given to the
  clip in which they end. What the original tool does.
- `LiveTranscriber` ("live", for live sources): every `live_step_s` of new audio, the
  look-back window (at most `live_window_s`, trimmed at a committed sentence end) is heard
  again; words are committed once two consecutive passes agree on them (LocalAgreement-2, as
  in whisper_streaming, here on whole sentences that are over), or once they are
  `live_max_delay_s` older than the newest audio. Committed
  words are grouped into sentences; a sentence goes to the clip in which it is complete. A clip
  never hears audio after its end.
- `asr.ClipTranscriber` ("clip"): each clip heard on its own, with carry-over.

Every mode gives a clip only sentences that end inside it (never words from after its end).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from taskmem_lab.errors import NoAudioError
from taskmem_lab.media.audio import SAMPLE_RATE, stream_has_audio, window_audio
from taskmem_lab.perception.asr import (
    Asr,
    ClipTranscriber,
    Word,
    ends_sentence,
    segment_span,
    split_sentences,
)
from taskmem_lab.perception.params import AsrParams
from taskmem_lab.perception.records import Segment
from taskmem_lab.schema import ClipSpec, Stream


class Transcriber(Protocol):
    """Speech of a stream, clip by clip in order (see the module docstring)."""

    warnings: list[str]
    audio: tuple[float, np.ndarray] | None

    def transcribe_clip(self, clip: ClipSpec, last: bool | None = None) -> list[Segment]: ...

    def state(self) -> Any: ...

    def restore(self, state: Any) -> None: ...


@dataclass
class _Audio:
    """Audio loading shared by the transcribers: the no-audio warning once, NoAudioError noted."""

    stream: Stream
    load_audio: Callable[[Stream, float, float, int], np.ndarray] = window_audio
    sr: int = SAMPLE_RATE
    warnings: list[str] = field(default_factory=list)
    has_audio: bool | None = None

    def load(self, t0: float, t1: float) -> np.ndarray | None:
        if self.has_audio is None:
            self.has_audio = stream_has_audio(self.stream)
        if not self.has_audio or t1 - t0 <= 0:
            if not self.has_audio and not self.warnings:
                self.warnings.append(f"stream {self.stream.stream_id!r} has no audio track")
            return None
        try:
            return self.load_audio(self.stream, t0, t1, self.sr)
        except NoAudioError as exc:
            self.warnings.append(str(exc))
            return None


def _clip_audio(
    span: tuple[float, np.ndarray], t0: float, t1: float, sr: int
) -> tuple[float, np.ndarray]:
    """`[t0, t1)` cut out of audio that starts at `span[0]`."""
    start, samples = span
    a = max(0, int(round((t0 - start) * sr)))
    b = max(a, int(round((t1 - start) * sr)))
    return start + a / sr, samples[a:b]


# --------------------------------------------------------------------------- file


@dataclass
class FileTranscriber:
    """One pass over each contiguous stretch of audio; each sentence goes to the clip in which
    it ends (ending within `tol_s` of a clip's end counts as the next clip's, since Whisper's
    last word may end a little after its timestamp). The stretch's audio is held while its
    clips are transcribed (64 kB per second)."""

    asr: Asr
    stream: Stream
    tol_s: float = AsrParams.boundary_tol_s
    load_audio: Callable[[Stream, float, float, int], np.ndarray] = window_audio
    warnings: list[str] = field(default_factory=list)
    audio: tuple[float, np.ndarray] | None = field(default=None, repr=False)
    _has_audio: bool | None = field(default=None, repr=False)
    _span: tuple[float, float] | None = field(default=None, repr=False)
    _heard: list[Segment] = field(default_factory=list, repr=False)
    _samples: tuple[float, np.ndarray] | None = field(default=None, repr=False)

    def _hear_span(self, span: tuple[float, float]) -> None:
        loader = _Audio(self.stream, self.load_audio, warnings=self.warnings)
        loader.has_audio = self._has_audio
        samples = loader.load(*span)
        self._has_audio = loader.has_audio
        self._span = span
        self._samples = None if samples is None else (span[0], samples)
        self._heard = [] if samples is None else self.asr.transcribe(samples, span[0])

    def transcribe_clip(self, clip: ClipSpec, last: bool | None = None) -> list[Segment]:
        span = segment_span(self.stream, clip)
        if self._span != span:
            self._hear_span(span)
        if last is None:
            last = clip.end >= span[1] - 1e-6
        lo = clip.start - self.tol_s if clip.start > span[0] + 1e-6 else -np.inf
        hi = clip.end if last else clip.end - self.tol_s
        out = [s for s in self._heard if lo < s.end <= hi + 1e-9 and s.end <= clip.end + 1e-9]
        self.audio = None
        if self._samples is not None:
            t0 = min([clip.start, *(s.start for s in out)])
            self.audio = _clip_audio(self._samples, t0, clip.end, SAMPLE_RATE)
        return out

    def state(self) -> None:
        return None  # a resumed run hears the stretch again

    def restore(self, state: Any) -> None:
        return None


# --------------------------------------------------------------------------- live

_NON_WORD = re.compile(r"[^\w']+")


def _same(a: Word, b: Word) -> bool:
    return _NON_WORD.sub("", a.text.lower()) == _NON_WORD.sub("", b.text.lower())


def agreed_prefix(previous: Sequence[Word], current: Sequence[Word]) -> int:
    """How many leading words two passes agree on (text, case and punctuation aside)."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if not _same(a, b):
            break
        n += 1
    return n


_EDGE_S = 1.0  # a sentence ending this close to the newest audio may still be cut off


def sentence_groups(words: Sequence[Word], pause_s: float) -> list[list[Word]]:
    """Words grouped into sentences: cut after sentence punctuation and at pauses."""
    groups: list[list[Word]] = []
    current: list[Word] = []
    for w in words:
        if current and pause_s > 0 and w.start - current[-1].end >= pause_s:
            groups.append(current)
            current = []
        current.append(w)
        if ends_sentence(w.text):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def agreed_words(
    previous: Sequence[Word], current: Sequence[Word], t: float, pause_s: float
) -> int:
    """How many leading words of `current` to commit: whole sentences that the previous pass
    heard word for word the same, and that are over (punctuated or followed by more speech)
    at least `_EDGE_S` before the newest audio `t`. Agreeing on whole sentences, not on word
    prefixes, keeps a sentence's words from being frozen while its end is still unheard."""
    before = sentence_groups(previous, pause_s)
    n = 0
    groups = sentence_groups(current, pause_s)
    for k, group in enumerate(groups):
        over = k + 1 < len(groups) or ends_sentence(group[-1].text)
        same = k < len(before) and len(before[k]) == len(group)
        same = same and agreed_prefix(before[k], group) == len(group)
        if not (over and same and group[-1].end <= t - _EDGE_S):
            break
        n += len(group)
    return n


@dataclass
class LiveTranscriber:
    """LocalAgreement-2 over a look-back window, stepping through each clip (see the module
    docstring). Works with any `Asr`: one with `words(audio, t0)` (Whisper) agrees word by
    word, others sentence by sentence."""

    asr: Asr
    stream: Stream
    step_s: float = AsrParams.live_step_s
    window_s: float = AsrParams.live_window_s
    max_delay_s: float = AsrParams.live_max_delay_s
    split_pause_s: float = AsrParams.split_pause_s
    max_carry_s: float = AsrParams.max_carry_s
    load_audio: Callable[[Stream, float, float, int], np.ndarray] = window_audio
    warnings: list[str] = field(default_factory=list)
    audio: tuple[float, np.ndarray] | None = field(default=None, repr=False)
    buffer_start: float | None = None
    committed_until: float = -np.inf
    previous: list[Word] = field(default_factory=list)  # the last pass, after the committed
    pending: list[Word] = field(default_factory=list)  # committed words of unfinished sentences
    passes: int = 0
    _has_audio: bool | None = field(default=None, repr=False)
    _loader: _Audio | None = field(default=None, repr=False)
    _span: tuple[float, float] | None = field(default=None, repr=False)

    def _units(self, samples: np.ndarray, t0: float) -> list[Word]:
        words = getattr(self.asr, "words", None)
        if callable(words):
            return list(words(samples, t0))
        return [Word(s.start, s.end, " " + s.text) for s in self.asr.transcribe(samples, t0)]

    def _pass(self, t: float, final: bool) -> None:
        """Hear the window up to `t` and commit what two passes agree on."""
        assert self._loader is not None and self.buffer_start is not None
        samples = self._loader.load(self.buffer_start, t)
        if samples is None:
            return
        self.passes += 1
        heard = [
            w
            for w in self._units(samples, self.buffer_start)
            if (w.start + w.end) / 2 > self.committed_until + 1e-6 and w.end <= t + 1e-6
        ]
        n = len(heard) if final else agreed_words(self.previous, heard, t, self.split_pause_s)
        # The bound on the delay: whole sentences over `max_delay_s` ago are committed without
        # agreement (the latest pass has heard the most of them), and any word twice as old.
        for group in sentence_groups(heard[n:], self.split_pause_s):
            if group[-1].end > t - self.max_delay_s:
                break
            n += len(group)
        while n < len(heard) and heard[n].end <= t - 2 * self.max_delay_s:
            n += 1
        if n:
            self.pending += heard[:n]
            self.committed_until = heard[n - 1].end
        self.previous = heard[n:]
        pause_after = n < len(heard) and heard[n].start - heard[n - 1].end >= self.split_pause_s
        if n and (ends_sentence(heard[n - 1].text) or pause_after):
            # Committed up to a sentence end: the next pass starts there, so Whisper hears the
            # speech still open from its beginning and nothing it already wrote down.
            self.buffer_start = min(max(self.buffer_start, heard[n - 1].end), t - self.step_s)
        if t - self.buffer_start > self.window_s:
            self._trim(t)

    def _trim(self, t: float) -> None:
        """Start the window at the last committed sentence end (else at the committed end)."""
        assert self.buffer_start is not None
        done = split_sentences(self.pending, self.split_pause_s)[:-1]
        cut = done[-1].end if done else self.committed_until
        if cut == -np.inf or cut <= self.buffer_start:
            cut = max(self.buffer_start, t - self.window_s)
        self.buffer_start = min(cut, t - self.step_s)

    def _sentences(self, clip_end: float, last: bool) -> list[Word]:
        """Complete sentences of the pending words (all of them for the last clip)."""
        sentences = split_sentences(self.pending, self.split_pause_s)
        if not sentences:
            return []
        tail = sentences[-1]
        complete = last or ends_sentence(tail.text)
        complete = complete or clip_end - tail.start > self.max_carry_s
        # Followed by a pause nobody has broken (no word heard since, committed or not).
        heard_since = any(w.start < tail.end + self.split_pause_s for w in self.previous)
        complete = complete or (clip_end - tail.end >= self.split_pause_s and not heard_since)
        if complete:
            self.pending = []
            return sentences
        keep_from = tail.start
        self.pending = [w for w in self.pending if w.start >= keep_from - 1e-9]
        return sentences[:-1]

    def transcribe_clip(self, clip: ClipSpec, last: bool | None = None) -> list[Segment]:
        span = segment_span(self.stream, clip)
        if self._loader is None:
            self._loader = _Audio(self.stream, self.load_audio, warnings=self.warnings)
            self._loader.has_audio = self._has_audio
        if self._span is not None and self._span != span:  # a new stretch: start afresh
            self.previous, self.pending, self.buffer_start = [], [], None
            self.committed_until = -np.inf
        self._span = span
        start = self.buffer_start
        if start is None or start > clip.start + 1e-6 or clip.start - start > self.window_s:
            # First clip, or the schedule jumped: nothing before the clip is worth re-hearing.
            self.buffer_start, self.previous = clip.start, []
        if last is None:
            last = clip.end >= span[1] - 1e-6
        window_start = self.buffer_start
        t = clip.start
        while t < clip.end - 1e-6:
            t = min(t + self.step_s, clip.end)
            self._pass(t, final=last and t >= clip.end - 1e-6)
        sentences = self._sentences(clip.end, last)
        self.audio = None
        if sentences:
            t0 = min(window_start if window_start is not None else clip.start, sentences[0].start)
            samples = self._loader.load(t0, clip.end)
            self.audio = None if samples is None else (t0, samples)
        hi = math.floor(clip.end * 10 + 1e-6) / 10
        out = []
        for w in sentences:
            end = min(round(w.end, 1), hi)
            start = min(round(w.start, 1), round(end - 0.1, 1))
            out.append(Segment(start, end, w.text))
        return out

    def state(self) -> dict[str, Any]:
        return {
            "buffer_start": self.buffer_start,
            "committed_until": None if self.committed_until == -np.inf else self.committed_until,
            "previous": [[w.start, w.end, w.text] for w in self.previous],
            "pending": [[w.start, w.end, w.text] for w in self.pending],
        }

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict):
            return
        self.buffer_start = state.get("buffer_start")
        until = state.get("committed_until")
        self.committed_until = -np.inf if until is None else float(until)
        self.previous = [Word(*w) for w in state.get("previous") or []]
        self.pending = [Word(*w) for w in state.get("pending") or []]


# --------------------------------------------------------------------------- factory


def make_transcriber(asr: Asr, stream: Stream, params: AsrParams) -> Transcriber:
    """The transcriber of `params.resolved_mode`."""
    mode = params.resolved_mode
    if mode == "file":
        return FileTranscriber(asr, stream, tol_s=params.boundary_tol_s)
    if mode == "live":
        return LiveTranscriber(
            asr,
            stream,
            step_s=params.live_step_s,
            window_s=params.live_window_s,
            max_delay_s=params.live_max_delay_s,
            split_pause_s=params.split_pause_s,
            max_carry_s=params.max_carry_s,
        )
    return ClipTranscriber.from_params(asr, stream, params)
