"""`taskmem memorize`, `taskmem perceive` and `taskmem show`: video in, memory or perception out."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from taskmem_lab.cli.common import add_cache_args, cache_setting, read_supplement
from taskmem_lab.cli.options import add_options, params_from
from taskmem_lab.errors import ConfigError
from taskmem_lab.memory import KINDS
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import PerceptionChoices

MODEL_HELP = (
    "model spec, e.g. openai:gpt-4o, openai:qwen3-vl#think, hf:DIR?max_new_tokens=256, "
    "vllm:Qwen/Qwen3-VL-8B-Instruct?tp=2, fake"
)
# The schedule fields `perceive` exposes: perception depends on the clips, not on the VLM call.
SCHEDULE = ("interval", "context_duration", "start", "end")


def _add_perception(p: argparse.ArgumentParser) -> None:
    add_options(p.add_argument_group("perception"), PerceptionChoices)


def _perception(args: argparse.Namespace, faces: bool, asr: bool) -> Any:
    from taskmem_lab.perception.perceiver import perception_params

    return perception_params(faces, asr, params_from(PerceptionChoices, args))


def memorize_command(args: argparse.Namespace) -> int:
    from taskmem_lab.pipeline import build_memory

    params = params_from(MemorizeParams, args)
    params = replace(params, supplement_prompt=read_supplement(params.supplement_prompt))
    run = build_memory(
        args.video,
        args.model,
        params,
        tag=args.tag,
        out=args.out,
        tasks=args.tasks,
        perception=_perception(args, faces=args.faces, asr=args.asr),
        cache=cache_setting(args),
        progress=not args.quiet,
        allow_model_change=args.allow_model_change,
    )
    print(f"memory: {run.path} ({len(run.finished())} clips)")
    return 0


def perceive_command(args: argparse.Namespace) -> int:
    from taskmem_lab.perception.identities import gallery
    from taskmem_lab.pipeline import perceive_stream
    from taskmem_lab.timefmt import span

    faces, asr = not (args.no_faces or args.asr_only), not args.no_asr
    if args.truth:
        from taskmem_lab.perception.truth import load_truth

        load_truth(args.truth)  # a bad truth file stops the run before perception starts
    perception = _perception(args, faces=faces, asr=asr)
    if perception is None:
        raise ConfigError(
            "nothing to perceive: --no-faces and --no-asr together turn everything off"
        )
    if faces and asr and not perception.speaker_model:
        print("note: no --speaker-model, so speakers are matched by voice only", file=sys.stderr)
    params = params_from(MemorizeParams, args)
    perceiver, seen = perceive_stream(
        args.video, perception, params, args.out, progress=not args.quiet
    )
    for clip, p in seen:
        print(f"[{span(clip.start, clip.end, True)}] faces: {', '.join(p.identities) or '-'}")
        for seg in p.transcript:
            who = seg.get("speaker") or "unknown"
            print(f"    [{span(seg['start'], seg['end'], True)}] {who}: {seg['text']}")
    crops = gallery(perceiver.path / "identities")
    print(f"perception: {perceiver.path} ({len(crops)} characters)")
    for gid, path in crops:
        print(f"    {gid}: {path}")
    if args.truth:
        from taskmem_lab.perception.scoring import format_scores, score_run

        print(f"scored against {args.truth}:")
        print(format_scores(score_run(args.truth, perceiver.path)))
    return 0


def show_command(args: argparse.Namespace) -> int:
    from taskmem_lab.memory import load_any

    memory = load_any(args.run)
    if args.until is not None:
        memory = memory.until(args.until)
    text = memory.to_text(args.kind)
    print(text if text else "(empty memory)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `memorize`, `perceive` and `show`."""
    m = sub.add_parser(
        "memorize",
        help="write episodic memory for a video or a stream manifest (a .json/.yaml file that "
        "lists several video files on one timeline)",
    )
    m.add_argument("video", help="video file, or a stream manifest (.json/.yaml)")
    m.add_argument("--model", required=True, help=MODEL_HELP)
    m.add_argument("--tag", help="name of this memory (default: derived from the model spec)")
    m.add_argument("--out", help="runs root (default: ./runs or $TASKMEM_RUNS)")
    m.add_argument("--tasks", help="task stream: questions with arrival times (JSON/JSONL/YAML)")
    add_options(
        m,
        MemorizeParams,
        aliases={"frame_fps": ["--fps"]},
        helps={"supplement_prompt": "extra instructions, or @FILE to read them from a file"},
    )
    add_cache_args(m)
    m.add_argument(
        "--allow-model-change",
        action="store_true",
        help="resume this run with another model or server (the switch is recorded)",
    )
    m.add_argument(
        "--faces", action="store_true", help="perceive faces (ids on frames and in the prompt)"
    )
    m.add_argument("--asr", action="store_true", help="transcribe speech (subtitles with speakers)")
    _add_perception(m)
    m.set_defaults(func=memorize_command)

    pc = sub.add_parser(
        "perceive", help="faces, speech and speakers per clip (cached for memorize)"
    )
    pc.add_argument("video", help="video file, or a stream manifest (.json/.yaml)")
    pc.add_argument("--out", help="runs root (default: ./runs or $TASKMEM_RUNS)")
    add_options(pc, MemorizeParams, only=SCHEDULE)
    pc.add_argument("--no-faces", action="store_true", help="skip faces")
    pc.add_argument("--no-asr", action="store_true", help="skip speech")
    pc.add_argument(
        "--asr-only", action="store_true", help="speech only (no faces, no speaker matching)"
    )
    pc.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pc.add_argument(
        "--truth",
        metavar="FILE",
        help="score the run against this truth file (WER, DER, IDF1, linking; "
        "see docs/perception.md; needs the scoring extra)",
    )
    _add_perception(pc)
    pc.set_defaults(func=perceive_command)

    s = sub.add_parser("show", help="print a memory as text")
    s.add_argument("run", help="run directory (runs/<video>/memory/<tag>), .jsonl or .pkl memory")
    s.add_argument("--kind", choices=KINDS, default=KINDS[0], help="which memory text (episodic)")
    s.add_argument("--until", type=float, help="only entries finished by this stream time")
    s.set_defaults(func=show_command)
