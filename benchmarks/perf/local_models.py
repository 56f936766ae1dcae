"""Throughput of an in-process model backend (`hf:` or `vllm:`) on real episodic clip requests.

Generates a 640x360 test video (cached in --workdir), builds the memorizer's episodic request for
each 10 s clip (the real prompt, the window's frames at --fps), and sends them to the model:

- once one by one (`streams = 1`), then from S threads at once, as S memorizer streams sharing the
  model would (the `vllm` backend's async engine batches them continuously; `hf` runs one at a
  time);
- for backends with `generate_many` (vllm), once more as a single batched call.

For each pass it prints clips/s, prompt and completion tokens/s and the mean latency per call, and
on a machine with `nvidia-smi` the GPU's mean utilization and peak memory during the pass.
With no --model it builds the tiny random-weight Idefics3 of the tests (CPU; the figures then
measure the backend's overhead, not a useful model).

    python benchmarks/perf/local_models.py [--model hf:DIR|vllm:ID] [--clips 8] [--streams 1 4]
        [--fps 1] [--max-tokens 64] [--workdir /tmp/taskmem-perf]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Any


def clip_requests(video: Path, clips: int, fps: float, max_tokens: int) -> list[Any]:
    from taskmem_lab.backends.base import Request, Sampling
    from taskmem_lab.face_ids import IdMap
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.media.video import StreamFrames, sample_times, thin
    from taskmem_lab.memorize import episodic_request, schedule_for
    from taskmem_lab.params import MemorizeParams

    params = MemorizeParams(frame_fps=fps, max_tokens=max(16, max_tokens))
    stream = load_stream(video)
    frames = StreamFrames(stream, params.max_side)
    out = []
    for clip in schedule_for(stream, params)[:clips]:
        frames.evict_before(clip.window_start)
        window = frames.window(thin(sample_times(clip.window_start, clip.end, fps), 32))
        request = episodic_request(clip, window, [], [], IdMap.from_order([]), params)
        out.append(Request(request.messages, Sampling(max_tokens=max_tokens), request.purpose))
    frames.close()
    return out


class GpuUse:
    """Samples `nvidia-smi` every 0.2 s while in use: mean utilization %, peak memory MiB."""

    def __init__(self) -> None:
        import shutil

        self.available = shutil.which("nvidia-smi") is not None
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()

    def _sample(self) -> None:
        import subprocess

        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits"]  # fmt: skip
        while not self._stop.wait(0.2):
            out = subprocess.run(query, capture_output=True, text=True, check=False).stdout
            for line in out.strip().splitlines()[:1]:
                util, mem = (float(x) for x in line.split(","))
                self.samples.append((util, mem))

    def __enter__(self) -> GpuUse:
        if self.available:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def summary(self) -> str:
        if not self.samples:
            return ""
        util = statistics.mean(u for u, _ in self.samples)
        return f"  GPU {util:.0f}% busy, {max(m for _, m in self.samples):.0f} MiB"


def run_pass(model: Any, requests: list[Any], streams: int) -> dict[str, float]:
    replies: list[Any] = [None] * len(requests)

    def worker(k: int) -> None:
        for i in range(k, len(requests), streams):
            replies[i] = model.generate(requests[i])

    t0 = time.perf_counter()
    with GpuUse() as gpu:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {**summarize(replies, time.perf_counter() - t0), "gpu": gpu.summary()}


def summarize(replies: list[Any], wall: float) -> dict[str, float]:
    prompt = sum(r.usage.get("prompt_tokens", 0) for r in replies)
    completion = sum(r.usage.get("completion_tokens", 0) for r in replies)
    return {
        "clips_per_s": len(replies) / wall,
        "prompt_tok_per_s": prompt / wall,
        "completion_tok_per_s": completion / wall,
        "mean_latency_s": statistics.mean(r.latency_s for r in replies),
        "mean_prompt_tokens": prompt / len(replies),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="hf:... or vllm:... (default: the tiny test model)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--workdir", default="/tmp/taskmem-perf")
    args = parser.parse_args()

    from taskmem_lab.backends import make_model
    from taskmem_lab.testing.media import test_video

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    spec = args.model
    if not spec:
        from taskmem_lab.testing.tiny_vlm import build_tiny_idefics3

        tiny = work / "tiny_idefics3"
        if not (tiny / "config.json").exists():
            build_tiny_idefics3(tiny)
        spec = f"hf:{tiny}"
    video = work / f"pattern_{args.clips * 10}s.mp4"
    if not video.exists():
        test_video(video, args.clips * 10, size="640x360", fps=30, audio=False)
    requests = clip_requests(video, args.clips, args.fps, args.max_tokens)
    model = make_model(spec)
    t0 = time.perf_counter()
    model.load()
    print(f"model {model.model_id}: loaded in {time.perf_counter() - t0:.1f} s")
    model.generate(requests[0])  # warm-up (kernels, caches)
    print(f"{len(requests)} clips, {args.fps} fps windows, max {args.max_tokens} completion tokens")
    header = f"{'pass':<18}{'clips/s':>9}{'prompt tok/s':>14}{'compl tok/s':>13}{'lat s':>8}"
    print(header + f"{'prompt tok':>12}")
    rows = [(f"streams={s}", run_pass(model, requests, s)) for s in args.streams]
    if hasattr(model, "generate_many"):
        t1 = time.perf_counter()
        with GpuUse() as gpu:
            replies = model.generate_many(requests)
        rows.append(
            (
                "generate_many",
                {**summarize(replies, time.perf_counter() - t1), "gpu": gpu.summary()},
            )
        )
    for name, r in rows:
        print(
            f"{name:<18}{r['clips_per_s']:>9.2f}{r['prompt_tok_per_s']:>14.0f}"
            f"{r['completion_tok_per_s']:>13.1f}{r['mean_latency_s']:>8.2f}"
            f"{r['mean_prompt_tokens']:>12.0f}{r['gpu']}"
        )


if __name__ == "__main__":
    main()
