"""Rollouts: N sampled candidate entries per clip of a stored run, with the memorizer's prompts.

Floor 4 (`taskmem rollout RUN --n N --model SPEC`). Each finished clip of the run is replayed
(`replay.RunReplay`, checked against its stored request hash) and its exact episodic request is
sent N times at temperature > 0, candidate i with its own seed
(`random.Random(f"{seed}:{stream}:{clip}:{i}")`), so candidates differ, the response cache keeps
them apart, and a re-run reproduces them. Samples go to `RUN/rollouts/<tag>/candidates.jsonl`
(append + fsync, resumable: a restarted rollout samples only what is missing) beside
`manifest.json`; an unreadable reply is a valid sample (it fails the format reward), a model
failure is stored as failed and retried by the next run.
"""

from __future__ import annotations

import json
import random
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.backends.base import ChatModel, Request, Sampling
from taskmem_lab.errors import ConfigError, ModelError, ParseError, StoreError
from taskmem_lab.face_ids import IdMap
from taskmem_lab.params import require
from taskmem_lab.replies import parse_description
from taskmem_lab.schema import SCHEMA_VERSION
from taskmem_lab.store import append_jsonl, atomic_write_json, read_jsonl
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
        require(1 <= self.n <= 256, "n", f"must be in 1..256, got {self.n}")
        require(self.temperature > 0, "temperature", "must be > 0 so candidates differ")
        if self.top_p is not None:
            require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        if self.max_tokens is not None:
            require(self.max_tokens >= 16, "max_tokens", "must be >= 16")

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


class RolloutDir:
    """`RUN/rollouts/<tag>/`: manifest.json and candidates.jsonl."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def candidates_path(self) -> Path:
        return self.path / "candidates.jsonl"

    def manifest(self) -> dict[str, Any]:
        p = self.path / "manifest.json"
        if not p.is_file():
            raise StoreError(f"no rollouts at {self.path} (run `taskmem rollout` first)")
        return json.loads(p.read_text(encoding="utf-8"))

    def open(self, settings: dict[str, Any]) -> RolloutDir:
        p = self.path / "manifest.json"
        if p.is_file():
            old = self.manifest()
            for key in ("model", "params", "run"):
                if old.get(key) != settings.get(key):
                    raise StoreError(
                        f"{self.path} holds rollouts made with a different {key!r}; "
                        "use another --tag, or delete the directory to start over"
                    )
        else:
            atomic_write_json(p, {"schema": SCHEMA_VERSION, "kind": "rollouts", **settings})
        return self

    def latest(self) -> dict[tuple[int, int], dict[str, Any]]:
        """The latest row per (clip, candidate); an ok row wins over earlier failures."""
        latest: dict[tuple[int, int], dict[str, Any]] = {}
        for r in read_jsonl(self.candidates_path):
            key = (int(r["clip"]), int(r["candidate"]))
            if r["status"] == "ok" or latest.get(key, r)["status"] != "ok":
                latest[key] = r
        return dict(sorted(latest.items()))

    def by_clip(self) -> dict[int, list[dict[str, Any]]]:
        """Ok samples per clip, in candidate order."""
        out: dict[int, list[dict[str, Any]]] = {}
        for (clip, _), row in self.latest().items():
            if row["status"] == "ok":
                out.setdefault(clip, []).append(row)
        return out

    def append(self, row: dict[str, Any]) -> None:
        append_jsonl(self.candidates_path, row)


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
    from tqdm.auto import tqdm

    if concurrency < 1:
        raise ConfigError(f"parameter 'concurrency': must be >= 1, got {concurrency}")
    store = RolloutDir(rollout_path(replay.run.path, tag)).open(
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
    done = {k for k, r in store.latest().items() if r["status"] == "ok"}
    missing = {
        c: [i for i in range(params.n) if (c, i) not in done] for c in sorted(replay.records)
    }
    todo = {c for c, left in missing.items() if left}
    bar = tqdm(
        total=sum(len(v) for v in missing.values()),
        disable=not progress,
        desc=f"rollout {replay.stream_id}",
        unit="sample",
    )
    counts = {"sampled": 0, "failed": 0, "unreadable": 0}

    def finish(future: Future[dict[str, Any]]) -> None:
        row = future.result()
        store.append(row)
        counts["sampled" if row["status"] == "ok" else "failed"] += 1
        counts["unreadable"] += bool(row.get("parse_error"))
        bar.update(1)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="taskmem-rollout") as pool:
        pending: deque[Future[dict[str, Any]]] = deque()
        for replayed in replay.clips(only=todo):
            for i in missing[replayed.clip.index]:
                seed = candidate_seed(params.seed, replay.stream_id, replayed.clip.index, i)
                pending.append(pool.submit(sample, model, replayed, i, params, seed))
            # Bound the windows held in memory by queued requests.
            while len(pending) >= 4 * concurrency or (pending and pending[0].done()):
                finish(pending.popleft())
        while pending:
            finish(pending.popleft())
    bar.close()
    summary = {
        "path": str(store.path),
        "clips": len(replay.records),
        "candidates_per_clip": params.n,
        "stored": sum(len(v) for v in store.by_clip().values()),
        **counts,
    }
    atomic_write_json(store.path / "summary.json", summary)
    return summary
