"""`taskmem export-training`, `score-memory`, `rollout`, `pairs` and `adapt`: memory runs as training
data, and steer training on the pairs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from taskmem_lab.cli.common import add_cache_args, response_cache
from taskmem_lab.cli.options import add_options, params_from
from taskmem_lab.paths import slug
from taskmem_lab.training.adapt import AdaptParams
from taskmem_lab.training.export import ExportParams
from taskmem_lab.training.pairs import PairParams
from taskmem_lab.training.reward_rules import RewardParams
from taskmem_lab.training.rollouts import RolloutParams


def _replay(args: argparse.Namespace) -> Any:
    from taskmem_lab.training.replay import RunReplay

    return RunReplay(args.run, args.run_tasks, args.source_dir)


def _judges(args: argparse.Namespace) -> tuple[Any, Any]:
    """(response cache, `Judges`) from `--judge`, `--video-judge` and the cache options."""
    from taskmem_lab.backends import make_model
    from taskmem_lab.training.rewards import Judges

    cache = response_cache(args)
    return cache, Judges(
        text=make_model(args.judge, cache), video=make_model(args.video_judge, cache)
    )


def _status(failed: int, what: str) -> int:
    """Exit status 1 with one line when some items failed (a rerun retries them), else 0."""
    if failed:
        print(f"taskmem: error: {failed} {what} failed; run again to retry", file=sys.stderr)
        return 1
    return 0


def _scores_name(args: argparse.Namespace) -> str:
    return args.name or slug(f"{args.judge}+{args.video_judge}")


def export_training_command(args: argparse.Namespace) -> int:
    from taskmem_lab.training.export import export_training

    s = export_training(
        args.runs,
        args.out,
        params_from(ExportParams, args),
        args.run_tasks,
        args.source_dir,
        progress=not args.quiet,
    )
    print(f"training data: {s.out} ({s.records} records, {s.on_policy_records} on-policy)")
    return 0


def score_memory_command(args: argparse.Namespace) -> int:
    from taskmem_lab.training.rewards import score_memory

    _, judges = _judges(args)
    params = params_from(RewardParams, args)
    s = score_memory(
        _replay(args),
        judges,
        params,
        _scores_name(args),
        args.rollouts,
        args.concurrency,
        not args.quiet,
    )
    keys = ("entries", "scored", "failed", "format", "thinking", "quality", "richness")
    print(json.dumps({**{k: s[k] for k in keys}, "total_mean": s["total_mean"]}, indent=2))
    print(f"scores: {s['path']}/entries.jsonl, summary: {s['path']}/summary.json")
    return _status(s["failed"], "entries")


def rollout_command(args: argparse.Namespace) -> int:
    from taskmem_lab.backends import make_model
    from taskmem_lab.training.rollouts import rollout

    model = make_model(args.model, response_cache(args))
    tag = args.tag or slug(args.model)
    s = rollout(
        _replay(args),
        model,
        params_from(RolloutParams, args),
        tag,
        args.concurrency,
        not args.quiet,
    )
    print(f"rollouts: {s['path']} ({s['stored']} candidates for {s['clips']} clips)")
    return _status(s["failed"], "samples")


def pairs_command(args: argparse.Namespace) -> int:
    from taskmem_lab.backends import make_model
    from taskmem_lab.tasks import load_tasks
    from taskmem_lab.training.pairs import make_pairs

    cache, judges = _judges(args)
    pair_judge = make_model(args.pair_judge or args.judge, cache)
    s = make_pairs(
        _replay(args),
        args.rollouts,
        judges,
        pair_judge,
        load_tasks(args.tasks),
        args.out,
        params_from(RewardParams, args),
        params_from(PairParams, args),
        _scores_name(args),
        args.concurrency,
        not args.quiet,
    )
    print(
        f"pairs: {s['out']}/pairs.jsonl ({s['kept']} kept of {s['pairs_judged']} judged; "
        f"{s['ties']} ties, {s['inconsistent']} order-inconsistent dropped)"
    )
    return 0


def adapt_command(args: argparse.Namespace) -> int:
    from taskmem_lab.pipeline import adapt

    s = adapt(args.model, args.pairs, args.out, params_from(AdaptParams, args), not args.quiet)
    held = s["held_out"]
    scored = (
        f"held-out reward accuracy {held['reward_accuracy']:.0%} on {held['pairs']} pairs, "
        f"mean margin rise {held['mean_margin_rise']:+.3f} nats"
        if held["pairs"]
        else "no pairs held out (--holdout 0)"
    )
    print(f"steer: {s['steer_file']} (layers {s['steered_layers']}; {scored})")
    print(f"memorize with it: --model '{s['steered_spec']}'")
    return 0


def _add_run_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-tasks", help="the run's task file (for runs that do not store it)")
    p.add_argument("--source-dir", help="folder that now holds the run's source videos")


def _add_replay(p: argparse.ArgumentParser) -> None:
    _add_run_source(p)
    p.add_argument("--concurrency", type=int, default=8, help="model calls in flight (8)")
    add_cache_args(p)


def _add_rewards(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", required=True, help="text judge spec (text checks, richness)")
    p.add_argument("--video-judge", required=True, help="video judge spec (support, coherence)")
    p.add_argument("--name", help="scores folder name (default: from the judge specs)")
    add_options(p.add_argument_group("rewards (RewardParams)"), RewardParams)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `export-training`, `score-memory`, `rollout`, `pairs` and `adapt`."""
    x = sub.add_parser("export-training", help="memory runs as training data (JSONL, parquet)")
    x.add_argument("runs", nargs="+", help="memory run directories")
    x.add_argument("--out", required=True, help="dataset folder")
    add_options(x, ExportParams, helps={"parquet": "parquet files (JSONL only needs no pyarrow)"})
    _add_run_source(x)
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    x.set_defaults(func=export_training_command)

    r = sub.add_parser(
        "score-memory",
        help="rewards per entry: Format (a strict JSON reply), Thinking (a penalty for overlong "
        "reasoning), Quality (judges: supported by the video and coherent), Richness (unique "
        "information, ranked among a clip's rollouts)",
    )
    r.add_argument("run", help="memory run directory")
    r.add_argument("--rollouts", metavar="TAG", help="score the run's rollout candidates instead")
    _add_rewards(r)
    _add_replay(r)
    r.set_defaults(func=score_memory_command)

    o = sub.add_parser(
        "rollout",
        help="rollouts: N candidate entries the model could have written for each clip of a run",
    )
    o.add_argument("run", help="memory run directory")
    o.add_argument("--model", required=True, help="model spec of the sampler")
    o.add_argument("--tag", help="rollouts name (default: from the model spec)")
    add_options(o.add_argument_group("sampling (RolloutParams)"), RolloutParams)
    _add_replay(o)
    o.set_defaults(func=rollout_command)

    q = sub.add_parser(
        "pairs",
        help="preference pairs: for each clip, a better and a worse rollout entry, as judges "
        "rank them against the tasks (training data for DPO-style training)",
    )
    q.add_argument("run", help="memory run directory")
    q.add_argument("--rollouts", metavar="TAG", required=True, help="rollouts to pair")
    q.add_argument("--tasks", required=True, help="task file with the example questions")
    q.add_argument("--pair-judge", help="pairwise judge spec (default: --judge)")
    q.add_argument("--out", help="pairs folder (default: RUN/rollouts/TAG/pairs/NAME)")
    add_options(q.add_argument_group("pairs (PairParams)"), PairParams)
    _add_rewards(q)
    _add_replay(q)
    q.set_defaults(func=pairs_command)

    a = sub.add_parser("adapt", help="train a steer adapter by DPO on preference pairs")
    a.add_argument("--model", required=True, help="base model, hf:DIR or hf:HUB_ID (frozen)")
    a.add_argument(
        "--pairs", required=True, help="pair file or folder (taskmem pairs, or TRL's format)"
    )
    a.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
    add_options(a.add_argument_group("training (AdaptParams)"), AdaptParams)
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=adapt_command)
