"""`taskmem adapt`: pair files of both layouts, the DPO arithmetic, and steer training on a tiny
random-weight Idefics3 (real gradient steps) that must learn a systematic preference, resume after
a kill, and leave every row but `--layers` zero."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from taskmem_lab.errors import ConfigError
from taskmem_lab.testing.preference_pairs import signal_pairs, write_signal_pairs
from taskmem_lab.training.adapt import AdaptParams, step_row
from taskmem_lab.training.preference import (
    PairsFileError,
    batch_indices,
    load_pairs,
    split_pairs,
)

# --------------------------------------------------------------------------- pair files


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trl_conversational_rows_become_requests_and_completions(tmp_path):
    pairs = load_pairs(write_signal_pairs(tmp_path / "p.jsonl", 4, images=True))
    assert len(pairs) == 4
    p = pairs[0]
    assert [m.role for m in p.request.messages] == ["system", "user"]
    kinds = [type(part).__name__ for part in p.request.messages[1].parts]
    assert kinds == ["ImagePart", "TextPart"]
    assert p.request.messages[1].parts[0].jpeg[:2] == b"\xff\xd8"  # PNG re-encoded as JPEG
    assert p.chosen.startswith('{"description": ') and p.chosen != p.rejected
    assert len({q.group for q in pairs}) == 4


def test_a_folder_is_read_through_its_pairs_jsonl(tmp_path):
    write_signal_pairs(tmp_path / "pairs.jsonl", 3)
    assert [p.id for p in load_pairs(tmp_path)] == ["pair-0", "pair-1", "pair-2"]


def test_taskmem_pairs_rows_rebuild_the_memorizers_request(tmp_path):
    import numpy as np
    from PIL import Image

    frames = []
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / f"f{i}.jpg")
        frames.append(f"f{i}.jpg")
    video = {"type": "video", "frames": frames, "times": [0.0, 1.0], "fps": 1, "jpeg_quality": 85}
    row = {
        "id": "s*0*r0>r1",
        "stream": "s",
        "clip": 0,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You write memory."}]},
            {"role": "user", "content": [video, {"type": "text", "text": "Describe."}]},
        ],
        "sampling": {"temperature": 0.0, "max_tokens": 64, "top_p": None, "seed": None},
        "chosen": '{"description": "Anna puts the keys on the shelf."}',
        "rejected": '{"description": "Someone does something."}',
    }
    (pair,) = load_pairs(write_rows(tmp_path / "pairs.jsonl", [row]))
    assert pair.group == "s*0"
    assert [f.time for f in pair.request.messages[1].parts[0].frames] == [0.0, 1.0]
    (tmp_path / "f1.jpg").unlink()
    with pytest.raises(PairsFileError, match=r"pairs.jsonl:1: a frame file cannot be read"):
        load_pairs(tmp_path / "pairs.jsonl")


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ({"prompt": [{"role": "user", "content": "q"}], "chosen": "a"}, "no 'rejected' column"),
        ({"chosen": "a", "rejected": "b"}, "neither a `taskmem pairs` row"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "'prompt' must be a non-empty list"),
        ({"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "a"}, "same"),
        ({"prompt": [{"role": "user", "content": "q"}], "chosen": " ", "rejected": "b"}, "empty"),
        (
            {"prompt": [{"role": "user", "content": "q"}], "chosen": 3, "rejected": "b"},
            "'chosen' must be a string or a list",
        ),
        (
            {
                "prompt": [{"role": "user", "content": [{"type": "image"}]}],
                "chosen": "a",
                "rejected": "b",
            },
            "more image blocks than the 0 entries",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "images": ["x.png"],
                "chosen": "a",
                "rejected": "b",
            },
            "'images' has 1 entries but the prompt has 0",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "user", "content": "a"}],
                "rejected": "b",
            },
            "assistant messages only",
        ),
    ],
)
def test_bad_rows_name_their_line_and_fault(tmp_path, row, why):
    path = write_rows(tmp_path / "p.jsonl", [signal_pairs(1)[0], row])
    with pytest.raises(PairsFileError, match=rf"p.jsonl:2: .*{why}"):
        load_pairs(path)


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(PairsFileError, match="pair file not found"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(PairsFileError, match="holds no pairs.jsonl or pairs.parquet"):
        load_pairs(tmp_path)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(PairsFileError, match="holds no pairs"):
        load_pairs(tmp_path / "e.jsonl")
    (tmp_path / "j.jsonl").write_text('{"prompt": [\n')
    with pytest.raises(PairsFileError, match=r"j.jsonl:1 is not a JSON line"):
        load_pairs(tmp_path / "j.jsonl")
    rows = signal_pairs(2)
    rows[1]["id"] = rows[0]["id"]
    with pytest.raises(PairsFileError, match="appears more than once"):
        load_pairs(write_rows(tmp_path / "d.jsonl", rows))
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(PairsFileError, match="cannot be read as parquet"):
        load_pairs(tmp_path / "x.parquet")


def test_holdout_keeps_whole_prompts_out_and_batches_follow_seed_and_step(tmp_path):
    pairs = load_pairs(write_signal_pairs(tmp_path / "p.jsonl", 10))
    train, held = split_pairs(pairs, 0.3, seed=1)
    assert len(held) == 3 and len(train) == 7
    assert not {p.group for p in train} & {p.group for p in held}
    assert split_pairs(pairs, 0.3, seed=1) == (train, held)
    assert split_pairs(pairs, 0.0, seed=1) == (pairs, [])
    with pytest.raises(PairsFileError, match="at least two prompts"):
        split_pairs(pairs[:1], 0.2, seed=0)
    # every training pair once per epoch; the same (seed, step) draws the same batch
    epoch = [i for step in range(3) for i in batch_indices(9, 3, seed=0, step=step)]
    assert sorted(epoch) == list(range(9))
    assert batch_indices(9, 3, 0, 5) == batch_indices(9, 3, 0, 5)
    assert batch_indices(2, 8, 0, 0) in ([0, 1], [1, 0])


def test_dpo_loss_and_trl_metrics_by_hand():
    torch = pytest.importorskip("torch")
    from taskmem_lab.training.adapt import dpo_terms

    loss, c, r = dpo_terms(0.1, torch.tensor(-10.0), torch.tensor(-12.0), -11.0, -11.0)
    assert float(c) == pytest.approx(0.1) and float(r) == pytest.approx(-0.1)
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))))
    row = step_row(3, 0.5, [0.2, -0.1, 0.0], [0.1, 0.1, 0.0])
    assert row["reward_accuracy"] == pytest.approx(1 / 3)  # a tie is not a win
    assert row["margin"] == pytest.approx((0.1 - 0.2 + 0.0) / 3)


def test_params_are_validated():
    assert AdaptParams(layers=[23, 22, 22]).layers == (22, 23)
    for bad, name in [
        ({"layers": []}, "layers"),
        ({"layers": [-1]}, "layers"),
        ({"beta": 0}, "beta"),
        ({"lr": 0}, "lr"),
        ({"steps": 0}, "steps"),
        ({"holdout": 1.0}, "holdout"),
        ({"batch_size": 0}, "batch_size"),
    ]:
        with pytest.raises(ConfigError, match=f"'{name}'"):
            AdaptParams(**bad)


# --------------------------------------------------------------------------- the tiny model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from taskmem_lab.testing.tiny_vlm import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny_adapt"))


@pytest.mark.slow  # real gradient steps on a tiny model (a few seconds)
def test_adapt_learns_the_preference_on_held_out_prompts(tiny_model, tmp_path, capsys):
    from taskmem_lab.backends.steer import load_steer
    from taskmem_lab.cli import main

    pairs = write_signal_pairs(tmp_path / "pairs.jsonl", 40, seed=0)
    out = tmp_path / "adapt"
    argv = ["adapt", "--model", f"hf:{tiny_model}?device=cpu", "--pairs", str(pairs)]
    argv += ["--layers", "1", "--out", str(out), "--lr", "0.03", "--steps", "20"]
    argv += ["--batch-size", "4", "--holdout", "0.3", "-q"]
    assert main(argv) == 0
    assert "held-out reward accuracy" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    held = summary["held_out"]
    assert held["pairs"] == 12
    assert held["reward_accuracy"] >= 0.9
    assert held["mean_margin_rise"] > 0
    matrix = load_steer(out / "steer.pt")
    assert tuple(matrix.shape) == (2, 32)
    assert bool((matrix[0] == 0).all()) and bool((matrix[1] != 0).any())
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # zero steer = reference
    assert {"reward_accuracy", "chosen_reward", "rejected_reward", "margin"} <= set(rows[0])
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the spec pipeline.adapt hands back generates with the steer, unlike the base
    from taskmem_lab.backends import make_model
    from taskmem_lab.backends.base import Request, Sampling
    from taskmem_lab.pipeline import steered_spec

    ask = Request.chat(
        "You write episodic memory.", "Where did Anna put the keys?", Sampling(0.0, 12), "episodic"
    )
    spec = steered_spec(f"hf:{tiny_model}?device=cpu", out / "steer.pt")
    assert spec == f"hf:{tiny_model}?device=cpu&steer={out / 'steer.pt'}"
    base, steered = make_model(argv[2]), make_model(spec)
    assert base.generate(ask).text != steered.generate(ask).text
    # the same options again: nothing left to train, the same steer
    assert main(argv) == 0
    assert bool((load_steer(out / "steer.pt") == matrix).all())
    # other options on the same folder are refused, naming the setting
    assert main([*argv[:-1], "--beta", "0.2", "-q"]) == 2
    assert "params.beta" in capsys.readouterr().err


@pytest.mark.slow  # real gradient steps on a tiny model
def test_a_killed_run_resumes_to_the_steer_an_unbroken_run_trains(tiny_model, tmp_path):
    from taskmem_lab.backends.steer import load_steer
    from taskmem_lab.training import adapt as adapt_mod

    pairs = write_signal_pairs(tmp_path / "pairs.jsonl", 5, seed=3, images=True)
    params = AdaptParams(layers=(0,), lr=0.05, steps=3, batch_size=2, holdout=0.2, seed=2)
    spec = f"hf:{tiny_model}?device=cpu"
    whole = adapt_mod.adapt(spec, pairs, tmp_path / "whole", params, progress=False)

    real_save = adapt_mod.Trainer.save

    def killed_at_step_2(self, path, step):  # the row of step 2 is stored, its checkpoint not
        if step == 2:
            raise KeyboardInterrupt
        real_save(self, path, step)

    adapt_mod.Trainer.save = killed_at_step_2
    try:
        with pytest.raises(KeyboardInterrupt):
            adapt_mod.adapt(spec, pairs, tmp_path / "broken", params, progress=False)
    finally:
        adapt_mod.Trainer.save = real_save
    assert not (tmp_path / "broken" / "steer.pt").exists()
    resumed = adapt_mod.adapt(spec, pairs, tmp_path / "broken", params, progress=False)
    a = load_steer(tmp_path / "whole" / "steer.pt")
    b = load_steer(tmp_path / "broken" / "steer.pt")
    assert bool((a[1] == 0).all()) and bool((a[0] != 0).any())
    assert float((a - b).abs().max()) < 1e-6
    assert resumed["held_out"] == pytest.approx(whole["held_out"])
    steps = adapt_mod.read_steps(tmp_path / "broken")
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [json.loads(x)["step"] for x in (tmp_path / "broken" / "steps.jsonl").open()] == [
        1,
        2,
        2,
        3,
    ]  # step 2 was redone after the kill
