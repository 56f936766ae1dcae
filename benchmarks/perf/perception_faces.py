"""Real-time factors of the face side of perception (dlib) on a generated 640x360 video.

Generates a video cut from insightface's six-person group photo (the shots of the face tests,
10 s each, cycled; 30 fps source; cached in --workdir), then streams it clip by clip (10 s
clips, 50 s windows) as the memorizer does and times:

- decode: the 10 fps face frames of each new span through the `StreamFrames` ring buffer (the
  1 fps VLM frames of the window are a subset and come from the buffer);
- detection: shot cuts, dlib HOG on frames downscaled to `detect_max_side` (whole frames every
  `detect_every` frames, regions around known faces between), with landmarks and the quality
  measure (`detect_s` + `describe_s` + `shots_s` of `clip_faces`);
- embedding: dlib's ResNet descriptors of the aligned chips;
- clustering: HDBSCAN, IoU track linking and the identity registry's assignment;
- rendering/encoding: boxes, ids and subtitles drawn on the window's 1 fps frames
  (`render.annotate`) and the window encoded as H.264 (`video.encode_mp4`), once per clip.

Each figure is a real-time factor: seconds of video processed per wall-clock second (higher is
faster; 1.0 is real time); "whole" is the wall time of the stage, model loading excluded. Pin it
to two cores with `taskset -c 0,1` to measure "on 2 cores". Variants: `FaceParams()` (the
defaults, as the CLI: 0.5 embeddings per track second), every face embedded, and others.

    taskset -c 0,1 python benchmarks/perf/perception_faces.py [--minutes 3] [--workdir DIR]
        [--variants default every-face embed2 whole-frames fast]
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from pathlib import Path

VARIANTS = {
    "default": {},
    "every-face": {"embed_fps": 0.0},
    "embed2": {"embed_fps": 2.0},
    "whole-frames": {"detect_every": 1},
    "fast": {"detect_max_side": 320},
}


def make_video(workdir: Path, minutes: float) -> Path:
    from taskmem_lab.testing.media import group_photo, group_photo_shots, shot_video

    path = workdir / f"faces_{minutes:g}min_640x360.mp4"
    if path.exists():
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = group_photo_shots(10.0)
    shots = [kinds[k % len(kinds)] for k in range(int(round(minutes * 6)))]
    t0 = time.perf_counter()
    shot_video(path, group_photo(), shots, size=(640, 360), fps=30)
    print(f"generated {path} in {time.perf_counter() - t0:.1f} s")
    return path


def run(video: Path, overrides: dict) -> dict[str, float]:
    from taskmem_lab.face_ids import IdMap
    from taskmem_lab.media.stream import load_stream, segments
    from taskmem_lab.media.video import StreamFrames, clip_schedule, encode_mp4, sample_times
    from taskmem_lab.perception.faces import FaceParams, clip_faces, make_face_backend
    from taskmem_lab.perception.identities import IdentityRegistry
    from taskmem_lab.perception.records import Segment
    from taskmem_lab.perception.render import annotate

    params = FaceParams(**overrides)
    t0 = time.perf_counter()
    backend = make_face_backend(params)
    import hdbscan  # noqa: F401 - its import (numba, scikit-learn) is load time, not clustering

    load_s = time.perf_counter() - t0
    stream = load_stream(video)
    clips = clip_schedule(segments(stream), 10.0, 50.0)
    frames = StreamFrames(stream, max_side=640)
    registry = IdentityRegistry()
    recent: deque = deque()  # detections of the current window
    totals = {"decode_s": 0.0, "detect_s": 0.0, "embed_s": 0.0, "cluster_s": 0.0, "render_s": 0.0}
    wall = 0.0  # the whole stage: decode + faces + identities + render
    faces_found = 0
    for clip in clips:
        t0 = time.perf_counter()
        new = frames.window(sample_times(clip.start, clip.end, params.face_fps))
        window = frames.window(sample_times(clip.window_start, clip.end, 1.0))
        totals["decode_s"] += time.perf_counter() - t0
        timings: dict[str, float] = {}
        dets = clip_faces(new, params, backend, timings)
        t1 = time.perf_counter()
        registry.assign(dets, new)
        totals["cluster_s"] += time.perf_counter() - t1
        for key in ("detect_s", "embed_s", "cluster_s"):
            totals[key] += timings.get(key, 0.0)
        # face quality (landmarks, chips) and shot cuts belong to detection here
        totals["detect_s"] += timings.get("describe_s", 0.0) + timings.get("shots_s", 0.0)
        faces_found += len(dets)
        recent.extend(dets)
        while recent and recent[0].time < clip.window_start:
            recent.popleft()
        t2 = time.perf_counter()
        order = [d.identity for d in sorted(recent, key=lambda d: d.time) if d.identity]
        ids = IdMap.from_order(order)
        speaker = order[-1] if order else "unknown"
        speech = [Segment(clip.start + 1, clip.start + 4, "A line of speech.", speaker)]
        encode_mp4(annotate(window, list(recent), speech, ids.to_local_ids), fps=1.0)
        t3 = time.perf_counter()
        totals["render_s"] += t3 - t2
        wall += t3 - t0
        frames.evict_before(clip.end - 50.0 + 10.0)
    backend.close()
    duration = clips[-1].end - clips[0].start
    out = {key[:-2]: duration / max(v, 1e-9) for key, v in totals.items()}
    out["whole"] = duration / wall
    out["faces"] = faces_found
    out["characters"] = len(registry)
    out["model_load_s"] = load_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/taskmem-perf"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    import os

    video = make_video(args.workdir, args.minutes)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"video: {video.name}, {args.minutes:g} min; cores available: {cores}")
    parts = ("decode", "detect", "embed", "cluster", "render", "whole")
    print(f"{'variant':<9} {'settings':<40} " + " ".join(f"{p:>8}" for p in parts))
    for name in args.variants:
        r = run(video, VARIANTS[name])
        settings = ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "design defaults"
        print(f"{name:<9} {settings:<40} " + " ".join(f"{r[p]:>7.2f}x" for p in parts))
        print(
            f"{'':<9} faces kept: {r['faces']}, characters: {r['characters']}, "
            f"model load: {r['model_load_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
