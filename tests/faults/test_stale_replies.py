"""Run again to resume, with the response cache on: a reply that failed is asked again."""

import json
from pathlib import Path

import pytest

from taskmem_lab.backends import ResponseCache, make_model
from taskmem_lab.errors import ModelError
from taskmem_lab.evaluation.evaluate import answered
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.store import RunDir

PARAMS = MemorizeParams(interval=6, context_duration=6, frame_fps=1, reasks=1)


@pytest.mark.parametrize("shape", ["empty", "null_content", "malformed"])
def test_a_rerun_after_an_unusable_reply_asks_again_and_completes(
    media, tmp_path, server, api_config, shape
):
    stream = load_stream(media["silent"])
    cache = ResponseCache(tmp_path / "c.sqlite")
    out = str(tmp_path / "run")
    server.script(shape, shape)  # clip 0: the first ask and its re-ask
    with pytest.raises(ModelError, match="clip 0 .*run again to resume"):
        memorize(stream, make_model("openai:local-vlm", cache), PARAMS, out, progress=False)
    sent = len(server.requests)
    assert sent == 2

    run = memorize(stream, make_model("openai:local-vlm", cache), PARAMS, out, progress=False)
    assert len(server.requests) > sent, "the rerun replayed the failed replies from the cache"
    assert run.manifest()["status"] == "complete"
    assert sorted(RunDir(Path(out)).finished()) == [0, 1]


def test_an_empty_reply_is_never_stored_nor_served(tmp_path, server, api_config):
    from helpers import request

    cache = ResponseCache(tmp_path / "c.sqlite")
    server.script("empty")
    model = make_model("openai:local-vlm", cache)
    assert model.generate(request()).text == ""
    again = model.generate(request())
    assert not again.cached and again.text and len(server.requests) == 2
    assert model.generate(request()).cached and len(server.requests) == 2


def test_a_row_of_empty_replies_is_asked_again_but_words_are_kept():
    def row(*texts):
        samples = [{"text": t, "status": "unparseable"} for t in texts]
        return {"status": "unparseable", "answerer": {"samples": samples}}

    assert not answered(row("", "  "))
    assert answered(row("", "I would rather not pick one"))
    assert answered({"status": "answered", "answerer": {"samples": [{"text": ""}]}})


@pytest.mark.slow
def test_eval_asks_again_a_question_whose_reply_was_empty(tmp_path, server, api_config):
    from taskmem_lab.cli import main
    from taskmem_lab.schema import ClipRecord
    from taskmem_lab.store import memory_dir, open_run

    manifest = {"stream_id": "tmSmpl0001a", "model": "test", "params": {}, "source": []}
    run = open_run(memory_dir(tmp_path / "mem", "tmSmpl0001a", "m"), {**manifest, "tasks": None})
    run.append(ClipRecord(0, 0.0, 10.0, (0.0, 10.0), "ok", episodic="The cook cracks eggs."))
    source = Path(__file__).resolve().parents[2] / "benchmarks" / "videomme" / "sample"
    out = tmp_path / "out"
    args = ["eval", "videomme", "--source", str(source), "--memories", str(tmp_path / "mem")]
    args += ["--tag", "m", "--answerer", "openai:local-vlm", "--out", str(out), "-q"]
    args += ["--concurrency", "1"]
    server.script("empty")  # the first question's reply is an empty body
    assert main(args) == 0
    first = len(server.requests)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    empty = [r["id"] for r in rows if r["status"] == "unparseable"]
    assert len(empty) == 1 and len(rows) == first
    assert main(args) == 0
    assert len(server.requests) == first + 1, "only the question with the empty reply is asked"
    last = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert last["id"] == empty[0] and last["answerer"]["samples"][0]["text"]
