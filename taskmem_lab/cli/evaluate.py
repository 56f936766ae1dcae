"""`taskmem eval`: answer a benchmark's questions from memories and score them;
`taskmem judge-agreement`: re-judge a finished free-form evaluation with a second judge."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from taskmem_lab.cli.common import add_cache_args, cache_setting
from taskmem_lab.cli.options import add_options, params_from
from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.agreement import AgreementParams
from taskmem_lab.evaluation.evaluate import EvalParams
from taskmem_lab.evaluation.qa import QAParams

MAX_PRICE = 10_000.0  # USD per 1M tokens; dearer than any model sold, so a typo


def prices(values: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    """`SPEC=IN,OUT` (USD per million input/output tokens) -> {SPEC: (IN, OUT)}."""
    out = {}
    for value in values or ():
        spec, _, pair = value.rpartition("=")
        try:
            tokens_in, tokens_out = (float(x) for x in pair.split(","))
        except ValueError as exc:
            raise ConfigError(
                f"--price {value!r}: expected SPEC=IN,OUT in USD per 1M tokens"
            ) from exc
        for side, usd in (("IN", tokens_in), ("OUT", tokens_out)):
            if not (math.isfinite(usd) and 0 <= usd <= MAX_PRICE):
                raise ConfigError(
                    f"--price {value!r}: {side} must be a number of USD per 1M tokens in "
                    f"0..{MAX_PRICE:g}, got {usd}"
                )
        out[spec] = (tokens_in, tokens_out)
    return out


def add_price_arg(p: argparse.ArgumentParser) -> None:
    """`--price SPEC=IN,OUT` (repeatable)."""
    p.add_argument(
        "--price",
        action="append",
        metavar="SPEC=IN,OUT",
        help="USD per 1M input,output tokens of a model, for the cost summary (repeatable)",
    )


def eval_command(args: argparse.Namespace) -> int:
    from taskmem_lab.pipeline import run_eval

    result = run_eval(
        args.benchmark,
        args.source,
        args.memories,
        args.answerer,
        params_from(QAParams, args),
        tag=args.tag,
        judge=args.judge,
        params=params_from(EvalParams, args),
        out=args.out,
        cache=cache_setting(args),
        prices=prices(args.price),
        progress=not args.quiet,
    )
    print(result.markdown, end="")
    summary = result.summary
    if result.missing:
        ids = ", ".join(m["id"] for m in result.missing[:10])
        more = f" (+{len(result.missing) - 10} more)" if len(result.missing) > 10 else ""
        print(f"\nno memory for {len(result.missing)} question(s): {ids}{more} (see missing.json)")
    if summary["incomplete_memories"]:
        print(f"unfinished memories: {', '.join(summary['incomplete_memories'][:10])}")
    print()
    if summary.get("errors"):
        errors = ", ".join(f"{k} {v}" for k, v in summary["errors"].items())
        print(f"why wrong (--attribute {summary['attribution']['mode']}): {errors}")
    print_usage(summary)
    print(f"results: {result.out} ({summary['status']})")
    return failed(result.failures)


def print_usage(summary: Mapping[str, Any]) -> None:
    """Calls, tokens and cost per model, and this run's fresh calls."""
    for u in summary["usage"]:
        cost = f", ${u['cost_usd']:.4f}" if u["cost_usd"] is not None else ""
        print(
            f"{u['role']} {u['model']}: {u['calls']} calls ({u['cached_calls']} cached), "
            f"{u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens{cost}"
        )
    print(f"this run: {summary['this_run']['model_calls']} model calls")


def failed(failures: Sequence[str]) -> int:
    """Name the failed questions on stderr; the exit status (1 when any failed)."""
    if not failures:
        return 0
    for failure in failures[:5]:
        print(f"taskmem: failed: {failure}", file=sys.stderr)
    print(
        f"taskmem: error: {len(failures)} question(s) failed; run again to retry them",
        file=sys.stderr,
    )
    return 1


def agreement_command(args: argparse.Namespace) -> int:
    from taskmem_lab.pipeline import run_judge_agreement

    result = run_judge_agreement(
        args.results,
        args.judge,
        params_from(AgreementParams, args),
        out=args.out,
        cache=cache_setting(args),
        prices=prices(args.price),
        progress=not args.quiet,
    )
    s = result.summary
    first = ", ".join(s["first_judge"])
    print(f"{first} vs {s['second_judge']}: {s['compared']} answers graded by both")
    if s["agreement"] is not None:
        kappa = "undefined" if s["kappa"] is None else f"{s['kappa']:.3f}"
        print(f"raw agreement {100 * s['agreement']:.1f}%, Cohen's kappa {kappa}")
        (yy, yn), (ny, nn) = s["confusion"]
        print(f"confusion (rows {first}, columns {s['second_judge']}; yes/no):")
        print(f"  yes: {yy:4d} {yn:4d}\n   no: {ny:4d} {nn:4d}")
    if s.get("note"):
        print(s["note"])
    unreadable = s["unparseable"]
    if unreadable["first"] or unreadable["second"]:
        print(f"unreadable verdicts: first {unreadable['first']}, second {unreadable['second']}")
    print(f"{len(s['disagreements'])} disagreement(s), listed in {result.out / 'agreement.json'}")
    print()
    print_usage(s)
    print(f"results: {result.out} ({s['status']})")
    return failed(result.failures)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `eval` and `judge-agreement`."""
    from taskmem_lab.bench import BENCHMARKS  # light: no optional dependencies

    e = sub.add_parser("eval", help="answer a benchmark's questions from memories and score them")
    e.add_argument("benchmark", choices=sorted(BENCHMARKS), help="benchmark name")
    e.add_argument(
        "--source",
        help="benchmark source: original file/folder, a `taskmem publish` folder, "
        "hf://datasets/ORG/REPO/FILE or a Hub repo id (default: the original on the Hub)",
    )
    e.add_argument(
        "--memories",
        required=True,
        help="memories root: <DIR>/<video_id>/memory/<tag>/, <DIR>/<video_id>/<video_id>_<tag>.pkl"
        " (original TaskMem, also under test_time/), <DIR>/<video_id>.jsonl or .pkl",
    )
    e.add_argument("--tag", help="memory tag of run directories or original pickles")
    e.add_argument(
        "--answerer",
        required=True,
        help="model spec that answers, e.g. openai:gpt-4o (offline: fake, or fake:reader, "
        "a fixed rule that answers from the memory text)",
    )
    e.add_argument("--judge", help="model spec that judges free-form answers (EgoTempo)")
    add_options(
        e.add_argument_group("answering (QAParams)"),
        QAParams,
        aliases={"evidence_pad_s": ["--evidence-pad"]},
    )
    add_options(
        e.add_argument_group("run (EvalParams)"), EvalParams, aliases={"n_boot": ["--bootstrap"]}
    )
    add_price_arg(e)
    e.add_argument("--out", help="results folder (default: <memories>/eval/<benchmark>/<...>)")
    add_cache_args(e)
    e.set_defaults(func=eval_command)

    a = sub.add_parser(
        "judge-agreement",
        help="re-judge a finished free-form evaluation with a second judge: agreement, kappa",
    )
    a.add_argument("results", help="an evaluation results folder (what `taskmem eval` wrote)")
    a.add_argument("--judge", required=True, help="model spec of the second judge")
    add_options(a.add_argument_group("run (AgreementParams)"), AgreementParams)
    add_price_arg(a)
    a.add_argument("--out", help="output folder (default: RESULTS/agreement/<judge>)")
    add_cache_args(a)
    a.set_defaults(func=agreement_command)
