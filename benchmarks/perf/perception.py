"""Real-time factor of the whole perception stage (video seconds per wall second), and of its parts.

Builds a 3-minute 640x360 "meeting" (the group photo's six faces in shots that repeat, espeak-ng
lines in two voices), then runs `pipeline.perceive_stream` with dlib faces at 10 fps and Whisper
tiny.en (int8, CPU), voices on, no speaker model. Prints the wall-clock real-time factor of the
stage and the per-part totals recorded in the stored clips (face decode, detection, embedding,
clustering, identities, ASR, speakers) plus rendering/encoding of the annotated windows.
Target (issue 3): the whole stage at least 2x real time on 2 cores.

    python benchmarks/perf/perception.py [--minutes 3] [--face-fps 10] [--embed-fps 0] [--detect-max-side 480]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path


def make_video(work: Path, minutes: float) -> Path:
    from taskmem_lab.testing.media import (
        VOICES,
        group_photo,
        group_photo_shots,
        shot_video,
        speech_video,
    )

    video = work / f"meeting_{minutes:g}min.mp4"
    if video.exists():
        return video
    duration = minutes * 60
    voices = list(VOICES)[:2]
    lines, t, k = [], 1.0, 0
    sentences = [
        "The red ball is under the kitchen table.",
        "Thanks, I will paint the fence tomorrow morning.",
        "The keys are in the blue bowl by the door.",
        "Let us meet again at noon next to the window.",
    ]
    while t < duration - 4:
        lines.append((t, sentences[k % len(sentences)], voices[k % 2]))
        t += 5.5
        k += 1
    speech = speech_video(work / "meeting_speech.mp4", lines, duration)
    shots = group_photo_shots(6.0) * int(duration // 24 + 1)
    total, kept = 0.0, []
    for shot in shots:
        if total >= duration:
            break
        kept.append(shot)
        total += shot.duration
    shot_video(video, group_photo(), kept, audio_from=speech.path)
    return video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    from taskmem_lab.perception.params import PerceptionChoices

    parser.add_argument("--face-fps", type=float, default=PerceptionChoices.face_fps)
    parser.add_argument("--embed-fps", type=float, default=0.0, help="0: embed every sampled frame")
    parser.add_argument(
        "--detect-max-side", type=int, default=PerceptionChoices.detect_max_side, help="detection"
    )
    parser.add_argument("--workdir", default="/tmp/taskmem-perf-perception")
    args = parser.parse_args()

    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.perception.perceiver import perception_params
    from taskmem_lab.pipeline import perceive_stream
    from taskmem_lab.store import read_jsonl

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    video = make_video(work, args.minutes)
    choices = PerceptionChoices(
        face_fps=args.face_fps, embed_fps=args.embed_fps, detect_max_side=args.detect_max_side
    )
    perception = perception_params(True, True, choices)
    assert perception is not None and perception.faces is not None
    runs = work / f"runs-{int(time.time())}"
    t0 = time.perf_counter()
    perceiver, seen = perceive_stream(
        video, perception, MemorizeParams(), runs, cache=False, progress=False
    )
    wall = time.perf_counter() - t0
    parts: dict[str, float] = defaultdict(float)
    for rec in read_jsonl(perceiver.path / "clips.jsonl"):
        for k, v in rec["timings"].items():
            parts[k] += v
    duration = args.minutes * 60
    # Rendering/encoding: annotate the windows again (as the memorizer does) and encode them.
    from taskmem_lab.media.video import encode_mp4

    t1 = time.perf_counter()
    for _, p in seen:
        if p.frames:
            encode_mp4(p.frames, 1.0)
    encode = time.perf_counter() - t1
    print(
        f"video {duration:.0f} s, {len(seen)} clips, faces at {args.face_fps:g} fps, embed_fps {args.embed_fps or 'all'}, "
        f"detect_max_side {args.detect_max_side}"
    )
    for name, total in sorted(parts.items()):
        print(
            f"  {name:<16} {total:7.1f} s  {duration / total if total else float('inf'):7.1f}x real time"
        )
    print(f"  {'encode_windows':<16} {encode:7.1f} s  {duration / encode:7.1f}x real time")
    print(
        f"whole stage (wall, rendering included): {wall:.1f} s = {duration / wall:.2f}x real time (target >= 2x)"
    )


if __name__ == "__main__":
    main()
