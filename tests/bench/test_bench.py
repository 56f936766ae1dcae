"""Benchmark conversion: each sample in its source schema, time parsing, records, round trips."""

import json
from pathlib import Path

import pytest

from taskmem_lab.bench import BENCHMARKS, egolife, egotempo, get_benchmark
from taskmem_lab.bench.hub import load_benchmark
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import BenchmarkError

SAMPLES = Path(__file__).resolve().parents[2] / "benchmarks"


def test_registry_is_a_plain_dict_of_the_three_benchmarks():
    assert sorted(BENCHMARKS) == ["egolife", "egotempo", "videomme"]
    assert get_benchmark("egolife").has_evidence
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'"):
        get_benchmark("nope")


# --------------------------------------------------------------------------- Video-MME


def test_videomme_sample_converts_with_original_ids():
    records = load_benchmark("videomme", SAMPLES / "videomme" / "sample")
    assert [r.id for r in records] == ["901-1", "901-2", "901-3", "902-1", "902-2", "903-1"]
    first = records[0]
    assert first.video_id == "tmSmpl0001a"  # videoID: the media file is {videoID}.mp4
    assert first.options == ("Two.", "Three.", "Four.", "Five.")  # "A. " prefixes dropped
    assert first.answer == "B" and first.answer_kind == "choice"
    assert first.task_type == "Counting Problem"
    assert first.query_time is None and first.evidence == ()  # asked at the end of the video
    assert first.meta["source_video_id"] == "901" and first.meta["duration"] == "short"
    assert get_benchmark("videomme").groups == ("duration", "domain", "sub_category")


def test_videomme_reads_the_parquet_shard_of_the_hub_repo(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [json.loads(x) for x in (SAMPLES / "videomme/sample/videomme_test_sample.jsonl").open()]
    shard = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), shard)
    from_parquet = load_benchmark("videomme", tmp_path)
    assert from_parquet == load_benchmark("videomme", SAMPLES / "videomme" / "sample")


def test_videomme_bad_rows_name_the_problem(tmp_path):
    row = json.loads((SAMPLES / "videomme/sample/videomme_test_sample.jsonl").open().readline())
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({k: v for k, v in row.items() if k != "videoID"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"bad.jsonl row 0: missing field\(s\) \['videoID'\]"):
        load_benchmark("videomme", bad)
    swapped = {**row, "options": ["B. x", "A. y", "C. z", "D. w"]}
    bad.write_text(json.dumps(swapped) + "\n")
    with pytest.raises(BenchmarkError, match="option 1 is labelled 'B', expected 'A'"):
        load_benchmark("videomme", bad)
    bad.write_text(json.dumps({**row, "answer": "F"}) + "\n")
    with pytest.raises(BenchmarkError, match="answer must be one of"):
        load_benchmark("videomme", bad)


def test_videomme_from_the_hub_uses_the_datasets_seam(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(x) for x in (SAMPLES / "videomme/sample/videomme_test_sample.jsonl").open()]
    calls = []

    def fake_load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = load_benchmark("videomme", None)  # no --source: the original on the Hub
    assert calls == [("lmms-lab/Video-MME", "videomme", "test")]
    assert len(records) == 6 and records[0].video_id == "tmSmpl0001a"


def test_unreachable_hub_is_a_clear_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'lmms-lab/Video-MME' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkError, match="could not load lmms-lab/Video-MME.*offline"):
        load_benchmark("videomme", None)
    with pytest.raises(BenchmarkError, match="EgoTempo has no loadable original"):
        load_benchmark("egotempo", None)
    with pytest.raises(BenchmarkError, match="benchmark source not found: ./nowhere"):
        load_benchmark("egotempo", "./nowhere")


# --------------------------------------------------------------------------- EgoLife


@pytest.mark.parametrize(
    ("clock", "seconds"),
    [
        ("11094208", 11 * 3600 + 9 * 60 + 42 + 8 / 20),  # FF is a frame at 20 fps
        ("00000019", 19 / 20),
        ("23595900", 86399.0),
        ("01094208", 3600 + 9 * 60 + 42.4),
        (1094208, 3600 + 9 * 60 + 42.4),  # an integer lost its leading zero
    ],
)
def test_egolife_clock_is_hhmmssff_at_20_fps(clock, seconds):
    assert egolife.parse_clock(clock) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "clock", ["11096208", "11604208", "11094220", "25000000", "1109", "11:09:42", "abcdefgh"]
)
def test_egolife_bad_clocks_are_refused(clock):
    with pytest.raises(BenchmarkError, match="is not HHMMSSFF"):
        egolife.parse_clock(clock)


def test_egolife_stream_time_counts_days():
    assert egolife.stream_time("DAY1", "11094208") == pytest.approx(40182.4)
    assert egolife.stream_time("DAY2", "11094208") == pytest.approx(86400 + 40182.4)
    assert egolife.stream_time("day7", "00000000") == 6 * 86400
    with pytest.raises(BenchmarkError, match="not DAYn"):
        egolife.stream_time("MONDAY", "00000000")


def test_egolife_evidence_windows_from_time_and_time_list():
    t = egolife.stream_time
    assert egolife.evidence_windows({"date": "DAY1", "time": "11094208"}, "x") == (
        (t("DAY1", "11094208"),) * 2,
    )
    got = egolife.evidence_windows({"date": "DAY2", "time_list": ["17452010", "17100000"]}, "x")
    assert got == ((t("DAY2", "17100000"),) * 2, (t("DAY2", "17452010"),) * 2)  # sorted
    span = egolife.evidence_windows({"date": "DAY2", "time_list": ["20001000-20053000"]}, "x")
    assert span == ((t("DAY2", "20001000"), t("DAY2", "20053000")),)
    both = egolife.evidence_windows(
        [{"date": "DAY1", "time": "08000000"}, {"date": "DAY3", "time": "08000000"}], "x"
    )
    assert [a for a, _ in both] == [t("DAY1", "08000000"), t("DAY3", "08000000")]
    assert egolife.evidence_windows(None, "x") == ()
    with pytest.raises(BenchmarkError, match="neither 'time' nor 'time_list'"):
        egolife.evidence_windows({"date": "DAY1"}, "x")
    with pytest.raises(BenchmarkError, match="ends before it starts"):
        egolife.evidence_windows({"date": "DAY1", "time_list": ["12000000-11000000"]}, "x")


def test_egolife_sample_converts_to_one_stream_per_participant():
    records = load_benchmark("egolife", SAMPLES / "egolife" / "sample")
    assert [r.id for r in records] == [f"A1_JAKE_{i}" for i in range(1, 6)]
    assert {r.video_id for r in records} == {"A1_JAKE"}
    first = records[0]
    assert first.options == ("Milk", "Strawberries", "Eggs", "Cola") and first.answer == "B"
    assert first.task_type == "EventRecall"
    assert first.query_time == 12 * 3600
    assert first.evidence == ((40182.4, 40182.4),)
    assert first.meta["keywords"] == ["fridge", "strawberries"]  # comma string split
    assert records[2].meta["keywords"] == ["coffee", "morning"]  # list kept
    assert records[3].meta["need_audio"] is True
    assert len(records[1].evidence) == 2  # time_list
    assert records[4].evidence == ((86400 + 72010.0, 86400 + 72330.0),)  # a range
    for r in records:  # evidence precedes the question in the sample
        assert all(b <= r.query_time for _, b in r.evidence)
    assert {r.task_type for r in records} == set(egolife.TASK_TYPES)


def test_egolife_needs_to_know_the_participant(tmp_path):
    rows = json.loads((SAMPLES / "egolife/sample/EgoLifeQA_A1_JAKE.json").read_text())
    anonymous = tmp_path / "questions.json"
    anonymous.write_text(json.dumps(rows))
    with pytest.raises(BenchmarkError, match="cannot tell whose stream"):
        load_benchmark("egolife", anonymous)
    anonymous.write_text(json.dumps([{**r, "participant": "A3_TASHA"} for r in rows]))
    assert {r.video_id for r in load_benchmark("egolife", anonymous)} == {"A3_TASHA"}


def test_egolife_stream_manifest_lists_the_week(tmp_path):
    for name in [
        "DAY2/DAY2_A1_JAKE_09000000.mp4",
        "DAY1/DAY1_A1_JAKE_11094208.mp4",
        "DAY1/DAY1_A1_JAKE_11101208.mp4",
        "DAY1/DAY1_A2_ALICE_11094208.mp4",  # another participant
    ]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    manifest = egolife.stream_manifest(tmp_path, "A1_JAKE", duration=30.0)
    assert manifest["stream_id"] == "A1_JAKE"
    assert [(f["path"], f["start"]) for f in manifest["files"]] == [
        ("DAY1/DAY1_A1_JAKE_11094208.mp4", 40182.4),
        ("DAY1/DAY1_A1_JAKE_11101208.mp4", 40212.4),
        ("DAY2/DAY2_A1_JAKE_09000000.mp4", 86400 + 9 * 3600),
    ]
    assert all(f["duration"] == 30.0 for f in manifest["files"])
    with pytest.raises(BenchmarkError, match="no DAYn/DAYn_A9_NOBODY"):
        egolife.stream_manifest(tmp_path, "A9_NOBODY")


# --------------------------------------------------------------------------- EgoTempo


def test_egotempo_clip_ids():
    uid = "5f0c2a4e-8d1b-4c7e-9a36-2b7d1e90c4f1"
    assert egotempo.parse_clip_id(f"{uid}_368.4019995568589_403.56079044314106") == (
        uid,
        368.4019995568589,
        403.56079044314106,
    )
    assert egotempo.parse_clip_id(f"{uid}_5_20") == (uid, 5.0, 20.0)
    assert egotempo.parse_clip_id(f"{uid}_-0.1055_66.97") == (uid, -0.1055, 66.97)
    for bad in (uid, f"{uid}_20_5", f"{uid}_a_b", f"{uid}_5_5", f"{uid}_nan_5"):
        with pytest.raises(BenchmarkError, match="clip_id"):
            egotempo.parse_clip_id(bad)


def test_egotempo_sample_asks_at_the_end_of_each_clip():
    records = load_benchmark("egotempo", SAMPLES / "egotempo" / "sample" / "egotempo_openQA.json")
    assert len(records) == 5
    first = records[0]
    assert first.video_id == first.id.rsplit("_", 1)[0]  # clip_id
    assert first.answer_kind == "open" and first.options == ()
    assert first.answer == "A blue measuring tape."
    # Asked at the end of the clip: everything memorized from it is visible (no rounded time).
    assert all(r.query_time is None for r in records)
    assert first.meta == {
        "ego4d_uid": "5f0c2a4e-8d1b-4c7e-9a36-2b7d1e90c4f1",
        "clip_start": 12.5,
        "clip_end": 47.25,
        "clip_start_raw": 12.5,
    }
    # A published clip may start a hair below zero: clamped, the raw value kept.
    assert records[-1].meta["clip_start"] == 0.0
    assert records[-1].meta["clip_start_raw"] == pytest.approx(-0.10553267045454545)
    assert {r.task_type for r in records} <= {
        "object-specific action",
        "action-specific object",
        "temporal event ordering",
        "counting actions",
        "counting objects",
        "future action prediction",
    }
    assert not any(r.evidence for r in records)


# --------------------------------------------------------------------------- the record


def _record(**changes):
    base = dict(
        id="q",
        benchmark="videomme",
        video_id="v",
        question="?",
        options=("a", "b", "c", "d"),
        answer="B",
        answer_kind="choice",
        task_type="t",
        query_time=10.0,
        evidence=((1.0, 2.0),),
    )
    return QARecord(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"answer": "E"}, "answer must be one of"),
        ({"options": ("a", "b", "c", "d", "e")}, "needs 2-4 options"),
        ({"answer_kind": "essay"}, "answer_kind must be one of"),
        ({"answer_kind": "open"}, "free-form question has no options"),
        ({"query_time": -1.0}, "query_time must be a finite time"),
        ({"evidence": ((5.0, 2.0),)}, "evidence window"),
        ({"video_id": " "}, "'video_id' must be a non-empty string"),
        ({"meta": {"answer": "x"}}, "clash with common fields"),
    ],
)
def test_invalid_records_are_refused(changes, message):
    with pytest.raises(BenchmarkError, match=message):
        _record(**changes)


def test_record_row_round_trip():
    record = _record(meta={"duration": "short", "keywords": ["a", "b"]})
    row = record.to_row()
    assert row["options"] == ["a", "b", "c", "d"] and row["evidence"] == [[1.0, 2.0]]
    back = QARecord.from_row(json.loads(json.dumps(row)))
    assert back == record and back.meta == record.meta
    with pytest.raises(BenchmarkError, match="not a converted benchmark row"):
        QARecord.from_row({"id": "x"})


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("videomme", "videomme/sample"),
        ("egolife", "egolife/sample/EgoLifeQA_A1_JAKE.json"),
        ("egotempo", "egotempo/sample"),
    ],
)
def test_parquet_round_trip_through_load_benchmark(tmp_path, name, path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from taskmem_lab.bench.hub import to_arrow

    records = load_benchmark(name, SAMPLES / path)
    shard = tmp_path / name / "test-00000-of-00001.parquet"
    shard.parent.mkdir()
    pq.write_table(to_arrow(records), shard)
    back = load_benchmark(name, tmp_path)  # a published folder
    assert back == records
    assert [r.meta for r in back] == [r.meta for r in records]
    assert load_benchmark(name, shard) == records  # or one of its shards
    other = "egotempo" if name != "egotempo" else "videomme"
    with pytest.raises(BenchmarkError, match=f"holds \\['{name}'\\] questions, not '{other}'"):
        load_benchmark(other, tmp_path)
