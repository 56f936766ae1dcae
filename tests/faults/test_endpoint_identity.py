"""An endpoint name is what it points at: cache keys and run resumes follow the resolved server."""

import json

import pytest
from helpers import one_line_error, request

from taskmem_lab.backends import ResponseCache, make_model
from taskmem_lab.store import RunDir
from taskmem_lab.testing.command import taskmem
from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer, write_config


def test_a_second_server_behind_the_same_name_is_asked(tmp_path, monkeypatch):
    cfg = tmp_path / "e.yaml"
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(cfg))
    cache = ResponseCache(tmp_path / "c.sqlite")
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        write_config(str(cfg), a)
        make_model("openai:local-vlm", cache).generate(request())
        again = make_model("openai:local-vlm", cache).generate(request())
        assert again.cached and len(a.requests) == 1
        write_config(str(cfg), b)  # same name, another server
        reply = make_model("openai:local-vlm", cache).generate(request())
        assert not reply.cached and len(b.requests) == 1
        write_config(str(cfg), b, model="another-model")  # same server, another served model
        reply = make_model("openai:local-vlm", cache).generate(request())
        assert not reply.cached and len(b.requests) == 2


@pytest.mark.slow
def test_resume_on_another_server_is_refused_unless_allowed(media, tmp_path, monkeypatch):
    cfg = tmp_path / "e.yaml"
    env = {"TASKMEM_API_CONFIG": str(cfg)}
    args = ["memorize", media["silent"], "--model", "openai:local-vlm", "--interval", "4"]
    args += ["--context-duration", "8", "--no-cache", "-q", "--out", tmp_path, "--tag", "m"]
    run = RunDir(tmp_path / "silent" / "memory" / "m")
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        write_config(str(cfg), a, timeout=2.0, max_retries=0)
        a.script("ok", "ok", "500")  # clip 2 fails: the run stops there
        taskmem(*args, env=env, check=False)
        assert sorted(run.finished()) == [0, 1]
        manifest = run.manifest()
        assert manifest["endpoint"]["endpoints"][0]["address"] == a.base_url

        write_config(str(cfg), b, timeout=2.0, max_retries=0)
        proc = taskmem(*args, env=env, check=False)
        one_line_error(proc, r"different 'endpoint'.*--allow-model-change")
        assert not b.requests

        taskmem(*args, "--allow-model-change", env=env)
        assert len(b.requests) == 1
    done = run.finished()
    assert sorted(done) == [0, 1, 2]
    assert done[1].endpoint["endpoints"][0]["address"] == a.base_url
    assert done[2].endpoint["endpoints"][0]["address"] == b.base_url
    manifest = json.loads(run.manifest_path.read_text())
    (switch,) = manifest["model_changes"]
    assert switch["at_clip"] == 2
    assert switch["from"]["endpoint"]["endpoints"][0]["address"] == a.base_url
    assert switch["to"]["endpoint"]["endpoints"][0]["address"] == b.base_url
    assert manifest["endpoint"]["endpoints"][0]["address"] == b.base_url


@pytest.mark.slow
def test_eval_resume_on_another_server_is_refused(tmp_path):
    from pathlib import Path

    from taskmem_lab.schema import ClipRecord
    from taskmem_lab.store import memory_dir, open_run

    sample = Path(__file__).resolve().parents[2] / "benchmarks" / "videomme" / "sample"
    manifest = {"stream_id": "tmSmpl0001a", "model": "t", "params": {}, "source": [],
                "prompts": {}, "tasks": None}  # fmt: skip
    run = open_run(memory_dir(tmp_path / "mem", "tmSmpl0001a", "m"), manifest)
    run.append(ClipRecord(0, 0.0, 10.0, (0.0, 10.0), "ok", episodic="The cook cracks eggs."))
    cfg = tmp_path / "e.yaml"
    env = {"TASKMEM_API_CONFIG": str(cfg)}
    args = ["eval", "videomme", "--source", sample, "--memories", tmp_path / "mem", "--tag", "m"]
    args += ["--answerer", "openai:local-vlm", "--no-cache", "-q", "--out", tmp_path / "res"]
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        write_config(str(cfg), a)
        taskmem(*args, env=env)
        write_config(str(cfg), b)
        proc = taskmem(*args, env=env, check=False)
        one_line_error(proc, r"different 'answerer_endpoint")
        assert not b.requests
