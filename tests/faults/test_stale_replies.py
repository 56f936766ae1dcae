"""Run again to resume, with the response cache on: a reply that failed is asked again."""

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
