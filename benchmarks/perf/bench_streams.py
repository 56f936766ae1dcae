"""A benchmark's streams side by side: wall time against the latency-bound ideal, and memory.

Generates N one-minute test videos (640x360, 30 fps by default; cached in --workdir) and a
Video-MME-shaped question file, starts the fake OpenAI-compatible server on 127.0.0.1 with a fixed
latency per request (1.0 s) and an endpoint of 32 slots, then memorizes every stream with
`run_benchmark` (memorize only: no answerer) in a child process per engine, and prints:

- wall time and its ratio to the bound set by slots and latency: each stream is `clips`
  sequential calls (6 for a minute at 10 s clips), and the endpoint runs at most --slots calls
  at once, so the ideal is `max(clips, streams x clips / slots) x latency` (6 s up to 32
  streams, 18.75 s for 100) plus the first clip's decode (targets: local <= 1.3x, Ray <= 1.6x;
  100 streams at 160x120 <= 1.3x in <= 3 GB);
- calls in flight, sampled at the server every 20 ms: mean / slots (the concurrency reached);
- pipeline overhead per clip: per stream, (its wall time - the latency of its calls) / clips;
- peak RSS of the child's whole process tree (Ray: driver, workers and Ray's own daemons),
  sampled every 0.1 s (target: 20 streams <= 2 GB in one process);
- for the in-process engines, the CPU seconds of the pipeline and of the test server, and the
  wall time that much CPU needs on this machine's cores: when it nears the ideal, the run is
  bound by the cores (decoding, mostly), not by the pipeline's scheduling.

Engines: `local` (threads in one process), `ray` (a local Ray instance with 2 CPUs started by the
child), `sequential` (the local engine with one stream at a time: what a shell loop does).
Figures measured on a loaded machine are only indicative: say so when quoting them.

    python benchmarks/perf/bench_streams.py [--streams 20] [--engines local ray] [--latency 1.0]
        [--slots 32] [--decoder pyav|decord] [--perception] [--workdir /tmp/taskmem-perf-bench]
    python benchmarks/perf/bench_streams.py --streams 100 --size 160x120 --engines local
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

SLOTS = 32


def child(
    engine: str, source: str, videos: str, out: str, config: str, faces: str, decoder: str
) -> None:
    """Runs in the child process: one `run_benchmark` call, figures printed as JSON."""
    os.environ["TASKMEM_API_CONFIG"] = config
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.pipeline import run_benchmark

    perception = None
    if faces == "1":
        from taskmem_lab.perception.perceiver import perception_params

        perception = perception_params(True, False)
    streams = 1 if engine == "sequential" else None
    if engine == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = run_benchmark(
        "videomme",
        source,
        videos,
        "openai:perf",
        None,
        params=MemorizeParams(),
        perception=perception,
        out=out,
        engine="ray" if engine == "ray" else "local",
        streams=streams,
        cache=False,
        progress=False,
        decoder=decoder,
    )
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    status = json.loads((result.folder / "bench.json").read_text())
    from taskmem_lab.store import RunDir

    per_stream = []
    first_decode = []
    for sid, s in status["streams"].items():
        records = list(RunDir(Path(out) / sid / "memory" / result.folder.name).finished().values())
        latency = sum(r.latency_s for r in records)
        per_stream.append((s.get("seconds", 0.0) - latency) / max(1, len(records)))
        if records:
            first_decode.append(records[0].timings.get("decode_s", 0.0))
    print(
        json.dumps(
            {
                "wall_s": wall,
                "streams": len(status["streams"]),
                "clips": result.plan.clips,
                "clips_per_stream": max(s.clips for s in result.plan.streams),
                "failed": [o.stream_id for o in result.failed],
                "overhead_per_clip_s": statistics.mean(per_stream),
                "first_decode_s": statistics.mean(first_decode) if first_decode else 0.0,
                "cpu_s": cpu,  # this process only: Ray's workers are not counted
            }
        )
    )


def tree_rss(pid: int) -> int:
    """RSS in bytes of a process and all its descendants (0 when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


class Sampler(threading.Thread):
    """Samples the server's calls in flight every 20 ms and the child tree's RSS every 0.1 s."""

    def __init__(self, server: object, pid: int) -> None:
        super().__init__(daemon=True)
        self.server, self.pid = server, pid
        self.in_flight: list[int] = []
        self.peak_rss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        last_rss = 0.0
        while not self.stop.is_set():
            self.in_flight.append(self.server.in_flight)  # type: ignore[attr-defined]
            now = time.monotonic()
            if now - last_rss >= 0.1:
                self.peak_rss = max(self.peak_rss, tree_rss(self.pid))
                last_rss = now
            time.sleep(0.02)


def make_inputs(work: Path, n: int, size: str) -> tuple[Path, Path]:
    from taskmem_lab.testing.media import test_video

    videos = work / f"videos-{size}"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        vid = f"perf{i:03d}"
        path = videos / f"{vid}.mp4"
        if not path.exists():
            print(f"generating {path} (1 min, {size}, 30 fps) ...", flush=True)
            test_video(path, 60, size=size, fps=30)
        rows.append(
            {
                "video_id": f"{i:03d}",
                "duration": "short",
                "domain": "perf",
                "sub_category": "generated",
                "url": "",
                "videoID": vid,
                "question_id": f"{i:03d}-1",
                "task_type": "perf",
                "question": "What is shown?",
                "options": ["A. a", "B. b", "C. c", "D. d"],
                "answer": "A",
            }
        )
    source = work / f"videomme-{n}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return source, videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=20, help="videos, one stream each (20)")
    parser.add_argument(
        "--engines", nargs="+", default=["local", "ray"], choices=["local", "ray", "sequential"]
    )
    parser.add_argument("--latency", type=float, default=1.0, help="server seconds per request")
    parser.add_argument("--slots", type=int, default=SLOTS, help=f"endpoint slots ({SLOTS})")
    parser.add_argument("--size", default="640x360", help="video size (640x360)")
    parser.add_argument("--perception", action="store_true", help="also run with --faces")
    parser.add_argument("--workdir", default="/tmp/taskmem-perf-bench")
    parser.add_argument(
        "--decoder", default="pyav", choices=["pyav", "decord"], help="frame reader (pyav)"
    )
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer, write_config

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    source, videos = make_inputs(work, args.streams, args.size)
    runs = [(e, "0") for e in args.engines]
    if args.perception:
        runs += [(e, "1") for e in args.engines if e != "sequential"]
    print(
        f"{args.streams} one-minute streams, server latency {args.latency:.1f} s, "
        f"{args.slots} slots, "
        f"decoder {args.decoder} "
        f"(figures from this machine as it is now: loaded machines give higher ratios)"
    )
    with FakeOpenAIServer(latency_s=args.latency) as server:
        config = write_config(
            str(work / "endpoints.yaml"),
            server,
            name="perf",
            max_concurrency=args.slots,
            timeout=60,
        )
        for engine, faces in runs:
            out = work / "runs" / f"{engine}-{faces}-{int(time.time())}"
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", engine, str(source), str(videos), str(out),
                 config, faces, args.decoder],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            sampler = Sampler(server, proc.pid)
            server_cpu0 = time.process_time()
            sampler.start()
            stdout, _ = proc.communicate()
            server_cpu = time.process_time() - server_cpu0  # the test server (and the sampler)
            sampler.stop.set()
            sampler.join()
            samples, peak = sampler.in_flight or [0], sampler.peak_rss
            if proc.returncode != 0:
                print(f"{engine}: child failed ({proc.returncode})")
                continue
            r = json.loads(stdout.strip().splitlines()[-1])
            busy = [s for s in samples if s > 0] or [0]
            clips = r["clips_per_stream"]
            ideal = max(clips, args.streams * clips / args.slots) * args.latency
            label = engine + (" +faces" if faces == "1" else "")
            print(
                f"{label:<16} wall {r['wall_s']:.1f} s = {r['wall_s'] / ideal:.2f}x ideal "
                f"({ideal:.0f} s; {r['wall_s'] / (ideal + r['first_decode_s']):.2f}x with the "
                f"first decode), calls in flight {statistics.mean(samples):.1f}/{args.slots} "
                f"(while busy {statistics.mean(busy):.1f}), overhead "
                f"{r['overhead_per_clip_s']:.3f} s/clip, peak RSS {peak / 2**20:.0f} MB"
                + (f", failed: {r['failed']}" if r["failed"] else "")
            )
            if engine != "ray":
                cores = os.cpu_count() or 1
                floor = (r["cpu_s"] + server_cpu) / cores
                print(
                    f"{'':<16} CPU {r['cpu_s']:.1f} s (pipeline) + {server_cpu:.1f} s (test "
                    f"server) on {cores} cores: the CPU alone needs >= {floor:.1f} s"
                )


if __name__ == "__main__":
    main()
