"""Rollouts: N sampled candidate entries per clip of a stored run, with the memorizer's prompts.

Floor 5 (`taskmem rollout RUN --n N --model SPEC`). Each finished clip of the run is replayed
(`replay.RunReplay`, checked against its stored request hash) and its exact episodic request is
sent N times at temperature > 0, candidate i with its own seed
(`random.Random(f"{seed}:{stream}:{clip}:{i}")`), so candidates differ, the response cache keeps
them apart, and a re-run reproduces them. Samples go to `RUN/rollouts/<tag>/candidates.jsonl`
(append + fsync, a `jobs.ResumableDir`: a restarted rollout samples only what is missing)
beside `manifest.json`; an unreadable reply is a valid sample (it fails the format reward), a model
failure is stored as failed and retried by the next run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from taskmem_lab.backends.base import ChatModel, Request, Sampling
from taskmem_lab.errors import ModelError, ParseError
from taskmem_lab.face_ids import IdMap
from taskmem_lab.jobs import Progress, ResumableDir
from taskmem_lab.params import check_finite, check_param
from taskmem_lab.replies import parse_description
from taskmem_lab.schema import SCHEMA_VERSION
from taskmem_lab.training.replay import ReplayedClip, RunReplay


@dataclass(frozen=True)
class RolloutParams:
    """Parameters of a rollout.

    Attributes:
        n: candidates per clip.
        temperature: sampling temperature (> 0: candidates must differ).
        top_p: nucleus sampling (None: the server's default).
        seed: base seed; candidate i of clip k gets a seed derived from it.
        max_tokens: completion budget (None: the run's).
    """

    n: int = 8
    temperature: float = 1.0
    top_p: float | None = None
    seed: int = 0
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(1 <= self.n <= 256, "n", f"must be in 1..256, got {self.n}")
        check_param(self.temperature > 0, "temperature", "must be > 0 so candidates differ")
        if self.top_p is not None:
            check_param(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        if self.max_tokens is not None:
            check_param(self.max_tokens >= 16, "max_tokens", "must be >= 16")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def candidate_seed(seed: int, stream_id: str, clip: int, i: int) -> int:
    """A seed per candidate that does not depend on the order samples are drawn in."""
    return random.Random(f"{seed}:{stream_id}:{clip}:{i}").randrange(2**31)


def sampled_request(request: Request, params: RolloutParams, seed: int) -> Request:
    """The memorizer's request with sampling for candidate generation."""
    return Request(
        messages=request.messages,
        sampling=Sampling(
            temperature=params.temperature,
            max_tokens=params.max_tokens or request.sampling.max_tokens,
            top_p=params.top_p,
            seed=seed,
        ),
        purpose=request.purpose,
    )


def rollout_path(run: str | Path, tag: str) -> Path:
    from taskmem_lab.paths import safe_name

    return Path(run) / "rollouts" / safe_name(tag, "rollouts tag")


def rollouts_dir(path: str | Path) -> ResumableDir:
    """`RUN/rollouts/<tag>/`: manifest.json and candidates.jsonl (one row per (clip, candidate))."""
    return ResumableDir(
        Path(path),
        kind="rollouts",
        key=lambda row: (int(row["clip"]), int(row["candidate"])),
        settings_name="manifest.json",
        rows_name="candidates.jsonl",
        hint="use another --tag, or delete the directory to start over",
    )


def samples_by_clip(store: ResumableDir) -> dict[int, list[dict[str, Any]]]:
    """Ok samples of a rollouts folder per clip, in candidate order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for key, row in store.good().items():
        clip, _ = cast(tuple[int, int], key)
        out.setdefault(clip, []).append(row)
    return out


def candidate_name(i: int) -> str:
    return f"r{i}"


def sample(
    model: ChatModel, replayed: ReplayedClip, i: int, params: RolloutParams, seed: int
) -> dict[str, Any]:
    """One candidate for a clip as a stored row (never raises for a model failure)."""
    request = sampled_request(replayed.inputs.request, params, seed)
    ids: IdMap = replayed.inputs.ids
    row: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "stream": replayed.stream_id,
        "clip": replayed.clip.index,
        "start": replayed.clip.start,
        "end": replayed.clip.end,
        "candidate": i,
        "seed": seed,
        "model": model.model_id,
        "prompt_hash": replayed.record.request_hash,
        "request_hash": request.fingerprint(model.model_id)[:16],
    }
    try:
        reply = model.generate(request)
    except ModelError as exc:
        return {**row, "status": "failed", "error": f"ModelError: {exc}"}
    entry, parse_error = "", ""
    try:
        entry = parse_description(reply.text)
    except ParseError as exc:
        parse_error = str(exc)
    stored, unknown = ids.to_global(entry) if entry else ("", [])
    return {
        **row,
        "status": "ok",
        "error": "",
        "entry": entry,
        "description": stored,
        "unknown_ids": unknown,
        "parse_error": parse_error,
        "raw_reply": reply.text,
        "reasoning": reply.reasoning,
        "usage": reply.usage,
        "latency_s": round(reply.latency_s, 4),
        "cached": reply.cached,
        "fake": reply.fake,
    }


def rollout(
    replay: RunReplay,
    model: ChatModel,
    params: RolloutParams,
    tag: str,
    concurrency: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample `params.n` candidates for every finished clip of the run; returns a summary."""
    store = rollouts_dir(rollout_path(replay.run.path, tag)).open(
        {
            "model": model.model_id,
            "params": params.to_json(),
            "run": {
                "stream": replay.stream_id,
                "tag": replay.tag,
                "model": replay.manifest["model"],
            },
        }
    )
    done = set(store.good())
    missing = {
        c: [i for i in range(params.n) if (c, i) not in done] for c in sorted(replay.records)
    }
    todo = {c for c, left in missing.items() if left}

    def jobs() -> Iterator[tuple[ReplayedClip, int]]:
        for replayed in replay.clips(only=todo):
            for i in missing[replayed.clip.index]:
                yield replayed, i

    def one(job: tuple[ReplayedClip, int]) -> dict[str, Any]:
        replayed, i = job
        seed = candidate_seed(params.seed, replay.stream_id, replayed.clip.index, i)
        return sample(model, replayed, i, params, seed)

    counts = {"sampled": 0, "failed": 0, "unreadable": 0}
    bar = Progress(
        f"rollout {replay.stream_id}",
        total=sum(len(v) for v in missing.values()),
        unit="sample",
        enabled=progress,
    )
    # sample() stores a model failure as a failed row; anything else is a bug and propagates
    for row in store.run(
        one,
        jobs(),
        concurrency,
        key=lambda j: (j[0].clip.index, j[1]),
        progress=bar,
        ahead=concurrency,  # the next clip is replayed while samples are drawn
    ):
        counts["sampled" if row["status"] == "ok" else "failed"] += 1
        counts["unreadable"] += bool(row.get("parse_error"))
    summary = {
        "path": str(store.path),
        "clips": len(replay.records),
        "candidates_per_clip": params.n,
        "stored": sum(len(v) for v in samples_by_clip(store).values()),
        **counts,
    }
    return store.write_summary(summary, "partial" if counts["failed"] else "complete")
