"""Rollouts (N seeded candidates per clip, same prompts, resumable) and the pairwise protocol."""

import json
import os
from pathlib import Path

import pytest

from taskmem_lab.backends import make_model
from taskmem_lab.backends.base import Request
from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.backends.openai_compat import to_openai_messages
from taskmem_lab.errors import ConfigError, StoreError
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.schema import ClipSpec, Task
from taskmem_lab.testing.command import taskmem as run_taskmem
from taskmem_lab.training.pairs import PairParams, make_pairs, outcome, questions_for
from taskmem_lab.training.replay import RunReplay
from taskmem_lab.training.rewards import Judges, RewardParams
from taskmem_lab.training.rollouts import (
    RolloutParams,
    candidate_seed,
    rollout,
    rollouts_dir,
    samples_by_clip,
)

TASKS = [Task("q1", "Where is the red cup?", 2.0), Task("q2", "What does the clock show?", 14.0)]


class RecordingFakeModel(FakeModel):
    def __init__(self) -> None:
        super().__init__("recording")
        self.requests: list[Request] = []

    def generate(self, request):
        self.requests.append(request)
        return super().generate(request)


@pytest.fixture()
def run_and_requests(media, tmp_path):
    model = RecordingFakeModel()
    run = memorize(
        load_stream(media["tone_27_3"]),
        model,
        MemorizeParams(),
        str(tmp_path / "run"),
        tasks=TASKS,
        progress=False,
    )
    return run, model.requests


def user_text(body):
    return "\n".join(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")


def bodies_with(server, marker):
    return [b for b in server.requests if marker in b["messages"][0]["content"]]


def test_rollout_samples_the_memorizers_prompts_with_distinct_seeds(
    run_and_requests, api_config, server
):
    run, sent = run_and_requests
    params = RolloutParams(n=3, temperature=0.8, seed=7)
    summary = rollout(RunReplay(run.path), make_model("openai:local-vlm"), params, "t", 2, False)
    assert summary["stored"] == 9 and summary["failed"] == 0
    assert len(server.requests) == 9
    by_clip: dict[str, list[dict]] = {}
    for body in server.requests:
        assert body["temperature"] == 0.8
        by_clip.setdefault(json.dumps(body["messages"]), []).append(body)
    # Same prompt for the candidates of a clip: exactly what the memorizer sent, seeds apart.
    expected = [json.dumps(to_openai_messages(r, "frames", "auto")) for r in sent]
    assert sorted(by_clip) == sorted(expected)
    for bodies in by_clip.values():
        assert len(bodies) == 3 and len({b["seed"] for b in bodies}) == 3
    rows = samples_by_clip(rollouts_dir(run.path / "rollouts" / "t"))
    assert [len(v) for v in rows.values()] == [3, 3, 3]
    seeds = {(r["clip"], r["candidate"]): r["seed"] for v in rows.values() for r in v}
    assert seeds[(1, 2)] == candidate_seed(7, "tone_27_3", 1, 2)
    texts = [r["entry"] for r in rows[0]]
    assert len(set(texts)) == 3 and all(t.startswith("[fake server] sample") for t in texts)


def test_rollout_resumes_and_retries_failures(run_and_requests, api_config, server):
    run, _ = run_and_requests
    server.script(*["500"] * 4)  # the first sample's four attempts fail (max_retries 3)
    params = RolloutParams(n=2)
    first = rollout(RunReplay(run.path), make_model("openai:local-vlm"), params, "t", 1, False)
    assert first["failed"] == 1 and first["stored"] == 5
    calls = len(server.requests)
    again = rollout(RunReplay(run.path), make_model("openai:local-vlm"), params, "t", 1, False)
    assert again["sampled"] == 1 and again["stored"] == 6
    assert len(server.requests) == calls + 1  # only the missing sample
    with pytest.raises(StoreError, match="different 'params.n'"):
        rollout(RunReplay(run.path), make_model("openai:local-vlm"), RolloutParams(n=3), "t")


def test_rollout_params_and_seeds():
    with pytest.raises(ConfigError, match="temperature"):
        RolloutParams(temperature=0)
    with pytest.raises(ConfigError, match="'n'"):
        RolloutParams(n=0)
    seeds = {candidate_seed(0, "s", c, i) for c in range(20) for i in range(8)}
    assert len(seeds) == 160 and candidate_seed(0, "s", 3, 1) == candidate_seed(0, "s", 3, 1)


@pytest.mark.parametrize(
    "first, second, result",
    [
        ("A", "B", "a"),
        ("B", "A", "b"),
        ("tie", "tie", "tie"),
        ("A", "A", "inconsistent"),
        ("B", "B", "inconsistent"),
        ("A", "tie", "inconsistent"),
        ("tie", "B", "inconsistent"),
    ],
)
def test_pair_outcome_needs_both_orders_to_agree(first, second, result):
    assert outcome(first, second) == result


def test_questions_for_a_clip():
    tasks = [Task(f"q{i}", f"question {i}?", float(i * 10)) for i in range(8)]
    clip = ClipSpec(3, 30.0, 40.0, 0.0)
    arrived = questions_for(tasks, clip, PairParams(max_questions=2))
    assert [t.task_id for t in arrived] == ["q2", "q3"]  # q4 arrives at the clip's end
    spread = questions_for(tasks, clip, PairParams(max_questions=3, questions="all"))
    assert [t.task_id for t in spread] == ["q0", "q4", "q7"]
    assert questions_for(tasks, ClipSpec(0, 0.0, 0.0, 0.0), PairParams()) == []


def test_pairs_drop_order_inconsistent_verdicts(run_and_requests, api_config, server, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pairs write parquet: taskmem_lab[train]")
    run, _ = run_and_requests
    model = make_model("openai:local-vlm")
    rollout(RunReplay(run.path), model, RolloutParams(n=3, seed=1), "t", 2, False)
    # A judge biased to position A for the first pair judged: it prefers each entry in turn.
    server.script_verdicts("A", "A")
    summary = make_pairs(
        RunReplay(run.path),
        "t",
        Judges(model, model),
        model,
        TASKS,
        tmp_path / "pairs",
        RewardParams(),
        PairParams(),
        "s",
        concurrency=1,
        progress=False,
    )
    verdicts = [
        json.loads(x) for x in (tmp_path / "pairs" / "verdicts.jsonl").read_text().splitlines()
    ]
    first = verdicts[0]
    assert first["verdicts"] == ["A", "A"] and first["outcome"] == "inconsistent"
    assert summary["inconsistent"] == 1
    assert summary["pairs_judged"] == len(verdicts) == 9  # 3 clips, 3 pairs each
    assert summary["kept"] + summary["ties"] + summary["inconsistent"] == 9
    pairs = pq.read_table(tmp_path / "pairs" / "pairs.parquet").to_pylist()
    assert len(pairs) == summary["kept"] > 0
    kept = {(p["clip"], frozenset((p["chosen_candidate"], p["rejected_candidate"]))) for p in pairs}
    assert (first["clip"], frozenset((first["a"], first["b"]))) not in kept
    # Each kept pair was asked in both orders with the entries swapped.
    pair_bodies = bodies_with(server, '"better"')
    assert len(pair_bodies) == 18
    for p in pairs:
        chosen = json.loads(p["chosen"])["description"]
        rejected = json.loads(p["rejected"])["description"]
        orders = [t for t in map(user_text, pair_bodies) if chosen in t and rejected in t]
        assert len(orders) == 2
        slots = {"a" if t.index(chosen) < t.index("<entry_b>") else "b" for t in orders}
        assert slots == {"a", "b"}
        assert p["questions"] and all(q in orders[0] for q in p["questions"])
        assert p["prompt"][1]["content"].count("<video>") == 1
        assert (tmp_path / "pairs" / p["videos"][0]["video"]).is_file()
    # `taskmem adapt` reads the file as written: each pair's request rebuilt with its sampling.
    from taskmem_lab.training.preference import load_pairs

    loaded = load_pairs(tmp_path / "pairs")
    assert len(loaded) == summary["kept"] and all(p.request.purpose == "episodic" for p in loaded)
    # The candidates were quality-scored beside the rollouts first.
    scores = run.path / "rollouts" / "t" / "rewards" / "s" / "summary.json"
    assert json.loads(scores.read_text())["richness"]["scored"] == 9


@pytest.mark.slow
def test_rollout_and_pairs_cli(run_and_requests, api_config, server, tmp_path):
    pytest.importorskip("pyarrow", reason="pairs write parquet: taskmem_lab[train]")
    run, _ = run_and_requests
    tasks = tmp_path / "tasks.json"
    tasks.write_text(
        json.dumps([{"id": t.task_id, "question": t.question, "time": t.time} for t in TASKS])
    )
    env = {**os.environ, "TASKMEM_API_CONFIG": str(api_config)}

    def taskmem(*args):
        return run_taskmem(*args, "-q", env=env).stdout

    spec = "openai:local-vlm"
    out = taskmem("rollout", run.path, "--n", 4, "--model", spec, "--tag", "r")
    assert "12 candidates for 3 clips" in out
    judges = ("--judge", spec, "--video-judge", spec)
    out = taskmem(
        "pairs", run.path, "--rollouts", "r", "--tasks", tasks, *judges, "--out", tmp_path / "p"
    )
    assert "kept of 18 judged" in out
    pairs = [json.loads(x) for x in Path(tmp_path / "p" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert all(p["id"].startswith(f"tone_27_3*{p['clip']}*") for p in pairs)
    scored = taskmem("score-memory", run.path, "--rollouts", "r", *judges, "--name", "x")
    assert '"bonus_mean"' in scored and '"scored": 12' in scored
