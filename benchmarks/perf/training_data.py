"""Throughput of the training-data tools: export, reward scoring and rollouts.

Generates a 640x360 30 fps test video (10 minutes by default, cached in --workdir), memorizes it
with the in-process fake model (default parameters: 10 s clips, 50 s windows, 1 fps), then prints:

- export: wall time of `export_training` (replay + media both + JSONL/parquet), seconds per clip,
  real-time factor, frames written vs frames referenced (overlapping windows share frame files),
  media size, and the share spent encoding mp4s;
- score-memory: wall time and judge calls per second against the fake OpenAI-compatible server
  answering after `--latency` seconds, at concurrency 1 and `--concurrency`;
- rollout: samples per second for `--n` candidates per clip at the same settings.

    python benchmarks/perf/training_data.py [--minutes 10] [--latency 1.0] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--latency", type=float, default=1.0, help="fake server latency per call (s)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--n", type=int, default=4, help="rollout candidates per clip")
    ap.add_argument("--workdir", default="/tmp/taskmem-perf")
    args = ap.parse_args()

    from taskmem_lab.backends import make_model
    from taskmem_lab.backends.fake import FakeModel
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.memorize import memorize
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer, write_config
    from taskmem_lab.testing.media import test_video
    from taskmem_lab.training import export as training
    from taskmem_lab.training.replay import RunReplay
    from taskmem_lab.training.rewards import Judges, RewardParams, score_memory
    from taskmem_lab.training.rollouts import RolloutParams, rollout

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    video = work / f"perf_{args.minutes:g}min.mp4"
    if not video.exists():
        print(f"generating {video} ...", flush=True)
        test_video(video, args.minutes * 60, size="640x360", fps=30, audio=False)
    run_dir = work / f"run_{args.minutes:g}min"
    shutil.rmtree(run_dir, ignore_errors=True)
    run = memorize(load_stream(video), FakeModel(), MemorizeParams(), str(run_dir), progress=False)
    clips = len(run.finished())
    seconds = args.minutes * 60

    encode = {"s": 0.0}
    plain = training.encode_mp4

    def timed(frames, fps):  # noqa: ANN001, ANN202 - wraps encode_mp4 to time it
        t = time.perf_counter()
        try:
            return plain(frames, fps)
        finally:
            encode["s"] += time.perf_counter() - t

    training.encode_mp4 = timed
    out = work / "export"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = training.export_training([run.path], out, progress=False)
    wall = time.perf_counter() - t0
    training.encode_mp4 = plain
    referenced = sum(len(r["frames"]) for r in training_rows(out / "episodic.jsonl"))
    print(f"\nexport of {args.minutes:g} min ({clips} clips), 640x360, media both:")
    print(
        f"  wall {wall:.1f} s = {wall / clips * 1000:.0f} ms/clip, {seconds / wall:.1f}x real time"
    )
    print(f"  frames written {summary.frames_written} of {referenced} referenced")
    print(
        f"  media {summary.media_bytes / 1e6:.1f} MB; mp4 encoding {encode['s']:.1f} s of thread time (in the background)"
    )

    with FakeOpenAIServer(latency_s=args.latency) as server:
        cfg = write_config(str(work / "perf_endpoints.yaml"), server, max_concurrency=64)
        os.environ["TASKMEM_API_CONFIG"] = cfg
        judge = make_model("openai:local-vlm")
        for conc in sorted({1, args.concurrency}):
            shutil.rmtree(run.path / "rewards", ignore_errors=True)
            n0 = len(server.requests)
            t0 = time.perf_counter()
            score_memory(
                RunReplay(run.path), Judges(judge, judge), RewardParams(), "perf", None, conc, False
            )
            wall = time.perf_counter() - t0
            calls = len(server.requests) - n0
            print(
                f"score-memory, concurrency {conc}: {wall:.1f} s, {calls} judge calls, "
                f"{calls / wall:.1f} calls/s (latency {args.latency} s per call)"
            )
        shutil.rmtree(run.path / "rollouts", ignore_errors=True)
        t0 = time.perf_counter()
        s = rollout(
            RunReplay(run.path), judge, RolloutParams(n=args.n), "perf", args.concurrency, False
        )
        wall = time.perf_counter() - t0
        print(
            f"rollout n={args.n}, concurrency {args.concurrency}: {wall:.1f} s, "
            f"{s['sampled'] / wall:.1f} samples/s"
        )


def training_rows(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


if __name__ == "__main__":
    main()
