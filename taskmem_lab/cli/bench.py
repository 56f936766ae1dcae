"""`taskmem bench`: a whole benchmark, planned, memorized side by side and evaluated.

Argument wiring only; the work is `pipeline.run_benchmark` (docs/benchmarks-at-scale.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from taskmem_lab.cli.common import add_cache_args, cache_setting, read_supplement
from taskmem_lab.cli.evaluate import prices
from taskmem_lab.cli.memorize import MODEL_HELP
from taskmem_lab.cli.options import add_options, params_from
from taskmem_lab.evaluation.evaluate import EvalParams
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import PerceptionChoices

# The schedule fields `bench` exposes (a benchmark's streams are memorized whole: no start/end).
BENCH_SCHEDULE = tuple(
    f.name for f in dataclasses.fields(MemorizeParams) if f.name not in ("start", "end")
)
# The answering fields: the answerer's temperature and max_tokens keep their QAParams defaults
# (the memorizer's options of those names set the memorizer's).
BENCH_QA = tuple(
    f.name for f in dataclasses.fields(QAParams) if f.name not in ("temperature", "max_tokens")
)


def resume_command(argv: Sequence[str], stream_ids: Sequence[str]) -> str:
    """The command line that reruns `argv` for `stream_ids` only (an earlier selection dropped)."""
    keep: list[str] = []
    skipping = False
    for a in argv:
        if a in ("--only", "--limit-streams"):
            skipping = True
            continue
        if skipping and not a.startswith("-"):
            continue
        skipping = False
        keep.append(a)
    return shlex.join(["taskmem", *keep, "--only", *stream_ids])


def bench_command(args: argparse.Namespace) -> int:
    from taskmem_lab.perception.perceiver import perception_params
    from taskmem_lab.pipeline import run_benchmark

    params = params_from(MemorizeParams, args)
    params = dataclasses.replace(
        params, supplement_prompt=read_supplement(params.supplement_prompt)
    )
    resources = {k: v for k, v in (("num_cpus", args.ray_cpus), ("num_gpus", args.ray_gpus)) if v}
    result = run_benchmark(
        args.benchmark,
        args.source,
        args.videos,
        args.model,
        args.answerer,
        judge=args.judge,
        params=params,
        perception=perception_params(args.faces, args.asr, params_from(PerceptionChoices, args)),
        qa=QAParams(**{k: getattr(args, k) for k in BENCH_QA}),
        eval_params=params_from(EvalParams, args),
        tag=args.tag,
        out=args.out,
        tasks=args.tasks,
        streams=args.streams,
        limit_streams=args.limit_streams,
        only=args.only or (),
        engine=args.engine,
        ray_address=args.ray_address,
        ray_resources=resources,
        cache=cache_setting(args),
        prices=prices(args.price),
        plan_only=args.plan,
        progress=not args.quiet,
        decoder=args.decoder,
        allow_model_change=args.allow_model_change,
    )
    if args.plan:
        print(result.plan.table())
    _print_estimate(result.estimate)
    if args.plan:
        return 0
    counts: dict[str, int] = {}
    for o in result.outcomes.values():
        counts[o.status] = counts.get(o.status, 0) + 1
    print(f"streams: {', '.join(f'{n} {k}' for k, n in sorted(counts.items()))} ({result.folder})")
    if result.evaluation is not None:
        print(result.evaluation.markdown, end="")
        print(f"results: {result.evaluation.out} ({result.evaluation.summary['status']})")
    if result.note:
        print(result.note)
    if not result.failed:
        return 0
    for o in result.failed:
        print(f"taskmem: stream {o.stream_id} failed: {o.error}", file=sys.stderr)
    argv = sys.argv[1:] if args.argv is None else args.argv
    ids = [o.stream_id for o in result.failed]
    print(f"taskmem: resume the failed streams with: {resume_command(argv, ids)}", file=sys.stderr)
    return 1


def _print_estimate(estimate: dict[str, Any] | None) -> None:
    if estimate is None:
        return
    for row in estimate["rows"]:
        cost = "" if row["cost_usd"] is None else f", about ${row['cost_usd']:.2f}"
        print(
            f"{row['role']} {row['model']}: {row['calls']} calls, ~{row['prompt_tokens']:,} "
            f"prompt + ~{row['completion_tokens']:,} completion tokens{cost}"
        )
    if estimate["total_usd"] is not None:
        print(f"estimated total: ${estimate['total_usd']:.2f} (rough; see docs)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench`."""
    from taskmem_lab.bench import BENCHMARKS  # light: no optional dependencies

    b = sub.add_parser("bench", help="plan, memorize and evaluate a whole benchmark (resumable)")
    b.add_argument("benchmark", choices=sorted(BENCHMARKS), help="benchmark name")
    b.add_argument("--source", help="benchmark source, as for `taskmem eval` (default: the Hub)")
    b.add_argument("--videos", required=True, help="folder of the benchmark's videos")
    b.add_argument("--model", required=True, help=f"memorizer {MODEL_HELP}")
    b.add_argument("--answerer", help="model spec that answers (none: memorize only)")
    b.add_argument("--judge", help="model spec that judges free-form answers (EgoTempo)")
    b.add_argument("--tag", help="memory tag (default: from the model spec, +__tasks)")
    b.add_argument("--out", help="runs root (default: ./runs or $TASKMEM_RUNS)")
    b.add_argument(
        "--tasks",
        choices=["questions", "none"],
        default="none",
        help="questions: each question reaches the memorizer at its query time (none)",
    )
    b.add_argument("--streams", type=int, help="streams side by side (default: endpoint slots)")
    b.add_argument("--limit-streams", type=int, help="only the first N streams")
    b.add_argument("--only", nargs="+", metavar="ID", help="only these streams")
    b.add_argument("--plan", action="store_true", help="print the plan; call nothing")
    b.add_argument(
        "--price",
        action="append",
        metavar="SPEC=IN,OUT",
        help="USD per 1M input,output tokens of a model: cost estimate and running cost",
    )
    b.add_argument("--engine", choices=["local", "ray"], default="local", help="(local)")
    b.add_argument("--ray-address", help="Ray cluster to join (default: start a local one)")
    b.add_argument("--ray-cpus", type=float, help="CPUs per Ray runner (one per node; 1)")
    b.add_argument("--ray-gpus", type=float, help="GPUs per Ray runner (perception on GPU)")
    b.add_argument(
        "--decoder",
        choices=["pyav", "decord", "auto"],
        default="pyav",
        help="frame reader: pyav decodes forward and never ahead (low memory; default)",
    )
    b.add_argument(
        "--allow-model-change",
        action="store_true",
        help="continue streams memorized with another model or server (the switch is recorded)",
    )
    add_options(
        b.add_argument_group("memorizing (MemorizeParams)"),
        MemorizeParams,
        only=BENCH_SCHEDULE,
        aliases={"frame_fps": ["--fps"]},
        helps={"supplement_prompt": "extra instructions, or @FILE to read them from a file"},
    )
    b.add_argument("--faces", action="store_true", help="perceive faces")
    b.add_argument("--asr", action="store_true", help="transcribe speech")
    add_options(b.add_argument_group("perception"), PerceptionChoices)
    add_options(
        b.add_argument_group("answering (QAParams)"),
        QAParams,
        only=BENCH_QA,
        aliases={"evidence_pad_s": ["--evidence-pad"]},
    )
    add_options(
        b.add_argument_group("evaluation run (EvalParams)"),
        EvalParams,
        aliases={"n_boot": ["--bootstrap"]},
    )
    add_cache_args(b)
    b.set_defaults(func=bench_command)
