"""Decode CPU per clip on YouTube-style encodes: the forward reader skipping non-reference
frames between the sampled times, against decoding every frame of the same seconds.

Encodes (once, in --workdir) --seconds of moving test pattern with grain at 720p30 and 1080p30
with x264 `medium`, 3 B-frames and a GOP of 250 at YouTube-like bitrates (4 and 8 Mb/s), then,
in a fresh process for each video and reader, runs the memorizer's frame preparation
(`memorize.prepare_clip` with the default 1 fps, 32 frames, 640 px: decode, keep what later
windows show, JPEG-encode the window) over every 10 s clip, and prints the process CPU time per
clip (user + system, every decoder thread included), the wall time, and the frames decoded.

Target (issue 24): report per-clip CPU against a full decode of the same seconds.

    python benchmarks/perf/decode_skip.py [--seconds 60] [--sizes 1280x720 1920x1080]
        [--repeat 3] [--workdir /tmp/taskmem-decode]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BITRATES = {"1280x720": "4M", "1920x1080": "8M"}


def make_video(workdir: Path, size: str, seconds: float) -> Path:
    out = workdir / f"x264_medium_{size}_{seconds:g}s.mp4"
    if not out.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size={size}:rate=30", "-t", f"{seconds:g}",
             "-vf", "noise=alls=8:allf=t", "-c:v", "libx264", "-preset", "medium",
             "-bf", "3", "-g", "250", "-b:v", BITRATES.get(size, "6M"), "-pix_fmt", "yuv420p",
             str(out)],
            check=True,
        )  # fmt: skip
    return out


def child(video: str, skip: bool) -> dict:
    from taskmem_lab.media import video as video_module
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.media.video import StreamFrames, _PyAVReader
    from taskmem_lab.memorize import prepare_clip, schedule_for
    from taskmem_lab.params import MemorizeParams

    readers: list[_PyAVReader] = []

    def reader(path, max_side, backend="auto"):  # noqa: ANN001, ANN202 - open_reader's shape
        readers.append(_PyAVReader(Path(path), max_side, skip_nonref=skip))
        return readers[-1]

    video_module.open_reader = reader  # the reader under test, in StreamFrames
    params = MemorizeParams()
    stream = load_stream(video)
    schedule = schedule_for(stream, params)
    frames = StreamFrames(stream, params.max_side)
    cpu0, wall0 = _cpu(), time.perf_counter()
    for clip in schedule:
        prepare_clip(frames, clip, params, None, schedule)
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    decoded = sum(r.decoded for r in readers)
    frames.close()
    return {"clips": len(schedule), "cpu_s": cpu, "wall_s": wall, "decoded": decoded}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(video: Path, skip: bool) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(video), "skip" if skip else "full"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/taskmem-decode"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "skip")))
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for size in args.sizes:
        video = make_video(args.workdir, size, args.seconds)
        rows = {"full": [], "skip": []}
        for _ in range(args.repeat):
            for mode in ("full", "skip"):
                rows[mode].append(_run(video, mode == "skip"))
        full, skip = (min(rows[m], key=lambda r: r["cpu_s"]) for m in ("full", "skip"))
        per = {m: [r["cpu_s"] / r["clips"] for r in rows[m]] for m in rows}
        print(
            f"{size} x264 medium, B-frames, GOP 250, {args.seconds:g} s ({full['clips']} clips): "
            f"CPU per clip full decode {min(per['full']):.3f} s "
            f"(median {statistics.median(per['full']):.3f}), skipping non-reference "
            f"{min(per['skip']):.3f} s (median {statistics.median(per['skip']):.3f}): "
            f"{min(per['skip']) / min(per['full']):.2f}x; frames decoded {full['decoded']} -> "
            f"{skip['decoded']}; wall {full['wall_s']:.1f} -> {skip['wall_s']:.1f} s"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
