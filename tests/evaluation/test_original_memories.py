"""Memories as the original TaskMem scripts leave them on disk: evaluated in place with no extra
flags, imported into the run layout, and a wrong --tag or --memories is an error, not (no results)."""

import json
import pickle
from pathlib import Path

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.evaluate import MemoryLocator
from taskmem_lab.memory import Memory, import_memories, load_any
from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.original import write_original_memory

VIDEOMME = Path(__file__).resolve().parents[2] / "benchmarks" / "videomme" / "sample"
MEMORIES = {
    "tmSmpl0001a": [
        "The cook cracks three eggs into a glass bowl.",
        "She beats them with chopsticks.",
        "She pours them into a hot pan and the eggs sizzle.",
    ],
    "tmSmpl0002b": [
        "The crowd cheers while the teams warm up.",
        "The scoreboard reads 90 to 87.",
    ],
}


def original_layout(root, tag="taskmem_ep", test_time=()):
    for vid, texts in MEMORIES.items():
        folder = root / vid / ("test_time" if vid in test_time else "")
        write_original_memory(folder / f"{vid}_{tag}.pkl", texts)
    return root


def rows(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    return {r["id"]: (r["status"], r["prediction"]) for r in map(json.loads, lines)}


def eval_args(memories, out, *extra):
    return [
        "eval",
        "videomme",
        "--source",
        VIDEOMME,
        "--memories",
        memories,
        "--answerer",
        "openai:local-vlm",
        "--out",
        out,
        "-q",
        *extra,
    ]


@pytest.mark.slow
def test_original_layout_evaluates_with_no_extra_flags(tmp_path, server, api_config):
    mem = original_layout(tmp_path / "mem", test_time={"tmSmpl0002b"})
    out = tmp_path / "out"
    proc = taskmem(*eval_args(mem, out, "--tag", "taskmem_ep"))
    got = rows(out)
    assert got["901-1"] == ("answered", "B")  # the memory's clips, read from the pickle
    assert set(got) == {"901-1", "901-2", "901-3", "902-1", "902-2"}
    by_id = {json.loads(x)["video_id"]: json.loads(x) for x in (out / "results.jsonl").open()}
    assert by_id["tmSmpl0001a"]["context"]["memory"].endswith(
        "tmSmpl0001a/tmSmpl0001a_taskmem_ep.pkl"
    )
    assert "test_time/tmSmpl0002b_taskmem_ep.pkl" in by_id["tmSmpl0002b"]["context"]["memory"]
    assert "no memory for 1 question(s): 903-1" in proc.stdout
    prompt = server.requests[0]["messages"][1]["content"][0]["text"]
    assert "[00:00:10-00:00:20]" in prompt  # clip 1 of the original is [10 s, 20 s)
    # Without --tag, the tags found are named.
    proc = taskmem(*eval_args(mem, tmp_path / "o2"), check=False)
    assert proc.returncode == 2 and "taskmem_ep (original pickles)" in proc.stderr
    assert "pass --tag" in proc.stderr


@pytest.mark.slow
def test_a_wrong_tag_or_folder_is_an_error_naming_what_was_looked_for(tmp_path, server, api_config):
    mem = original_layout(tmp_path / "mem")
    for args in (["--tag", "taskmem_typo"], []):
        target = mem if args else tmp_path / "empty"
        target.mkdir(exist_ok=True)
        proc = taskmem(*eval_args(target, tmp_path / "out", *args), check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        (line,) = [x for x in proc.stderr.splitlines() if x.startswith("taskmem: error")]
        assert "no memory for any of the 6 question(s)" in line
        assert "tmSmpl0001a, tmSmpl0002b, tmSmpl0003c" in line
        assert str(target) in line and "check --memories and --tag" in line
        if args:
            assert "<video_id>_taskmem_typo.pkl" in line
    assert not server.requests
    assert not (tmp_path / "out").exists()


class Gadget:  # not one of the original's record classes
    pass


@pytest.mark.slow
def test_a_pickle_with_any_other_class_is_refused_in_eval(tmp_path, server, api_config):
    mem = original_layout(tmp_path / "mem")

    bad = pickle.dumps({"clips": ["x"], "extra": Gadget()})
    (mem / "tmSmpl0001a" / "tmSmpl0001a_taskmem_ep.pkl").write_bytes(bad)
    proc = taskmem(*eval_args(mem, tmp_path / "out", "--tag", "taskmem_ep"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "refusing to load" in proc.stderr and "Gadget" in proc.stderr


@pytest.mark.slow
def test_import_writes_runs_that_evaluate_the_same(tmp_path, server, api_config):
    mem = original_layout(tmp_path / "mem")
    proc = taskmem("import", mem, "--tag", "taskmem_ep", "--as", "orig", "--out", tmp_path / "runs")
    assert "tmSmpl0001a: 3 entries imported" in proc.stdout
    again = taskmem(
        "import", mem, "--tag", "taskmem_ep", "--as", "orig", "--out", tmp_path / "runs"
    )
    assert "tmSmpl0001a: 3 entries already imported" in again.stdout
    run = tmp_path / "runs" / "tmSmpl0001a" / "memory" / "orig"
    imported = Memory.load(run)
    direct = load_any(mem / "tmSmpl0001a" / "tmSmpl0001a_taskmem_ep.pkl")
    assert imported.entries == direct.entries
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["source"][0]["sha256"]) == 64
    taskmem(*eval_args(tmp_path / "runs", tmp_path / "a", "--tag", "orig"))
    taskmem(*eval_args(mem, tmp_path / "b", "--tag", "taskmem_ep"))
    assert rows(tmp_path / "a") == rows(tmp_path / "b")


@pytest.mark.slow
def test_import_of_a_missing_tag_is_one_line(tmp_path):
    mem = original_layout(tmp_path / "mem")
    proc = taskmem("import", mem, "--tag", "nope", "--out", tmp_path / "runs", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no original TaskMem memories with tag 'nope'" in proc.stderr
    assert import_memories(mem, "taskmem_ep", tmp_path / "r2", test_time=False)
    proc = taskmem(
        "import", mem, "--tag", "taskmem_ep", "--as", "../up", "--out", tmp_path / "r", check=False
    )
    assert proc.returncode == 2 and "'--as' is not" not in proc.stderr
    assert "--as '../up' is not a plain name" in proc.stderr and not (tmp_path / "up").exists()


def test_ids_and_tags_cannot_point_outside_the_memories_folder(tmp_path):
    (tmp_path / "mem").mkdir()
    locator = MemoryLocator(tmp_path / "mem", "t")
    assert locator.find("tmSmpl0001a") is None
    for bad in ("../outside", "a/b", "..", "a\\b"):
        with pytest.raises(ConfigError, match="not a plain name"):
            locator.find(bad)
    with pytest.raises(ConfigError, match="--tag '../x'"):
        MemoryLocator(tmp_path / "mem", "../x").find("v")
