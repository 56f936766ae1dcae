"""Word error rate of the clip-by-clip transcript against a whole-file transcription.

A 38 s generated speech video (nine espeak-ng lines in three voices, several crossing the 10 s
clip boundaries) is transcribed twice with the bundled whisper tiny.en (int8, CPU): once whole,
once through `ClipTranscriber` over 10 s clips. The WER between the two says how much the cuts
change what Whisper hears. It depends on the CPU (int8 kernels differ): 3.0 % (beam 1) and 1.5 %
(beam 5) on one 2-core VM, 10.1 % and 5.9 % on another, so it is a figure, not a test
(tests/perception/test_asr.py checks that no line is lost or doubled at a cut).

    python benchmarks/perf/asr_clip_wer.py [--beams 1 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

# (start s, text, voice); the test's WER_LINES
LINES = [
    (0.8, "The quick brown fox jumps over the lazy dog.", "male"),
    (4.6, "Please remember to bring the blue notebook.", "female"),
    (9.5, "We should meet again tomorrow morning near the station.", "male"),
    (14.2, "The weather has been lovely all week.", "third"),
    (18.1, "Can you send me the report before lunch?", "female"),
    (22.4, "I left my umbrella in the car.", "male"),
    (26.0, "Dinner will be ready at seven tonight.", "third"),
    (29.2, "Our train leaves from platform nine.", "female"),
    (33.0, "Thank you very much for your help.", "male"),
]


def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalpha() or c == " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--workdir", default="/tmp/taskmem-perf")
    args = parser.parse_args()

    import jiwer

    from taskmem_lab.media.audio import window_audio
    from taskmem_lab.media.stream import load_stream, segments
    from taskmem_lab.media.video import clip_schedule
    from taskmem_lab.perception.asr import AsrParams, ClipTranscriber, WhisperAsr, bundled_tiny_en
    from taskmem_lab.testing.media import speech_video

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "wer_talk.mp4"
    if not path.exists():
        speech_video(path, LINES, 38.0)
    stream = load_stream(path)
    for beam in args.beams:
        asr = WhisperAsr(AsrParams(model=str(bundled_tiny_en()), language="en", beam_size=beam))
        whole = asr.transcribe(window_audio(stream, 0.0, 38.0), 0.0)
        transcriber = ClipTranscriber.from_params(asr, stream, asr.params)
        clip_wise = []
        for clip in clip_schedule(segments(stream), 10.0, 50.0):
            clip_wise += transcriber.transcribe_clip(clip)
        a = " ".join(_norm(s.text) for s in whole)
        b = " ".join(_norm(s.text) for s in clip_wise)
        print(f"beam {beam}: WER clip-wise vs whole file {jiwer.wer(a, b):.1%}")


if __name__ == "__main__":
    main()
