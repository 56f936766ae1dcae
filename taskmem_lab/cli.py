"""The `taskmem` command line.

    taskmem memorize VIDEO_OR_MANIFEST --model SPEC [--tag TAG] [--interval 10] ...
    taskmem show RUN [--kind episodic|semantic|both]

Errors the user can fix (a missing video, an unknown model spec, a missing endpoint config or key,
a server that stays unreachable) print one line and exit with status 2 (1 for a failed clip).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taskmem_lab.errors import ModelError, ParseError, TaskmemError


def _memorize(args: argparse.Namespace) -> int:
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.pipeline import build_memory

    params = MemorizeParams(
        interval=args.interval,
        context_duration=args.context_duration,
        start=args.start,
        end=args.end,
        frame_fps=args.fps,
        max_frames=args.max_frames,
        semantic=args.semantic,
        supplement_prompt=_read_supplement(args.supplement_prompt),
        temperature=args.temperature,
    )
    run = build_memory(
        args.video,
        args.model,
        params,
        tag=args.tag,
        out=args.out,
        tasks=args.tasks,
        cache=False if args.no_cache else (args.cache or True),
        progress=not args.quiet,
    )
    print(f"memory: {run.path} ({len(run.finished())} clips)")
    return 0


def _read_supplement(value: str | None) -> str:
    if not value:
        return ""
    if value.startswith("@"):
        from pathlib import Path

        return Path(value[1:]).read_text(encoding="utf-8").strip()
    return value


def _show(args: argparse.Namespace) -> int:
    from taskmem_lab.memory import load_any

    memory = load_any(args.run)
    if args.until is not None:
        memory = memory.until(args.until)
    text = memory.to_text(args.kind)
    print(text if text else "(empty memory)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskmem", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and warnings")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("memorize", help="write episodic memory for a video or stream manifest")
    m.add_argument("video", help="video file, or a stream manifest (.json/.yaml)")
    m.add_argument(
        "--model", required=True, help="model spec, e.g. openai:gpt-4o, openai:qwen3-vl#think, fake"
    )
    m.add_argument("--tag", help="name of this memory (default: derived from the model spec)")
    m.add_argument("--out", help="runs root (default: ./runs or $TASKMEM_RUNS)")
    m.add_argument(
        "--interval", type=float, default=10.0, help="seconds of new video per clip (10)"
    )
    m.add_argument(
        "--context-duration",
        type=float,
        default=50.0,
        help="seconds of video the model sees per clip (50)",
    )
    m.add_argument("--start", type=float, help="stream time to start at (seconds)")
    m.add_argument("--end", type=float, help="stream time to stop at (seconds)")
    m.add_argument(
        "--fps", type=float, default=1.0, help="frames per second sampled for the model (1)"
    )
    m.add_argument("--max-frames", type=int, default=32, help="cap on frames per window (32)")
    m.add_argument(
        "--supplement-prompt", help="extra instructions, or @FILE to read them from a file"
    )
    m.add_argument("--semantic", action="store_true", help="also write atomic knowledge statements")
    m.add_argument("--tasks", help="task stream: questions with arrival times (JSON/JSONL/YAML)")
    m.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0)")
    m.add_argument(
        "--cache", help="response cache file (default: $TASKMEM_CACHE or ~/.cache/taskmem_lab)"
    )
    m.add_argument(
        "--no-cache", action="store_true", help="do not read or write the response cache"
    )
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_memorize)

    s = sub.add_parser("show", help="print a memory as text")
    s.add_argument("run", help="run directory (runs/<video>/memory/<tag>), .jsonl or .pkl memory")
    s.add_argument("--kind", choices=["episodic", "semantic", "both"], default="episodic")
    s.add_argument("--until", type=float, help="only entries finished by this stream time")
    s.set_defaults(func=_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ModelError, ParseError) as exc:
        print(f"taskmem: error: {exc}", file=sys.stderr)
        return 1
    except TaskmemError as exc:
        print(f"taskmem: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "taskmem: interrupted; finished clips are stored, run again to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
