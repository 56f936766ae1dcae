"""Speed and peak memory of the frame readers on the two access patterns of a stream.

Builds a 640x360 video of the group photo's shots (60 s by default) and, for each reader
(`media.video.open_reader` backends), decodes it in a fresh process as the stages do:

- perception: the 10 fps face frames of each 10 s clip, in order, through `StreamFrames`;
- memorizer: the 1 fps frames of each 50 s window (10 s clips), through `StreamFrames`, whose
  ring buffer asks only for the frames it does not hold.

Prints video seconds decoded per wall second (higher is faster) and the peak resident memory of
the process (the interpreter and numpy included).

    python benchmarks/perf/frame_readers.py [--minutes 1] [--readers pyav decord]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_video(work: Path, minutes: float) -> Path:
    from taskmem_lab.testing.media import group_photo, group_photo_shots, shot_video

    video = work / f"shots_{minutes:g}min.mp4"
    if video.exists():
        return video
    shots, total = [], 0.0
    for shot in group_photo_shots(6.0) * int(minutes * 60 // 24 + 1):
        if total >= minutes * 60:
            break
        shots.append(shot)
        total += shot.duration
    shot_video(video, group_photo(), shots)
    return video


def measure(video: str, reader: str, pattern: str) -> dict[str, float]:
    """One reader on one pattern, in this process (run it in a fresh one)."""
    from taskmem_lab.media.stream import load_stream, segments
    from taskmem_lab.media.video import StreamFrames, clip_schedule, sample_times

    stream = load_stream(video)
    clips = clip_schedule(segments(stream), 10.0, 50.0)
    frames = StreamFrames(stream, max_side=640, backend=reader)
    t0 = time.perf_counter()
    for clip in clips:
        if pattern == "perception":
            frames.evict_before(clip.start)
            frames.window(sample_times(clip.start, clip.end, 10.0))
        else:
            frames.evict_before(clip.window_start)
            frames.window(sample_times(clip.window_start, clip.end, 1.0))
    wall = time.perf_counter() - t0
    frames.close()
    duration = clips[-1].end - clips[0].start
    return {
        "x_real_time": duration / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "frames": frames.decoded,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--readers", nargs="+", default=["pyav", "decord"])
    ap.add_argument("--workdir", default="/tmp/taskmem-perf-readers")
    ap.add_argument(
        "--one", nargs=3, metavar=("VIDEO", "READER", "PATTERN"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    video = make_video(work, args.minutes)
    print(f"{video.name}: 640x360, {args.minutes:g} min")
    print("| reader | pattern | x real time | peak RSS MB | frames |")
    print("| --- | --- | --- | --- | --- |")
    for pattern in ("perception", "memorizer"):
        for reader in args.readers:
            cmd = [sys.executable, __file__, "--one", str(video), reader, pattern]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {reader} | {pattern} | {r['x_real_time']:.1f}x | {r['peak_rss_mb']:.0f} "
                f"| {r['frames']} |"
            )


if __name__ == "__main__":
    main()
