"""The perception stage end to end: real dlib faces, real Whisper tiny.en, espeak speech."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("dlib")
pytest.importorskip("faster_whisper")

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
    except Exception as exc:  # noqa: BLE001 - any failure to fetch the photo means skip
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
