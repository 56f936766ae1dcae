"""ASR modes: one pass over the file, and the live policy (LocalAgreement-2); no leakage in any."""

from __future__ import annotations

import numpy as np
import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.media.audio import SAMPLE_RATE
from taskmem_lab.media.stream import segments
from taskmem_lab.media.video import clip_schedule
from taskmem_lab.perception.asr import ClipTranscriber, Word
from taskmem_lab.perception.params import AsrParams
from taskmem_lab.perception.records import Segment
from taskmem_lab.perception.transcribers import (
    FileTranscriber,
    LiveTranscriber,
    agreed_prefix,
    make_transcriber,
)
from taskmem_lab.schema import ClipSpec, Stream, StreamFile


class FakeTimelineAsr:
    """Hears words of a timeline (start, end, text): a word cut by the window's end is heard
    as `text~` (half heard); `mishear` maps a word to what is heard while it lies within 1 s of
    the window's end (too little context). Records every window and whether it reached into
    the future of the clip being transcribed."""

    def __init__(self, words, mishear=None) -> None:
        self.timeline = [Word(a, b, f" {t}") for a, b, t in words]
        self.mishear = mishear or {}
        self.windows: list[tuple[float, float]] = []

    def words(self, audio: np.ndarray, t0: float) -> list[Word]:
        t1 = t0 + len(audio) / SAMPLE_RATE
        self.windows.append((round(t0, 3), round(t1, 3)))
        out = []
        for w in self.timeline:
            if w.end <= t0 or w.start >= t1:
                continue
            text = w.text
            if w.end > t1:
                text += "~"
            elif t1 - w.end < 1.0:
                text = self.mishear.get(text.strip(), text.strip())
                text = " " + text
            out.append(Word(max(w.start, t0), min(w.end, t1), text))
        return out

    def transcribe(self, audio: np.ndarray, t0: float) -> list[Segment]:
        """Sentences: words grouped at full stops."""
        out, current = [], []
        for w in self.words(audio, t0):
            current.append(w)
            if w.text.endswith("."):
                out.append(Segment(current[0].start, current[-1].end, _text(current)))
                current = []
        if current:
            out.append(Segment(current[0].start, current[-1].end, _text(current)))
        return out


def _text(words) -> str:
    return "".join(w.text for w in words).strip()


def silence(stream: Stream, t0: float, t1: float, sr: int) -> np.ndarray:
    return np.zeros(int(round((t1 - t0) * sr)), np.float32)


def one_file(duration: float) -> Stream:
    return Stream("s", (StreamFile("unused.mp4", 0.0, duration),))


def sentence_words(start: float, text: str, word_s: float = 0.4) -> list[tuple[float, float, str]]:
    words = text.split()
    return [(start + i * word_s, start + (i + 1) * word_s - 0.05, w) for i, w in enumerate(words)]


# Six sentences over 40 s; ones cross 10 s, 20 s (ending 0.2 s after it) and 30 s.
TIMELINE = (
    sentence_words(1.0, "the cat sat down.")
    + sentence_words(8.6, "we fold the paper maps today.")
    + sentence_words(18.2, "please bring the blue kettle.")
    + sentence_words(24.0, "yes.")
    + sentence_words(28.5, "the pilot found seven apples near the bridge.")
    + sentence_words(35.0, "thank you.")
)
SENTENCES = [
    "the cat sat down.",
    "we fold the paper maps today.",
    "please bring the blue kettle.",
    "yes.",
    "the pilot found seven apples near the bridge.",
    "thank you.",
]


def run(transcriber, stream: Stream, asr: FakeTimelineAsr, interval: float = 10.0):
    per_clip = []
    for clip in clip_schedule(segments(stream), interval, 50.0):
        before = len(asr.windows)
        got = transcriber.transcribe_clip(clip)
        # The leakage rule: no segment, and (live, clip) no window, reaches past the clip's end.
        assert all(s.end <= clip.end + 1e-9 for s in got), (clip, got)
        if not isinstance(transcriber, FileTranscriber):
            assert all(b <= clip.end + 1e-9 for _, b in asr.windows[before:]), asr.windows
        per_clip.append([s.text for s in got])
    return per_clip


def test_file_mode_hears_the_file_once_and_gives_each_sentence_to_the_clip_where_it_ends():
    asr = FakeTimelineAsr(TIMELINE)
    per_clip = run(
        FileTranscriber(asr, one_file(40.0), load_audio=silence, _has_audio=True),
        one_file(40.0),
        asr,
    )
    assert asr.windows == [(0.0, 40.0)]
    assert per_clip == [
        [SENTENCES[0]],
        [SENTENCES[1]],
        [SENTENCES[2], SENTENCES[3]],  # "kettle." ends at 20.15: in clip 2
        [SENTENCES[4], SENTENCES[5]],
    ]


def test_file_mode_counts_a_sentence_ending_just_before_a_clip_end_as_the_next_clips():
    words = sentence_words(7.6, "we fold the paper maps.")  # ends at 9.55, within 0.5 s of 10
    asr = FakeTimelineAsr(words)
    t = FileTranscriber(asr, one_file(20.0), load_audio=silence, _has_audio=True)
    assert run(t, one_file(20.0), asr) == [[], ["we fold the paper maps."]]
    # ...and each stretch of a stream with a gap is heard on its own.
    stream = Stream("two", (StreamFile("a.mp4", 0.0, 15.0), StreamFile("b.mp4", 100.0, 10.0)))
    asr = FakeTimelineAsr(sentence_words(12.0, "end of a.") + sentence_words(101, "in b."))
    got = run(FileTranscriber(asr, stream, load_audio=silence, _has_audio=True), stream, asr)
    assert got == [[], ["end of a."], ["in b."]]
    assert asr.windows == [(0.0, 15.0), (100.0, 110.0)]


def test_live_mode_commits_every_word_once_in_order_within_the_delay_bound():
    asr = FakeTimelineAsr(TIMELINE)
    t = LiveTranscriber(asr, one_file(40.0), load_audio=silence, _has_audio=True, max_delay_s=6.0)
    per_clip = run(t, one_file(40.0), asr)
    assert [s for clip in per_clip for s in clip] == SENTENCES
    # A sentence is given to the clip where it ends or the next (the delay is bounded).
    assert per_clip[0] == [SENTENCES[0]]
    assert SENTENCES[1] in per_clip[1]
    assert SENTENCES[4] in per_clip[3] or SENTENCES[4] in per_clip[2]
    # The look-back window stays bounded.
    assert max(b - a for a, b in asr.windows) <= t.window_s + t.step_s + 1e-6


def test_live_mode_waits_for_two_passes_to_agree():
    asr = FakeTimelineAsr(TIMELINE, mishear={"fold": "foiled", "kettle.": "cattle."})
    t = LiveTranscriber(asr, one_file(40.0), load_audio=silence, _has_audio=True)
    text = " ".join(s for clip in run(t, one_file(40.0), asr) for s in clip)
    assert "fold" in text and "foiled" not in text
    assert "kettle." in text and "cattle" not in text
    assert "~" not in text
    assert agreed_prefix([Word(0, 1, " The"), Word(1, 2, " cat")], [Word(0, 1, "the,")]) == 1


def test_live_mode_resumes_from_its_stored_state():
    stream = one_file(40.0)
    clips = clip_schedule(segments(stream), 10.0, 50.0)
    whole = LiveTranscriber(FakeTimelineAsr(TIMELINE), stream, load_audio=silence, _has_audio=True)
    expected = [[s.text for s in whole.transcribe_clip(c)] for c in clips]
    first = LiveTranscriber(FakeTimelineAsr(TIMELINE), stream, load_audio=silence, _has_audio=True)
    got = [[s.text for s in first.transcribe_clip(c)] for c in clips[:2]]
    resumed = LiveTranscriber(
        FakeTimelineAsr(TIMELINE), stream, load_audio=silence, _has_audio=True
    )
    resumed.restore(first.state())
    got += [[s.text for s in resumed.transcribe_clip(c)] for c in clips[2:]]
    assert got == expected


class FakeSentenceAsr:
    """An ASR with sentences only (no `words`), like the vlm backend."""

    def __init__(self, inner: FakeTimelineAsr) -> None:
        self.inner = inner
        self.windows = inner.windows

    def transcribe(self, audio: np.ndarray, t0: float) -> list[Segment]:
        return self.inner.transcribe(audio, t0)


def test_live_mode_works_sentence_by_sentence_with_an_asr_without_words():
    asr = FakeSentenceAsr(FakeTimelineAsr(TIMELINE))
    t = LiveTranscriber(asr, one_file(40.0), load_audio=silence, _has_audio=True)
    assert [s for c in run(t, one_file(40.0), asr) for s in c] == SENTENCES


def test_modes_are_chosen_by_params_and_checked():
    stream = one_file(10.0)
    asr = FakeTimelineAsr([])
    assert isinstance(make_transcriber(asr, stream, AsrParams()), FileTranscriber)
    assert isinstance(make_transcriber(asr, stream, AsrParams(mode="live")), LiveTranscriber)
    assert isinstance(make_transcriber(asr, stream, AsrParams(mode="clip")), ClipTranscriber)
    assert AsrParams(backend="vlm", model="openai:m").resolved_mode == "clip"
    assert AsrParams().to_json()["mode"] == "file"
    with pytest.raises(ConfigError, match="mode"):
        AsrParams(mode="stream")
    with pytest.raises(ConfigError, match="live_window_s"):
        AsrParams(live_step_s=5.0, live_window_s=8.0)
    t = make_transcriber(asr, stream, AsrParams(mode="live", live_step_s=1.0))
    assert t.step_s == 1.0


def test_no_audio_track_is_a_warning_in_every_mode():
    for cls in (FileTranscriber, LiveTranscriber):
        t = cls(FakeTimelineAsr(TIMELINE), one_file(20.0), load_audio=silence, _has_audio=False)
        assert t.transcribe_clip(ClipSpec(0, 0.0, 10.0, 0.0)) == []
        assert t.warnings == ["stream 's' has no audio track"]


def test_live_agreement_is_on_whole_sentences_that_are_over():
    from taskmem_lab.perception.transcribers import agreed_words

    def words(*items):
        return [Word(a, b, f" {t}") for a, b, t in items]

    one = words((0, 0.5, "we"), (0.5, 1.0, "fold."), (2.0, 2.5, "the"), (2.5, 3.0, "maps"))
    # The first sentence agrees and ended >= 1 s before the newest audio; the second is open.
    assert agreed_words(one, one, t=4.0, pause_s=1.0) == 2
    # Ending 0.5 s before the newest audio, it may still be cut off: nothing yet.
    assert agreed_words(one, one, t=1.5, pause_s=1.0) == 0
    # A pass that heard one word differently agrees on nothing of that sentence.
    other = words((0, 0.5, "we"), (0.5, 1.0, "foiled."), (2.0, 2.5, "the"))
    assert agreed_words(other, one, t=4.0, pause_s=1.0) == 0
    # A sentence followed by more speech after a pause is over, even without punctuation.
    unpunctuated = words((0, 0.5, "we"), (0.5, 1.0, "fold"), (2.5, 3.0, "the"))
    assert agreed_words(unpunctuated, unpunctuated, t=4.0, pause_s=1.0) == 2
