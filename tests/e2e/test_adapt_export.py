"""`taskmem adapt-export` as a user runs it: a steer file and a tiny base model in, a Phase-Two
checkpoint out that the `hf` backend steers exactly as `?steer=FILE` does."""

from __future__ import annotations

import json
import re

import pytest

from taskmem_lab.testing.command import taskmem

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

pytestmark = pytest.mark.slow  # subprocesses and a tiny real model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from taskmem_lab.testing.tiny_vlm import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("base"))


def test_adapt_export_writes_a_checkpoint_the_hf_backend_steers(base, tmp_path):
    from taskmem_lab.backends import make_model
    from taskmem_lab.backends.base import Message, Request, Sampling
    from taskmem_lab.backends.steer import read_checkpoint_steer, save_steer

    matrix = torch.zeros(2, 32)
    matrix[1] = 3 * torch.randn(32, generator=torch.Generator().manual_seed(0))
    path = save_steer(matrix, tmp_path / "steer.pt")
    out = tmp_path / "ckpt"
    proc = taskmem(
        "adapt-export", "--model", f"hf:{base}", "--steer", path, "--out", out,
        "--scale-layer", "1", "--scale", "1.5",
    )  # fmt: skip
    assert re.search(rf"checkpoint: {out} .*adapter layers \[1\]", proc.stdout), proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["adapter_layers"] == [1]
    expected = matrix.clone()
    expected[1] *= 1.5
    assert torch.equal(read_checkpoint_steer(out), expected)

    request = Request(
        (Message.text("user", "What happened?"),), Sampling(temperature=0.0, max_tokens=6)
    )
    ckpt = make_model(f"hf:{out}").generate(request)
    steered = make_model(f"hf:{base}?steer={path}&steer_scale=1.5").generate(request)
    plain = make_model(f"hf:{base}").generate(request)
    assert ckpt.text == steered.text != plain.text


def test_adapt_export_errors_are_one_line(base, tmp_path):
    cases = [
        (("--model", f"hf:{base}", "--steer", tmp_path / "none.pt"), "steer file not found"),
        (("--model", "openai:gpt-4o", "--steer", tmp_path / "s.pt"), "expected a checkpoint"),
        (("--model", f"hf:{base}?steer=x", "--steer", tmp_path / "s.pt"), "base checkpoint alone"),
        (("--model", f"hf:{base}", "--steer", tmp_path / "s.pt", "--scale-layer", "5"), "range"),
    ]
    from taskmem_lab.backends.steer import save_steer

    save_steer(torch.ones(2, 32), tmp_path / "s.pt")
    for args, why in cases:
        proc = taskmem("adapt-export", *args, "--out", tmp_path / "out", check=False)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("taskmem: error")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(errors) == 1 and why in errors[0], proc.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written
