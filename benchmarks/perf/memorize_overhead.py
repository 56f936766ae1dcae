"""The memorizer's own cost per clip, and its peak memory, against a zero-latency local server.

Generates 640x360 30 fps test videos (10 and 60 minutes by default, cached in --workdir), starts
the fake OpenAI-compatible server on 127.0.0.1 with no latency, runs `memorize` on each video in a
child process, and prints:

- overhead per 10 s clip: wall time of the clip loop / clips (decode, JPEG encoding, request
  building, the HTTP round trip to a server that answers at once, parsing and storage), plus the
  per-stage means recorded in the clip records;
- peak RSS of the child process for each video, and its growth from the shortest to the longest.

Targets (DESIGN.md, issue 2): < 0.2 s overhead per 10 s clip on 2 cores; peak RSS growing < 20%
from 10 to 60 minutes.

    python benchmarks/perf/memorize_overhead.py [--minutes 10 60] [--workdir /tmp/taskmem-perf]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(video: str, out: str, config: str) -> None:
    """Runs in the child process: memorize one video and print figures as JSON."""
    import os

    os.environ["TASKMEM_API_CONFIG"] = config
    from taskmem_lab.backends import make_model
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.memorize import memorize
    from taskmem_lab.params import MemorizeParams

    stream = load_stream(video)
    model = make_model("openai:perf")
    t0 = time.perf_counter()
    run = memorize(stream, model, MemorizeParams(), out, progress=False)
    wall = time.perf_counter() - t0
    records = list(run.finished().values())
    stages: dict[str, list[float]] = {}
    for r in records:
        for k, v in r.timings.items():
            stages.setdefault(k, []).append(v)
    print(
        json.dumps(
            {
                "clips": len(records),
                "wall_s": wall,
                "server_latency_s": sum(r.latency_s for r in records),
                "stages": {k: statistics.mean(v) for k, v in stages.items()},
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def make_video(path: Path, minutes: float) -> Path:
    if not path.exists():
        print(f"generating {path} ({minutes} min, 640x360, 30 fps) ...", flush=True)
        from taskmem_lab.testing.media import test_video

        test_video(path, minutes * 60, size="640x360", fps=30)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--workdir", default="/tmp/taskmem-perf")
    parser.add_argument(
        "--child", nargs=3, metavar=("VIDEO", "OUT", "CONFIG"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer, write_config

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    with FakeOpenAIServer(latency_s=0.0) as server:
        config = write_config(str(work / "endpoints.yaml"), server, name="perf")
        for minutes in args.minutes:
            video = make_video(work / f"perf_{minutes:g}min.mp4", minutes)
            out = work / "runs" / f"{minutes:g}min-{int(time.time())}"
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(video), str(out), config],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            per_clip = (r["wall_s"] - r["server_latency_s"]) / r["clips"]
            results[minutes] = r
            stages = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in r["stages"].items())
            print(
                f"{minutes:g} min: {r['clips']} clips, overhead {per_clip:.3f} s/clip "
                f"(target < 0.2), peak RSS {r['peak_rss_mb']:.0f} MB; stage means: {stages}"
            )
    lo, hi = min(results), max(results)
    if lo != hi:
        growth = results[hi]["peak_rss_mb"] / results[lo]["peak_rss_mb"] - 1
        print(f"peak RSS growth {lo:g} -> {hi:g} min: {growth * 100:+.1f}% (target < 20%)")


if __name__ == "__main__":
    main()
