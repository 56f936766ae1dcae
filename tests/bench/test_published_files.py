"""The published benchmark files and the original TaskMem question files, in their real shapes
(fixtures written by hand from the published field layouts; times checked by hand)."""

import json
import random
import subprocess
import sys
import uuid

import pytest

from taskmem_lab.bench import egolife
from taskmem_lab.bench.hub import load_benchmark
from taskmem_lab.errors import BenchmarkError

DAY = 86400.0


def hms_ff(day, h, m, s, f):
    """Stream seconds of `DAYday HHMMSSFF` (FF: frame at 20 fps), computed by hand."""
    return (day - 1) * DAY + h * 3600 + m * 60 + s + f / 20


def egolife_row(i, target, **extra):
    return {
        "ID": i,
        "query_time": {"date": "DAY6", "time": "21000000"},
        "type": "EventRecall",
        "need_audio": False,
        "need_name": True,
        "last_time": i % 2 == 0,
        "trigger": "",
        "question": f"Question {i}?",
        "choice_a": "a",
        "choice_b": "b",
        "choice_c": "c",
        "choice_d": "d",
        "answer": "A",
        "target_time": target,
        "keywords": "x, y",
        "reason": "r",
        "question_chinese": f"问题 {i}？",
        "choice_a_chinese": "甲",
        **extra,
    }


def test_egolife_file_with_all_three_target_time_shapes_loads_whole(tmp_path):
    rows = [
        egolife_row(1, {"date": "DAY1", "time": "11094208"}),
        egolife_row(2, {"date": "DAY2", "time_list": ["17100000", "17452010"]}),
        egolife_row(3, {"date": "DAY4", "time": "17044917DAY4_20593813DAY6_19483807"}),
    ]
    path = tmp_path / "EgoLifeQA_A1_JAKE.json"
    path.write_text(json.dumps(rows, ensure_ascii=False))
    records = load_benchmark("egolife", path)
    assert [r.id for r in records] == ["A1_JAKE_1", "A1_JAKE_2", "A1_JAKE_3"]
    one, listed, packed = (r.evidence for r in records)
    assert one == ((40182.4, 40182.4),)  # 11:09:42 + 8/20
    assert listed == ((86400 + 61800.0,) * 2, (86400 + 63920.5,) * 2)  # 17:10:00, 17:45:20.5
    assert packed == (
        (hms_ff(4, 17, 4, 49, 17),) * 2,
        (hms_ff(4, 20, 59, 38, 13),) * 2,
        (hms_ff(6, 19, 48, 38, 7),) * 2,
    )
    assert packed[0][0] == pytest.approx(3 * DAY + 61489.85)
    assert packed[2][0] == pytest.approx(5 * DAY + 71318.35)
    assert records[1].meta["last_time"] is True and records[0].meta["last_time"] is False
    assert records[2].meta["question_chinese"] == "问题 3？"
    assert records[2].meta["choice_a_chinese"] == "甲"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"date": "DAY4", "time": "17044917DAY4_2059"}, "packed"),
        ({"date": "DAY4", "time": "17046917"}, "is not HHMMSSFF"),
        ({"date": "DAY4", "time": "24000000"}, "hours must be < 24"),
        ({"date": "DAYX", "time": "17044917"}, "not DAYn"),
        ({"date": "DAY4", "time": "17044917DAY0_20593813"}, "not DAYn"),
    ],
)
def test_an_out_of_range_field_names_the_file_and_row(tmp_path, target, message):
    rows = [egolife_row(1, {"date": "DAY1", "time": "11094208"}), egolife_row(2, target)]
    path = tmp_path / "EgoLifeQA_A1_JAKE.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(BenchmarkError, match=message) as info:
        load_benchmark("egolife", path)
    assert str(info.value).startswith(f"{path} row 1: ")


def test_egolife_last_time_must_be_a_boolean(tmp_path):
    path = tmp_path / "EgoLifeQA_A1_JAKE.json"
    path.write_text(json.dumps([egolife_row(1, None, last_time="50 minutes")]))
    with pytest.raises(BenchmarkError, match=r"row 0: last_time must be true or false"):
        load_benchmark("egolife", path)


def test_egolife_original_taskmem_question_file(tmp_path):
    raw = egolife_row(7, {"date": "DAY2", "time": "16195000"})
    qa = {k: raw[k] for k in ("query_time", "target_time", "answer")}
    data = {
        "results": [
            {
                "ID": 7,
                "qa": qa,
                "qa_raw": raw,
                "current_groups": [
                    {"output": "x/current_7_DAY6_A1_JAKE_20590000__DAY6_A1_JAKE_21000000.mp4"}
                ],
                "target_groups": [
                    {"output": "target_7_DAY2_A1_JAKE_16190000__DAY2_A1_JAKE_16200000"}
                ],
            }
        ]
    }
    path = tmp_path / "egolife_qa.json"
    path.write_text(json.dumps(data))
    (record,) = load_benchmark("egolife", path)
    assert record.id == "A1_JAKE_7" and record.video_id == "A1_JAKE"
    assert record.evidence == ((86400 + 16 * 3600 + 19 * 60 + 50.0,) * 2,)
    assert record.query_time == 5 * DAY + 21 * 3600


# --------------------------------------------------------------------------- EgoTempo


QUESTION_TYPES = [
    "object-specific action",
    "action-specific object",
    "temporal event ordering",
    "counting actions",
    "counting objects",
]


def published_egotempo(n=500, seed=0):
    """An `egotempo_openQA.json` of the published size and shape, some clips starting below 0."""
    rng = random.Random(seed)
    annotations = []
    clip = None
    for i in range(n):
        if i % 2 == 0:
            uid = str(uuid.UUID(int=rng.getrandbits(128)))
            start = -rng.uniform(0.09, 0.21) if i % 25 == 0 else rng.uniform(0, 6000)
            clip = f"{uid}_{start!r}_{start + rng.uniform(6, 125)!r}"
        annotations.append(
            {
                "question_id": f"{clip}_{i % 2}",
                "clip_id": clip,
                "question_type": QUESTION_TYPES[i % len(QUESTION_TYPES)],
                "question": f"What does the person do after step {i}?",
                "answer": f"Step {i + 1}.",
            }
        )
    return {"info": {"release date": "29.01.2025", "version": "1.0"}, "annotations": annotations}


@pytest.mark.slow
def test_egotempo_published_file_loads_all_500_questions(tmp_path):
    path = tmp_path / "egotempo_openQA.json"
    path.write_text(json.dumps(published_egotempo()))
    records = load_benchmark("egotempo", path)
    assert len(records) == 500
    below = [r for r in records if r.meta["clip_start_raw"] < 0]
    assert len(below) == 20 and all(r.meta["clip_start"] == 0.0 for r in below)
    assert all(r.query_time is None for r in records)
    out = tmp_path / "pub"
    proc = subprocess.run(
        [sys.executable, "-m", "taskmem_lab.cli", "publish", "egotempo", "--source", path]
        + ["--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "needs `pyarrow`" in proc.stderr:
        pytest.skip("publishing needs the eval extra (pyarrow)")
    assert proc.returncode == 0, proc.stderr
    assert load_benchmark("egotempo", out) == records


def test_egotempo_original_taskmem_video_info(tmp_path):
    clip = "27470817-f803-45b4-b9d4-e754cb3196bc_368.4019995568589_403.56079044314106"
    row = {"videoID": clip, "question": "What does the person pick up?", "answer": "A cloth."}
    data = {"all": [row, {**row, "question": "And then?"}], "object-specific action": [row]}
    path = tmp_path / "video_info.json"
    path.write_text(json.dumps(data))
    records = load_benchmark("egotempo", path)
    assert [(r.id, r.task_type) for r in records] == [
        (f"{clip}_0", "object-specific action"),
        (f"{clip}_1", "all"),
    ]


def test_egotempo_original_row_listed_under_all_only(tmp_path):
    path = tmp_path / "video_info.json"
    path.write_text(json.dumps({"all": [{"videoID": "u_0_5", "question": "q", "answer": "a"}]}))
    records = load_benchmark("egotempo", path)
    assert records[0].task_type == "all"


# --------------------------------------------------------------------------- Video-MME


def test_videomme_original_taskmem_video_info_files(tmp_path):
    def row(vid, q, answer="B"):
        return {
            "videoID": vid,
            "question": q,
            "options": ["A. one", "B. two", "C. three", "D. four"],
            "answer": answer,
        }

    short = {
        "all": [row("fFjv93ACGo8", "How many?"), row("fFjv93ACGo8", "What colour?", "C")],
        "Counting Problem": [row("fFjv93ACGo8", "How many?")],
        "Attribute Perception": [row("fFjv93ACGo8", "What colour?", "C")],
    }
    (tmp_path / "video_info_short.json").write_text(json.dumps(short))
    long_row = {**row("LONGvid0001", "Who wins?"), "question_id": "601-1", "domain": "Sports"}
    (tmp_path / "video_info_long.json").write_text(json.dumps({"all": [long_row], "OCR": []}))
    records = load_benchmark("videomme", tmp_path)
    got = [(r.id, r.task_type, r.meta["duration"], r.options[1]) for r in records]
    assert got == [
        ("601-1", "all", "long", "two"),  # listed under "all" only; its own id kept
        ("fFjv93ACGo8-1", "Counting Problem", "short", "two"),
        ("fFjv93ACGo8-2", "Attribute Perception", "short", "two"),
    ]


def test_videomme_original_row_errors_name_the_file_and_row(tmp_path):
    row = {"videoID": "v", "question": "q", "options": "a b c d", "answer": "A"}
    (tmp_path / "video_info_medium.json").write_text(json.dumps({"all": [row], "OCR": []}))
    with pytest.raises(BenchmarkError, match=r"video_info_medium.json row 0: 'options' must be"):
        load_benchmark("videomme", tmp_path / "video_info_medium.json")


@pytest.mark.parametrize("repo", ["lmms-lab/Video-MME", "lmms-eval/Video-MME"])
def test_videomme_both_hub_ids_name_the_original(monkeypatch, repo):
    datasets = pytest.importorskip("datasets")
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "benchmarks/videomme/sample"
    rows = [json.loads(x) for x in (sample / "videomme_test_sample.jsonl").open()]
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = load_benchmark("videomme", repo)
    assert calls == [(repo, "videomme", "test")] and len(records) == 6


def test_egolife_packed_moments_helper():
    t = egolife.evidence_windows({"date": "DAY1", "time": "00000000DAY2_00000010"}, "x")
    assert t == ((0.0, 0.0), (DAY + 0.5, DAY + 0.5))
