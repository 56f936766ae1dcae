"""A week-long memory: loading it, cutting it at a question's time, rendering it, and answering
thousands of questions from it with retrieval.

Generates (once, in --workdir) a memory run of --entries 10 s clips (16,000: an EgoLife
participant's 44 hours over 7 days) with realistic record sizes (a 400-700 character entry, the
raw reply, a transcript, usage and timings; the text is generated, not written by a model), and
--questions questions spread over the week. Then, each step in a fresh process:

1. `Memory.load`, `until(t)` (mid-week) and `to_text` on the whole memory, --repeat times;
2. the retrieval index with the packaged all-MiniLM-L6-v2: first build (every entry embedded and
   stored beside the memory), reopening it (nothing embedded), and after --add new clips (only
   those embedded);
3. `evaluate` in retrieval mode with the fake answerer over every question: wall time, the
   per-question retrieval time (search with the questions encoded in one batch, and with each
   question encoded on its own), and peak RSS of the process.

Targets (issue 24): load / until / to_text <= 1 s each; retrieval <= 20 ms per question on 2
cores; RSS <= 1.5 GB answering 3,000 questions.

    python benchmarks/perf/week_memory.py [--entries 16000] [--questions 3000] [--add 100]
        [--repeat 3] [--workdir /tmp/taskmem-week]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

STREAM = "A1_JAKE"
TAG = "week"
_VOCABULARY = (
    "Jake Alice Katrina Shure Lucia Tasha kitchen table fridge strawberries guitar laptop "
    "whiteboard shopping cart flowers cake oven dishes meeting sofa stairs courtyard bike "
    "phone camera puzzle dance rehearsal coffee tea milk eggs noodles map budget party "
    "picks up puts down talks about laughs walks to opens closes washes cuts plays writes"
)
WORDS = _VOCABULARY.split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _clip_time(index: int) -> tuple[float, float]:
    """Clip `index` of the week: 14 hours a day from 08:00, days end to end with night gaps."""
    per_day = 14 * 360
    day, slot = divmod(index, per_day)
    start = day * 86400 + 8 * 3600 + slot * 10.0
    return start, start + 10.0


def _record(index: int, rng: random.Random) -> dict:
    start, end = _clip_time(index)
    text = " ".join(_sentence(rng, rng.randint(8, 14)) for _ in range(5))
    return {
        "clip": index, "start": start, "end": end, "window": [max(0.0, end - 50), end],
        "status": "ok", "episodic": text, "semantic": [],
        "transcript": [{"start": start + 1.0, "end": start + 4.0, "text": _sentence(rng, 9),
                        "speaker": "[face_1]"}],
        "identities": ["[face_1]", "[face_2]"], "tasks": [],
        "raw_reply": json.dumps({"description": text}), "reasoning": "", "model": "generated",
        "endpoint": {}, "usage": {"prompt_tokens": 3400, "completion_tokens": 160},
        "latency_s": 1.2, "request_hash": f"{index:064x}", "attempts": 1, "error": "",
        "warnings": [], "timings": {"decode_s": 0.06, "model_s": 1.2}, "fake": False, "schema": 1,
    }  # fmt: skip


def make_week(workdir: Path, entries: int) -> Path:
    run = workdir / "memories" / STREAM / "memory" / TAG
    clips = run / "clips.jsonl"
    run.mkdir(parents=True, exist_ok=True)
    rng = random.Random(24)
    with open(clips, "w", encoding="utf-8") as fh:
        for i in range(entries):
            fh.write(json.dumps(_record(i, rng)) + "\n")
    manifest = {"schema": 1, "kind": "memory", "stream_id": STREAM, "tag": TAG,
                "status": "complete", "clips_done": entries, "clips_total": entries}  # fmt: skip
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def questions(entries: int, count: int):  # type: ignore[no-untyped-def]
    from taskmem_lab.bench.record import QARecord

    rng = random.Random(3)
    last = _clip_time(entries - 1)[1]
    rows = []
    for i in range(count):
        t = rng.uniform(_clip_time(min(entries - 1, 360))[1], last)
        rows.append(
            QARecord(
                id=f"q{i:05d}", benchmark="egolife", video_id=STREAM,
                question=f"When did {rng.choice(WORDS)} {rng.choice(WORDS)} the "
                f"{rng.choice(WORDS)} last time?",
                options=tuple(_sentence(rng, 4) for _ in range(4)), answer="A",
                answer_kind="choice", task_type="EventRecall", query_time=round(t, 1),
            )
        )  # fmt: skip
    return rows


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_load(run: str, repeat: int) -> dict:
    from taskmem_lab.memory import Memory

    load, cut, text = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        memory = Memory.load(run)
        t1 = time.perf_counter()
        half = memory.until(memory.entries[len(memory) // 2].end)
        t2 = time.perf_counter()
        rendered = memory.to_text()
        t3 = time.perf_counter()
        load.append(t1 - t0), cut.append(t2 - t1), text.append(t3 - t2)
    return {"entries": len(memory), "half": len(half), "chars": len(rendered),
            "load_s": load, "until_s": cut, "to_text_s": text, "peak_mb": _peak_mb()}  # fmt: skip


def child_index(run: str) -> dict:
    from taskmem_lab.evaluation.retrieval import Retriever, index_folder
    from taskmem_lab.memory import Memory

    memory = Memory.load(run)
    retriever = Retriever()
    retriever._encoder()  # the model's load is not the index's cost
    t0 = time.perf_counter()
    stats = retriever.index(run, memory, index_folder(run))
    return {"seconds": time.perf_counter() - t0, "entries": stats.entries,
            "embedded": stats.embedded, "dropped": stats.dropped, "peak_mb": _peak_mb()}  # fmt: skip


def child_answer(workdir: str, entries: int, count: int) -> dict:
    from taskmem_lab.backends.fake import FakeModel
    from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
    from taskmem_lab.evaluation.qa import QAParams, retrieval_query
    from taskmem_lab.evaluation.retrieval import Retriever, index_folder
    from taskmem_lab.memory import Memory

    records = questions(entries, count)
    root = Path(workdir) / "memories"
    out = Path(workdir) / f"eval-{os.getpid()}"
    qa = QAParams(context="retrieval", top_k=10)
    t0 = time.perf_counter()
    evaluate(records, MemoryLocator(root, TAG), FakeModel(), None, qa, out, EvalParams(),
             progress=False)  # fmt: skip
    wall = time.perf_counter() - t0
    # retrieval alone, per question: batch-encoded questions, then each encoded on its own
    run = str(root / STREAM / "memory" / TAG)
    retriever = Retriever()
    retriever.index(run, Memory.load(run), index_folder(run))
    queries = [(retrieval_query(r), r.query_time) for r in records]
    t1 = time.perf_counter()
    retriever.prepare([q for q, _ in queries])
    t2 = time.perf_counter()
    for q, t in queries:
        retriever.search(run, q, t, 10)
    t3 = time.perf_counter()
    single = Retriever()
    single.index(run, Memory.load(run), index_folder(run))
    sample = queries[:300]
    t4 = time.perf_counter()
    for q, t in sample:
        single.search(run, q, t, 10)
    t5 = time.perf_counter()
    return {"questions": count, "eval_s": wall, "prepare_s": t2 - t1,
            "search_ms": (t3 - t2) / count * 1e3,
            "batched_ms": (t3 - t1) / count * 1e3,
            "alone_ms": (t5 - t4) / len(sample) * 1e3, "peak_mb": _peak_mb()}  # fmt: skip


def _child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _add_clips(run: Path, start: int, count: int) -> None:
    rng = random.Random(start)
    with open(run / "clips.jsonl", "a", encoding="utf-8") as fh:
        for i in range(start, start + count):
            fh.write(json.dumps(_record(i, rng)) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=16000)
    ap.add_argument("--questions", type=int, default=3000)
    ap.add_argument("--add", type=int, default=100, help="clips added before re-indexing")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/taskmem-week"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "load":
            print(json.dumps(child_load(rest[0], int(rest[1]))))
        elif kind == "index":
            print(json.dumps(child_index(rest[0])))
        else:
            print(json.dumps(child_answer(rest[0], int(rest[1]), int(rest[2]))))
        return
    import shutil

    shutil.rmtree(args.workdir, ignore_errors=True)
    run = make_week(args.workdir, args.entries)
    size = (run / "clips.jsonl").stat().st_size
    print(f"week: {args.entries} entries, clips.jsonl {size / 1e6:.0f} MB; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    for _ in range(args.repeat):
        r = _child("load", str(run), "3")
        print(f"  load {min(r['load_s']):.2f} s (max {max(r['load_s']):.2f}), until "
              f"{min(r['until_s']) * 1e3:.1f} ms, to_text {min(r['to_text_s']):.2f} s "
              f"({r['chars'] / 1e6:.1f} M chars), peak RSS {r['peak_mb']:.0f} MB")  # fmt: skip
    first = _child("index", str(run))
    print(f"  index, first build: {first['embedded']} entries embedded in "
          f"{first['seconds']:.1f} s, peak RSS {first['peak_mb']:.0f} MB")  # fmt: skip
    again = _child("index", str(run))
    print(f"  index, reopened: {again['embedded']} embedded, {again['seconds']:.2f} s")
    _add_clips(run, args.entries, args.add)
    grown = _child("index", str(run))
    print(f"  index after {args.add} new clips: {grown['embedded']} embedded, "
          f"{grown['seconds']:.2f} s")  # fmt: skip
    for _ in range(args.repeat):
        a = _child("answer", str(args.workdir), str(args.entries + args.add), str(args.questions))
        print(f"  {a['questions']} questions, fake answerer, retrieval top-10: evaluate "
              f"{a['eval_s']:.1f} s; retrieval {a['batched_ms']:.1f} ms/question with the "
              f"questions encoded in one batch (search alone {a['search_ms']:.2f} ms), "
              f"{a['alone_ms']:.1f} ms encoding each on its own; peak RSS "
              f"{a['peak_mb']:.0f} MB")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
