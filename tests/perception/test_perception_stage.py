"""The perception stage end to end: real dlib faces, real Whisper tiny.en, espeak speech."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("dlib")
pytest.importorskip("faster_whisper")

from taskmem_lab.errors import VideoError  # noqa: E402
from taskmem_lab.testing.media import (  # noqa: E402
    VOICES,
    group_photo,
    group_photo_shots,
    shot_video,
    speech_video,
)

VOICE_A, VOICE_B = list(VOICES)[:2]
LINES = [
    (1.0, "Hello everyone, welcome to the meeting.", VOICE_A),
    (6.5, "The red ball is under the table.", VOICE_B),
    (11.5, "Thanks, I will check it tomorrow.", VOICE_A),
    (16.0, "See you at noon by the kitchen.", VOICE_B),
]


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    d = tmp_path_factory.mktemp("talk")
    try:
        photo = group_photo()
    except VideoError as exc:  # not installed: the samples extra
        pytest.skip(f"group photo unavailable: {exc}")
    speech_video(d / "speech.mp4", LINES, 20.0)
    return shot_video(d / "talk.mp4", photo, group_photo_shots(5.0), audio_from=d / "speech.mp4")


def taskmem(*args, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "taskmem_lab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


FAST = ["--interval", "5", "--face-fps", "2", "--no-voices", "-q"]


@pytest.mark.slow
def test_perceive_lists_faces_and_speech_and_keeps_ids(talk, tmp_path):
    out = taskmem("perceive", talk.path, "--out", tmp_path, *FAST)
    clips = [line for line in out.splitlines() if line.startswith("[")]
    assert len(clips) == 4
    ids = [set(line.split("faces: ")[1].split(", ")) for line in clips]
    # shots: p1 p2 p3 | p4 p6 | p5 p1 | p3 p4: every shot finds its people...
    assert [len(s) for s in ids] == [len(p) for p in talk.people]
    # ...and p1 and p3 and p4 keep their ids when they come back
    (root,) = (tmp_path / "talk" / "perception").iterdir()
    records = [json.loads(x) for x in (root / "clips.jsonl").read_text().splitlines()]
    by_person = {}
    for k, rec in enumerate(records):
        faces = sorted(
            {(d["identity"], round(d["box"][0], 1)) for d in rec["faces"]}, key=lambda x: x[1]
        )
        seen = list(dict.fromkeys(g for g, _ in faces))
        for person, gid in zip(talk.people[k], seen, strict=True):
            by_person.setdefault(person, set()).add(gid)
    assert all(len(g) == 1 for g in by_person.values()), by_person
    assert len({next(iter(g)) for g in by_person.values()}) == 6  # six people, six ids
    text = " ".join(s["text"].lower() for r in records for s in r["transcript"])
    for word in ("welcome", "table", "tomorrow", "kitchen"):
        assert word in text
    assert "perception:" in out and "6 characters" in out


@pytest.mark.slow
def test_memorize_with_perception_sends_ids_and_subtitles(talk, tmp_path, server, api_config):
    args = [
        "memorize",
        talk.path,
        "--model",
        "openai:local-vlm",
        "--out",
        tmp_path,
        "--faces",
        "--asr",
        *FAST,
    ]
    taskmem(*args, "--tag", "a")
    first = [
        r
        for r in server.requests
        if "NEW SPAN" in json.dumps(r) and "Speech in the window" in json.dumps(r)
    ]
    assert first, "no episodic prompt carried the transcript"
    text = json.dumps(server.requests[-1])
    assert "<face_1>" in text and "[face_" not in text
    (perc,) = (tmp_path / "talk" / "perception").iterdir()
    stamp = (perc / "clips.jsonl").stat().st_mtime_ns
    taskmem(*args, "--tag", "b")  # a second memorizer reuses the stored perception
    assert (perc / "clips.jsonl").stat().st_mtime_ns == stamp
    manifest = json.loads((tmp_path / "talk" / "memory" / "b" / "manifest.json").read_text())
    assert manifest["perception"]["hash"] == perc.name
    ids = json.loads((tmp_path / "talk" / "memory" / "b" / "identities.json").read_text())
    assert len(ids["characters"]) == 6


ALONE_LINES = [
    (1.0, "Hello everyone, welcome to our little meeting today.", VOICE_A),
    (5.0, "The red ball is still under the kitchen table.", VOICE_A),
    (11.0, "Thanks, I will look for it tomorrow morning.", VOICE_B),
    (15.0, "See you at noon by the big kitchen window.", VOICE_B),
]


@pytest.mark.slow
def test_offline_speakers_are_linked_to_the_face_seen_speaking_alone(tmp_path):
    """No speaker model: each voice becomes a [voice_N] speaker and, once it has spoken for
    `VoiceParams.link_min_s` while one face alone was in view, is linked to that face; the records
    say how.

    (Voices are linked at their second line here: each clip holds two lines of one voice.)"""
    import shutil

    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.perception.params import PerceptionChoices, VoiceParams
    from taskmem_lab.perception.perceiver import perception_params
    from taskmem_lab.pipeline import perceive_stream
    from taskmem_lab.testing.media import GROUP_PHOTO_FACES, Shot, head_region

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    try:
        photo = group_photo()
    except VideoError as exc:  # not installed: the samples extra
        pytest.skip(f"group photo unavailable: {exc}")
    speech_video(tmp_path / "speech.mp4", ALONE_LINES, 20.0)
    alone = [
        Shot(10.0, (head_region(GROUP_PHOTO_FACES[p], 16 / 9, (1280, 886)),)) for p in ("p1", "p3")
    ]
    video = shot_video(tmp_path / "alone.mp4", photo, alone, audio_from=tmp_path / "speech.mp4")
    params = perception_params(True, True, PerceptionChoices(face_fps=5.0))
    perceiver, seen = perceive_stream(
        video.path, params, MemorizeParams(), tmp_path / "runs", cache=False, progress=False
    )
    records = [json.loads(x) for x in (perceiver.path / "clips.jsonl").read_text().splitlines()]
    faces = [{d["identity"] for d in r["faces"]} for r in records]
    assert all(len(f) == 1 for f in faces) and faces[0] != faces[1]
    said = [
        (i, s["start"], s["speaker"], how)
        for i, r in enumerate(records)
        for s, how in zip(r["transcript"], r["speakers_how"], strict=True)
        if s["end"] - s["start"] >= 1.5  # shorter pieces are not embedded: "unknown"
    ]
    # Whisper may cut a clip's two lines into one segment or two (it varies with the CPU's int8
    # kernels): what holds is that each clip has speech long enough to embed...
    assert {i for i, *_ in said} == {0, 1}, said
    # ...and each voice spoke 5 s while its face alone was in view (link_min_s are needed): linked, and
    # the clip's segments of that voice carry the face's id.
    for i, _, speaker, how in said:
        assert (speaker, how) == (next(iter(faces[i])), "visible_alone"), said
    links = {k: v for r in records for k, v in r["speaker_links"].items()}
    assert {v["to"] for v in links.values()} == faces[0] | faces[1]
    need = VoiceParams().link_min_s
    assert all(v["how"] == "visible_alone" and v["evidence_s"] >= need for v in links.values())
    registry = json.loads((perceiver.path / "identities" / "identities.json").read_text())
    assert registry["links"] == links
    assert seen and all(p.frames is None for _, p in seen)  # windows are not kept


def test_the_faces_in_view_while_a_line_is_said_tolerate_a_glimpse_across_a_cut():
    import numpy as np

    from taskmem_lab.perception.perceiver import _alone
    from taskmem_lab.perception.records import FaceDetection, Segment

    def seen(t: float, who: str) -> FaceDetection:
        return FaceDetection(t, (0, 0, 0.1, 0.1), 1.0, 1.0, np.zeros(0), identity=who)

    dets = [seen(k / 10, "[face_1]") for k in range(50)]  # 0-5 s, 10 fps
    dets += [seen(k / 10, "[face_2]") for k in range(45, 50)]  # the last 0.5 s after a cut
    dets += [seen(k / 10, "[face_3]") for k in range(60, 100)]
    assert _alone([Segment(0, 5, "a")], dets, 10.0) == [frozenset({"[face_1]"})]
    assert _alone([Segment(3, 5, "b")], dets, 10.0) == [None]  # [face_2] a quarter of it
    assert _alone([Segment(6, 10, "c")], dets, 10.0) == [frozenset({"[face_3]"})]
    assert _alone([Segment(10.5, 12, "d")], dets, 10.0) == [None]  # nobody in view
