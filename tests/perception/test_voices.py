"""Voices: resemblyzer embeddings of espeak-ng speech, the audio-embedding plug-in, speaker-to-face
matching through the local OpenAI-compatible server, and speaker assignment with the registry."""

from __future__ import annotations

import base64
import io
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from taskmem_lab.backends import make_model
from taskmem_lab.errors import ConfigError, ParseError, PluginError
from taskmem_lab.face_ids import IdMap
from taskmem_lab.media.audio import SAMPLE_RATE, window_audio
from taskmem_lab.media.stream import load_stream
from taskmem_lab.media.video import Frame
from taskmem_lab.perception.identities import IdentityRegistry
from taskmem_lab.perception.records import FaceDetection, Segment
from taskmem_lab.perception.voices import (
    PLUGIN_ENV,
    SPEAKER_PROMPTS,
    PluginEmbedder,
    VoiceParams,
    assign_speakers,
    cluster_voices,
    cosine,
    embed_segments,
    identify_speakers,
    make_voice_embedder,
    match_speakers,
    parse_speakers_reply,
)
from taskmem_lab.prompts import load_prompt
from taskmem_lab.testing.media import speech_video

LINES = [
    (0.5, "Please remember to bring the blue notebook to the meeting tomorrow.", "male"),
    (5.5, "I think the weather will be sunny for the rest of the week.", "female"),
    (10.5, "We should meet again at the old train station in the morning.", "male"),
    (15.5, "The kitchen window was left open during the storm last night.", "female"),
    (20.5, "Five quiet wizards jumped over the yellow fence.", "third"),
]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("espeak-ng and ffmpeg are needed to generate speech")
    return speech_video(tmp_path_factory.mktemp("voices") / "talk.mp4", LINES, 25.0)


@pytest.fixture(scope="module")
def spoken(speech) -> tuple[list[Segment], np.ndarray]:
    """The lines as transcript segments, and the whole stream's audio (from t0 = 0)."""
    segments = [
        Segment(round(line.start, 1), round(line.end, 1), line.text) for line in speech.lines
    ]
    return segments, window_audio(load_stream(speech.path), 0.0, speech.duration)


@pytest.fixture(scope="module")
def embeddings(spoken) -> list[np.ndarray | None]:
    pytest.importorskip("resemblyzer")
    segments, audio = spoken
    return embed_segments(segments, audio, 0.0, make_voice_embedder(plugin=""))


# --------------------------------------------------------------------------- resemblyzer


@pytest.mark.slow
def test_two_espeak_voices_differ_and_the_same_voice_is_recognized(embeddings):
    male1, female1, male2, female2, other = embeddings
    assert all(e is not None and e.shape == (256,) for e in embeddings)
    assert np.linalg.norm(male1) == pytest.approx(1.0, abs=1e-4)
    assert cosine(male1, male2) >= 0.75 and cosine(female1, female2) >= 0.75
    assert cosine(male1, female1) < 0.7 and cosine(male2, female2) < 0.7
    registry = IdentityRegistry()
    him = registry.new_voice_character(male1)
    her = registry.new_voice_character(female1)
    assert (registry.match_voice(male2), registry.match_voice(female2)) == (him, her)


def test_segments_shorter_than_the_minimum_are_not_embedded():
    class CountingEmbedder:
        name = "counting"

        def __init__(self) -> None:
            self.lengths: list[float] = []

        def embed(self, clips, sr):
            self.lengths += [len(c) / sr for c in clips]
            return [np.ones(4, np.float32) for _ in clips]

    audio = np.zeros(10 * SAMPLE_RATE, np.float32)
    segments = [
        Segment(100.0, 101.4, "short"),
        Segment(102.0, 104.0, "long"),
        Segment(109.0, 112.0, "cut"),
    ]
    embedder = CountingEmbedder()
    got = embed_segments(segments, audio, 100.0, embedder)
    assert got[0] is None and got[1] is not None and got[2] is None  # "cut": 1 s inside audio
    assert embedder.lengths == [pytest.approx(2.0)]
    assert embed_segments([segments[0]], audio, 100.0, embedder) == [None]
    assert embedder.lengths == [pytest.approx(2.0)]  # no call with nothing to embed


# --------------------------------------------------------------------------- plug-in

PLUGIN = '''
"""A user voice embedder: normalized energy in 16 frequency bands of the clip."""
import base64, io, wave
import numpy as np

CALLS = []

def get_audio_embeddings(wav_b64_list):
    out = []
    for item in wav_b64_list:
        with wave.open(io.BytesIO(base64.b64decode(item)), "rb") as w:
            CALLS.append((w.getframerate(), w.getnchannels(), w.getnframes()))
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
        spectrum = np.abs(np.fft.rfft(pcm)) ** 2
        bands = np.array([b.sum() for b in np.array_split(spectrum, 16)]) + 1e-9
        out.append((bands / bands.sum()).tolist())
    return out
'''


def write_plugin(tmp_path: Path, body: str, name: str = "my_voices.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_the_plugin_named_by_the_environment_replaces_resemblyzer(tmp_path, monkeypatch, spoken):
    segments, audio = spoken
    path = write_plugin(tmp_path, PLUGIN)
    monkeypatch.setenv(PLUGIN_ENV, str(path))
    embedder = make_voice_embedder()
    assert isinstance(embedder, PluginEmbedder) and embedder.name == f"plugin:{path}"
    got = embed_segments(segments[:2], audio, 0.0, embedder)
    assert [e.shape for e in got] == [(16,), (16,)]
    assert [np.linalg.norm(e) for e in got] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_the_plugin_by_module_name_gets_16k_mono_wavs(tmp_path, monkeypatch, spoken):
    segments, audio = spoken
    write_plugin(tmp_path, PLUGIN, "taskmem_test_voice_plugin.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    embedder = make_voice_embedder(plugin="taskmem_test_voice_plugin")
    embedder.embed([audio[: SAMPLE_RATE * 2]], SAMPLE_RATE)
    import taskmem_test_voice_plugin  # the module the embedder imported

    assert taskmem_test_voice_plugin.CALLS == [(16000, 1, 32000)]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "def get_audio_embeddings(wavs):\n    raise RuntimeError('GPU on fire')\n",
            "failed: RuntimeError: GPU on fire",
        ),
        (
            "def get_audio_embeddings(wavs):\n    return []\n",
            "expected a list of 2 embeddings, got 0 items",
        ),
        ("def get_audio_embeddings(wavs):\n    return {'a': 1}\n", "got dict"),
        (
            "def get_audio_embeddings(wavs):\n    return [[1.0, 2.0], [1.0]]\n",
            "has 1 values, earlier ones 2",
        ),
        (
            "def get_audio_embeddings(wavs):\n    return [[1.0, float('nan')], [1.0, 0.0]]\n",
            "not finite",
        ),
        (
            "def get_audio_embeddings(wavs):\n    return [['a', 'b'], [1.0, 0.0]]\n",
            "not a list of numbers",
        ),
        ("def get_audio_embeddings(wavs):\n    return [[0.0, 0.0], [1.0, 0.0]]\n", "all zero"),
    ],
)
def test_a_failing_plugin_is_an_error_not_silently_no_voices(tmp_path, body, problem):
    embedder = PluginEmbedder(str(write_plugin(tmp_path, body)))
    with pytest.raises(PluginError, match=problem):
        embedder.embed([np.zeros(SAMPLE_RATE * 2, np.float32)] * 2, SAMPLE_RATE)


def test_a_plugin_may_decline_one_clip(tmp_path):
    body = "def get_audio_embeddings(wavs):\n    return [None, [3.0, 4.0]]\n"
    got = PluginEmbedder(str(write_plugin(tmp_path, body))).embed([np.zeros(10)] * 2, SAMPLE_RATE)
    assert got[0] is None and got[1] == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize(
    ("spec", "body", "problem"),
    [
        ("missing.py", None, "no such file"),
        ("taskmem_no_such_module_xyz", None, "could not be imported: ModuleNotFoundError"),
        ("broken.py", "import nothing_here_xyz\n", "could not be imported: ModuleNotFoundError"),
        ("nofunc.py", "def embed(x):\n    return x\n", "has no function get_audio_embeddings"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_is_an_error(tmp_path, spec, body, problem):
    if body is not None:
        write_plugin(tmp_path, body, spec)
    target = str(tmp_path / spec) if spec.endswith(".py") else spec
    with pytest.raises(PluginError, match=problem):
        make_voice_embedder(plugin=target)


def test_params_and_unknown_backend():
    with pytest.raises(ConfigError, match="'backend'"):
        VoiceParams(backend="speechbrain")
    with pytest.raises(ConfigError, match="'min_segment_s'"):
        VoiceParams(min_segment_s=0.1)
    with pytest.raises(ConfigError, match="unknown voice backend"):
        make_voice_embedder("speechbrain", plugin="")
    assert VoiceParams().to_json()["min_segment_s"] == 1.5


# --------------------------------------------------------------------------- speaker <-> face

VISIBLE = ["<face_1>", "<face_2>"]


@pytest.mark.parametrize(
    ("reply", "labels", "invalid"),
    [
        (
            '{"speakers": {"1": "<face_2>", "2": "unknown", "3": "<face_1>"}}',
            ["<face_2>", "unknown", "<face_1>"],
            [],
        ),
        (
            '{"speakers": {"1": "face_2", "2": "[face_1]", "3": "Face 2"}}',
            ["<face_2>", "<face_1>", "<face_2>"],
            [],
        ),
        (
            '{"speakers": {"line 1": "<face_1>", "segment 3": "<face_2>"}}',
            ["<face_1>", "unknown", "<face_2>"],
            [],
        ),
        ('{"speakers": ["<face_1>", "none", null]}', ["<face_1>", "unknown", "unknown"], []),
        (
            '{"speakers": [{"segment": 2, "speaker": "<face_1>"}, {"line": "3", "face": "<face_2>"}]}',
            ["unknown", "<face_1>", "<face_2>"],
            [],
        ),
        (
            '{"speakers": {"1": "<face_7>", "2": "<face_1>", "9": "<face_2>"}}',
            ["unknown", "<face_1>", "unknown"],
            ["<face_7>"],
        ),
        ('```json\n{"speakers": {"1": "<face_1>",}}\n```', ["<face_1>", "unknown", "unknown"], []),
        ('{"speakers": {}}', ["unknown", "unknown", "unknown"], []),
    ],
)
def test_parse_speakers_reply(reply, labels, invalid):
    got = parse_speakers_reply(reply, 3, VISIBLE)
    assert list(got.labels) == labels and list(got.invalid) == invalid


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("", "empty"),
        ("It is the man.", "no JSON object"),
        ('{"who": 1}', "no field 'speakers'"),
        ('{"speakers": "face_1"}', "neither"),
    ],
)
def test_parse_speakers_reply_rejects(reply, problem):
    with pytest.raises(ParseError, match=problem):
        parse_speakers_reply(reply, 2, VISIBLE)


def frames(n: int = 3) -> list[Frame]:
    return [Frame(10.0 + i, np.full((24, 32, 3), 60 * i, np.uint8)) for i in range(n)]


def test_speaker_prompts_exist_and_mark_the_reply_shape():
    assert all(load_prompt(name) for name in SPEAKER_PROMPTS)
    assert '{"speakers"' in load_prompt("speakers_system")


def test_match_speakers_against_the_local_server(api_config, server):
    segments = [
        Segment(10.0, 11.5, "Hello."),
        Segment(11.6, 12.4, "Hi."),
        Segment(12.5, 13.0, "Bye."),
    ]
    got = match_speakers(make_model("openai:local-vlm"), segments, frames(), VISIBLE, fps=1.0)
    assert got.labels == ("<face_1>", "<face_2>", "<face_1>") and got.invalid == ()
    body = server.requests[0]
    assert '{"speakers"' in body["messages"][0]["content"]
    content = body["messages"][1]["content"]
    assert sum(p["type"] == "image_url" for p in content) == 3
    text = "\n".join(p["text"] for p in content if p["type"] == "text")
    assert "People visible in this window: <face_1>, <face_2>" in text
    assert "1. [00:00:10-00:00:11.5] Hello.\n2. [00:00:11.6-00:00:12.4] Hi." in text


def test_match_speakers_reasks_and_skips_calls_it_does_not_need(api_config, server):
    model = make_model("openai:local-vlm")
    segments = [Segment(1.0, 2.0, "Hello.")]
    assert match_speakers(model, [], frames(), VISIBLE, 1.0).labels == ()
    assert match_speakers(model, segments, frames(), [], 1.0).labels == ("unknown",)
    assert not server.requests
    server.script("malformed")
    assert match_speakers(model, segments, frames(), VISIBLE, 1.0).labels == ("<face_1>",)
    assert len(server.requests) == 2


# --------------------------------------------------------------------------- assignment


def two_faces(registry: IdentityRegistry) -> IdMap:
    """Two face characters in the registry ([face_1], [face_2]), seen in one frame."""
    rng = np.random.default_rng(0)
    dets = [
        FaceDetection(0.0, (0.1, 0.1, 0.3, 0.3), 0.99, 1.0, rng.normal(size=128), cluster=0),
        FaceDetection(0.0, (0.6, 0.1, 0.8, 0.3), 0.99, 1.0, rng.normal(size=128), cluster=1),
    ]
    return IdMap.from_order(registry.assign(dets))


@pytest.mark.slow
def test_a_face_match_banks_the_voice_and_an_off_screen_speaker_is_known_by_it(spoken, embeddings):
    segments, _ = spoken
    male1, female1, male2, female2, other = embeddings
    registry = IdentityRegistry()
    ids = two_faces(registry)
    assert ids.to_local_ids == {"[face_1]": "<face_1>", "[face_2]": "<face_2>"}
    clip1 = [Segment(s.start, s.end, s.text) for s in segments[:2]]
    how = assign_speakers(clip1, ["<face_1>", "<face_2>"], [male1, female1], registry, ids)
    assert [s.speaker for s in clip1] == ["[face_1]", "[face_2]"] and how == ["face", "face"]
    assert registry.characters["[face_1]"].voices.shape == (1, 256)
    # Later nobody is on screen: the two voices are recognized, a third voice is not.
    clip2 = [Segment(s.start, s.end, s.text) for s in segments[2:]]
    how = assign_speakers(clip2, ["unknown"] * 3, [male2, female2, other], registry, IdMap())
    assert [s.speaker for s in clip2] == ["[face_1]", "[face_2]", "unknown"]
    assert how == ["voice", "voice", "unknown"]
    # Voice re-identification does not bank (only a face match does).
    assert registry.characters["[face_1]"].voices.shape == (1, 256)
    how = assign_speakers(clip2[2:], ["unknown"], [other], registry, IdMap(), new_voices=True)
    assert clip2[2].speaker == "[voice_1]" and how == ["new_voice"]  # not a face's namespace
    assert registry.match_voice(other) == "[voice_1]"


@pytest.mark.slow
def test_offline_diarization_keeps_voices_apart_and_stable_across_clips(spoken, embeddings):
    segments, _ = spoken
    male1, female1, male2, female2, other = embeddings
    registry = IdentityRegistry()

    def clip(idx, embs):
        segs = [Segment(segments[i].start, segments[i].end, segments[i].text) for i in idx]
        how = assign_speakers(segs, ["unknown"] * len(segs), embs, registry, IdMap(), True)
        return [s.speaker for s in segs], how

    assert clip([0, 1], [male1, female1]) == (
        ["[voice_1]", "[voice_2]"],
        ["new_voice", "new_voice"],
    )
    assert clip([2, 3], [male2, female2]) == (["[voice_1]", "[voice_2]"], ["voice", "voice"])
    assert clip([4], [other])[0] == ["[voice_3]"]
    # Within one clip the new voices are clustered: one speaker, one label.
    fresh = IdentityRegistry()
    segs = [Segment(segments[i].start, segments[i].end, "x") for i in (0, 2, 1)]
    assign_speakers(segs, ["unknown"] * 3, [male1, male2, female1], fresh, IdMap(), True)
    assert [s.speaker for s in segs] == ["[voice_1]", "[voice_1]", "[voice_2]"]
    assert fresh.characters["[voice_1]"].voices.shape == (2, 256)


def test_cluster_voices_cuts_at_the_similarity():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    near = np.array([0.95, 0.31]) / np.linalg.norm([0.95, 0.31])
    assert cluster_voices([a, b, near], 0.7) == [0, 1, 0]
    assert cluster_voices([a, b, near], 0.99) == [0, 1, 2]
    assert cluster_voices([a], 0.7) == [0] and cluster_voices([], 0.7) == []


def test_a_voice_seen_speaking_alone_with_one_face_is_linked_to_it(spoken, embeddings):
    segments, _ = spoken
    male1, female1, male2, female2, _ = embeddings
    registry = IdentityRegistry()
    ids = two_faces(registry)
    params = VoiceParams(link_min_s=3.0)
    first = [Segment(segments[0].start, segments[0].start + 2.0, "a")]
    how = assign_speakers(first, ["unknown"], [male1], registry, ids, True, ["[face_1]"], params)
    assert first[0].speaker == "[voice_1]" and how == ["new_voice"]  # 2 s: not enough yet
    # Two faces in view while the woman speaks: no evidence for anybody.
    second = [
        Segment(segments[2].start, segments[2].start + 2.0, "b"),
        Segment(segments[3].start, segments[3].end, "c"),
    ]
    how = assign_speakers(
        second, ["unknown"] * 2, [male2, female2], registry, ids, True, ["[face_1]", None], params
    )
    assert [s.speaker for s in second] == ["[face_1]", "[voice_2]"]
    assert how == ["visible_alone", "new_voice"]
    assert registry.links["[voice_1]"]["how"] == "visible_alone"
    assert registry.match_voice(male1) == "[face_1]"  # the voice is the face's from now on
    off = VoiceParams(link_faces=False)
    third = [Segment(0, 4, "d")]
    assign_speakers(third, ["unknown"], [female1], registry, ids, True, ["[face_2]"], off)
    assert third[0].speaker == "[voice_2]" and "[voice_2]" not in registry.links


def test_face_match_wins_and_labels_spread_within_a_clip():
    registry = IdentityRegistry()
    ids = two_faces(registry)
    registry.add_voice("[face_2]", np.array([1.0, 0.0]))
    segs = [
        Segment(0, 2, "a", "vlm:S1"),
        Segment(2, 4, "b", "vlm:S1"),  # no face seen: same voice label as "a"
        Segment(4, 6, "c", "vlm:S2"),
        Segment(6, 8, "d", "unknown"),
    ]
    faces = ["<face_1>", "unknown", "<face_9>", "unknown"]
    # "a" is banked with [face_1]; "c" and "d" sound like [face_2]
    voice = [np.array([0.0, 1.0]), None, np.array([1.0, 0.0]), np.array([1.0, 0.1])]
    how = assign_speakers(segs, faces, voice, registry, ids)
    assert [s.speaker for s in segs] == ["[face_1]", "[face_1]", "[face_2]", "[face_2]"]
    assert how == ["face", "label", "voice", "voice"]
    with pytest.raises(ValueError, match="one of each per segment"):
        assign_speakers(segs, faces[:2], voice, registry, ids)


def test_without_registry_or_embeddings_speakers_are_faces_or_unknown():
    ids = IdMap.from_order(["[face_4]"])
    segs = [Segment(0, 2, "a"), Segment(2.5, 4, "b")]
    assert assign_speakers(segs, ["<face_1>", "unknown"], [None, None], None, ids) == [
        "face",
        "unknown",
    ]
    assert [s.speaker for s in segs] == ["[face_4]", "unknown"]


def test_a_piece_too_short_to_embed_continues_the_segment_it_follows():
    ids = IdMap.from_order(["[face_4]"])
    segs = [
        Segment(0, 3, "the baker found"),
        Segment(3.1, 3.9, "seven apples."),  # 0.1 s after: the same sentence, cut by Whisper
        Segment(5.0, 5.8, "Yes."),  # after a pause: somebody, we cannot tell
    ]
    voice = [np.array([1.0, 0.0]), None, None]
    how = assign_speakers(segs, ["<face_1>", "unknown", "unknown"], voice, None, ids)
    assert how == ["face", "continues", "unknown"]
    assert [s.speaker for s in segs] == ["[face_4]", "[face_4]", "unknown"]
    off = [Segment(0, 3, "a"), Segment(3.1, 3.9, "b")]
    params = VoiceParams(continue_gap_s=0)
    how = assign_speakers(off, ["<face_1>", "unknown"], [None, None], None, ids, params=params)
    assert how == ["face", "unknown"]


@pytest.mark.slow
def test_identify_speakers_end_to_end(spoken, api_config, server):
    pytest.importorskip("resemblyzer")
    segments, audio = spoken
    registry = IdentityRegistry()
    ids = two_faces(registry)
    clip = [Segment(s.start, s.end, s.text) for s in segments[:3]]
    embedder = make_voice_embedder(plugin="")
    model = make_model("openai:local-vlm")
    how = identify_speakers(clip, audio, 0.0, frames(), 1.0, ids, registry, model, embedder)
    # the test server says line n is the n-th visible face, round robin: male, female, male
    assert [s.speaker for s in clip] == ["[face_1]", "[face_2]", "[face_1]"]
    assert how == ["face", "face", "face"]
    assert registry.characters["[face_1]"].voices.shape == (2, 256)
    # a later clip with no faces on screen: voices only, no model call
    calls = len(server.requests)
    later = [Segment(s.start, s.end, s.text) for s in segments[3:4]]
    params = VoiceParams(match_faces=True)
    identify_speakers(later, audio, 0.0, [], 1.0, IdMap(), registry, model, embedder, params)
    assert later[0].speaker == "[face_2]" and len(server.requests) == calls


def test_wav_payload_matches_the_segment(tmp_path, spoken):
    """What a plug-in receives is the segment's audio, as a WAV it can read with the stdlib."""
    segments, audio = spoken
    seen: list[bytes] = []

    def capture(items: list[str]) -> list[list[float]]:
        seen.extend(base64.b64decode(i) for i in items)
        return [[1.0, 0.0] for _ in items]

    embedder = PluginEmbedder.__new__(PluginEmbedder)
    embedder.name, embedder.spec, embedder._fn = "plugin:capture", "capture", capture
    embed_segments(segments[:1], audio, 0.0, embedder)
    with wave.open(io.BytesIO(seen[0]), "rb") as w:
        duration = w.getnframes() / w.getframerate()
    assert duration == pytest.approx(segments[0].end - segments[0].start, abs=1e-3)


# --------------------------------------------------------------------------- offline diarization

TWO_VOICES = [
    (0.5, "Please remember to bring the blue notebook to the meeting.", "male"),
    (4.8, "I think the weather will be sunny for the rest of the week.", "female"),
    (9.2, "We should meet again at the old train station tomorrow.", "male"),
    (14.0, "The kitchen window was left open during the storm.", "female"),
    (18.6, "Could you call the plumber about the leaking pipe?", "female"),
    (23.4, "The library closes early on Sunday afternoons.", "male"),
]


@pytest.mark.slow
def test_whisper_and_voices_diarize_two_speakers_across_clips(tmp_path):
    """No speaker model: transcript lines carry stable, distinct voice labels over three clips."""
    pytest.importorskip("resemblyzer")
    pytest.importorskip("faster_whisper")
    if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
        pytest.skip("espeak-ng and ffmpeg are needed to generate speech")
    from taskmem_lab.errors import ConfigError
    from taskmem_lab.media.stream import segments as stream_segments
    from taskmem_lab.media.video import clip_schedule
    from taskmem_lab.perception.asr import AsrParams, ClipTranscriber, WhisperAsr, bundled_tiny_en

    try:
        model = str(bundled_tiny_en())
    except ConfigError as exc:
        pytest.skip(str(exc))
    video = speech_video(tmp_path / "two.mp4", TWO_VOICES, 30.0)
    stream = load_stream(video.path)
    asr = WhisperAsr(AsrParams(model=model, language="en", beam_size=1))
    transcriber = ClipTranscriber.from_params(asr, stream, asr.params)
    registry = IdentityRegistry()
    embedder = make_voice_embedder(plugin="")
    params = VoiceParams(new_voices=True, match_faces=False)
    labels: dict[str, set[str]] = {}
    heard = 0
    for clip in clip_schedule(stream_segments(stream), 10.0, 50.0):
        segs = transcriber.transcribe_clip(clip)
        assert transcriber.audio is not None
        t0, audio = transcriber.audio
        identify_speakers(segs, audio, t0, [], 1.0, IdMap(), registry, None, embedder, params)
        for seg in segs:
            line = min(video.lines, key=lambda ln: abs(ln.start - seg.start))
            labels.setdefault(line.voice, set()).add(seg.speaker)
            heard += 1
    assert heard >= len(TWO_VOICES)
    assert labels["male"] != labels["female"]
    assert all(len(v) == 1 for v in labels.values()), labels  # stable across clips
    assert {next(iter(v)) for v in labels.values()} == {"[voice_1]", "[voice_2]"}


def test_with_two_faces_in_view_the_voice_goes_to_the_one_without_a_voice():
    registry = IdentityRegistry()
    ids = two_faces(registry)
    both = frozenset({"[face_1]", "[face_2]"})
    params = VoiceParams(link_min_s=2.0)
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    # Nobody in view has a voice yet: two candidates, no evidence.
    segs = [Segment(0, 3, "x")]
    assign_speakers(segs, ["unknown"], [a], registry, ids, True, [both], params)
    assert segs[0].speaker == "[voice_1]" and not registry.evidence
    # [face_1] speaks with its own voice (a face match banks it): [voice_1], heard again
    # with both in view, must be [face_2]'s.
    assign_speakers([Segment(4, 6, "y")], ["<face_1>"], [b], registry, ids, True, None, params)
    segs = [Segment(7, 10, "z")]
    how = assign_speakers(segs, ["unknown"], [a], registry, ids, True, [both], params)
    assert (segs[0].speaker, how) == ("[face_2]", ["visible_alone"])
    assert registry.links["[voice_1]"]["to"] == "[face_2]"
