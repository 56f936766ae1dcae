"""Generated sample media for notebooks and the smoke profile (nothing is downloaded; the one
photo is package data of a declared dependency, the `samples` extra; see `media.group_photo`).

`sample_talk(dir)` is a short "meeting": four shots of six real faces who leave and come back,
with espeak-ng lines in two voices at known times, plus a task file of questions that arrive
during the stream. Files are made once and reused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmem_lab.testing.media import (
    VOICES,
    group_photo,
    group_photo_shots,
    shot_video,
    speech_video,
    test_video,
)

if TYPE_CHECKING:
    import pandas as pd

    from taskmem_lab.bench.record import QARecord

TALK_LINES = [
    (1.0, "Hello everyone, welcome to the planning meeting.", "male"),
    (7.0, "The red ball is under the kitchen table.", "female"),
    (13.0, "Thanks, I will paint the fence tomorrow morning.", "male"),
    (19.5, "The keys are in the blue bowl by the door.", "female"),
]
TALK_TASKS = [
    {"id": "t1", "question": "Where is the red ball?", "time": 12.0},
    {"id": "t2", "question": "Where are the keys?", "time": 23.5},
]


def sample_talk(directory: str | Path, shot_s: float = 6.0) -> Path:
    """The talk video (4 shots of `shot_s` seconds) under `directory`; its tasks beside it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    video = d / "talk.mp4"
    if not video.exists():
        duration = 4 * shot_s
        lines = [
            (t, text, voice if voice in VOICES else next(iter(VOICES)))
            for t, text, voice in TALK_LINES
        ]
        speech = speech_video(
            d / "talk_speech.mp4", [x for x in lines if x[0] < duration - 3], duration
        )
        shot_video(video, group_photo(), group_photo_shots(shot_s), audio_from=speech.path)
    tasks = d / "talk_tasks.jsonl"
    if not tasks.exists():
        tasks.write_text("".join(json.dumps(t) + "\n" for t in TALK_TASKS), encoding="utf-8")
    return video


def stand_in_memories(
    records: Sequence[QARecord],
    root: str | Path,
    tag: str,
    model: str = "fake",
    seconds: float = 20.0,
) -> list[str]:
    """Memories for benchmark questions whose videos are not here: a generated test video per
    video id, memorized by `model` (the `fake` test double by default). Only for smoke runs and
    tests: such memories say nothing about the real videos, and fake entries are marked as such.
    Returns the video ids it made memories for (existing memories are left alone)."""
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.pipeline import build_memory
    from taskmem_lab.store import memory_dir

    root = Path(root)
    made = []
    for video_id in sorted({r.video_id for r in records}):
        if (memory_dir(root, video_id, tag) / "manifest.json").is_file():
            continue
        media = root / "media" / "stand_in"
        media.mkdir(parents=True, exist_ok=True)
        video = media / f"{video_id}.mp4"
        if not video.exists():
            test_video(video, seconds, size="96x64", fps=5, audio=False)
        build_memory(video, model, MemorizeParams(), tag=tag, out=root, cache=False, progress=False)
        made.append(video_id)
    return made


def talk_questions(video_id: str = "talk") -> list[QARecord]:
    """Multiple-choice questions about `sample_talk`, asked at the end of the stream."""
    from taskmem_lab.bench.record import QARecord

    rows = [
        (
            "ball",
            "Where is the red ball?",
            ("Under the kitchen table", "In the blue bowl", "On the fence", "By the door"),
            "A",
            12.0,
        ),
        (
            "keys",
            "Where are the keys?",
            ("Under the table", "In the blue bowl by the door", "In a coat pocket", "On the fence"),
            "B",
            23.5,
        ),
        (
            "plan",
            "What will the man do tomorrow morning?",
            ("Buy a ball", "Paint the fence", "Clean the kitchen", "Go to a meeting"),
            "B",
            18.0,
        ),
        (
            "people",
            "How many people are in the first shot?",
            ("One", "Two", "Three", "Six"),
            "C",
            6.0,
        ),
    ]
    return [
        QARecord(
            id=f"{video_id}_{key}",
            benchmark="sample_talk",
            video_id=video_id,
            question=question,
            options=options,
            answer=answer,
            answer_kind="choice",
            task_type="speech" if key != "people" else "faces",
            query_time=24.0,
            evidence=((max(0.0, t - 6.0), t),),
        )
        for key, question, options, answer, t in rows
    ]


def transcript_table(seen: Sequence[tuple[Any, Any]]) -> pd.DataFrame:
    """One row per utterance (clip, start, end, speaker, text) from `perceive_stream`'s result."""
    import pandas as pd

    rows = [{"clip": clip.index, **seg} for clip, p in seen for seg in p.transcript]
    return pd.DataFrame(rows, columns=["clip", "start", "end", "speaker", "text"])


def face_sightings(perception: str | Path) -> pd.DataFrame:
    """(identity, time) per face seen on a sampled frame, from a stored perception folder,
    ordered by character number."""
    import pandas as pd

    from taskmem_lab.store import read_jsonl

    rows = [
        {"identity": d["identity"], "time": float(d["time"])}
        for r in read_jsonl(Path(perception) / "clips.jsonl")
        for d in r["faces"]
        if d.get("identity")
    ]
    table = pd.DataFrame(rows, columns=["identity", "time"])
    number = table.identity.str.extract(r"(\d+)", expand=False).astype(float)
    return table.assign(_n=number).sort_values(["_n", "time"]).drop(columns="_n")


def on_screen_table(seen: Sequence[tuple[Any, Any]]) -> pd.DataFrame:
    """One row per clip: its span and the characters on screen."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "clip": c.index,
                "start": c.start,
                "end": c.end,
                "on screen": ", ".join(p.identities) or "-",
            }
            for c, p in seen
        ]
    )
