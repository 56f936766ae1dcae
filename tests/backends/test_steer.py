"""Steer adapters (`taskmem_lab.backends.steer`): the file, the hooks, the identity, checkpoints.

Models are tiny random-weight decoders built from configs (`testing.tiny_vlm.tiny_decoder_model`:
3 text layers of width 16) for Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Idefics3, SmolVLM and a plain
Llama, so each family's real decoder-layer classes and module paths are exercised.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from urllib.parse import quote

import pytest

from taskmem_lab.errors import ConfigError, SteerError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from taskmem_lab.backends import steer  # noqa: E402 - after the extras check
from taskmem_lab.testing.tiny_vlm import TINY_FAMILIES, tiny_decoder_model  # noqa: E402

LAYERS, HIDDEN = 3, 16
LAYER_PATHS = {
    "qwen2_5_vl": "model.language_model.layers",
    "qwen3_vl": "model.language_model.layers",
    "qwen3_vl_moe": "model.language_model.layers",
    "idefics3": "model.text_model.layers",
    "smolvlm": "model.text_model.layers",
    "llama": "model.layers",
}


@pytest.fixture(scope="module")
def models() -> dict:
    return {family: tiny_decoder_model(family) for family in TINY_FAMILIES}


def token_ids(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 60, (2, 7), generator=g)


def random_steer(rows: tuple[int, ...], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    matrix = torch.zeros(LAYERS, HIDDEN)
    for i in rows:
        matrix[i] = torch.randn(HIDDEN, generator=g)
    return matrix


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# --------------------------------------------------------------------------- the steer file


def test_a_steer_file_round_trips_as_float32(tmp_path):
    matrix = random_steer((1,)).to(torch.bfloat16)
    path = steer.save_steer(matrix, tmp_path / "sub" / "steer.pt")
    loaded = steer.load_steer(path)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, matrix.float())
    assert list(torch.load(path, weights_only=True)) == ["matrix"]
    assert [p.name for p in path.parent.iterdir()] == ["steer.pt"]  # no temp file left


class Planted:  # a class a malicious pickle would instantiate
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "steer file not found"),
        (b"not a torch file", "not a torch file of tensors"),
        ({"weights": torch.zeros(3, 16)}, "must hold a dict with a 'matrix'"),
        ([torch.zeros(3, 16)], "must hold a dict"),
        ({"matrix": torch.zeros(16)}, r"must be \[num_layers, hidden_size\]"),
        ({"matrix": torch.zeros(3, 16, dtype=torch.int32)}, "must be floating point"),
        ({"matrix": torch.full((3, 16), float("nan"))}, "NaN or infinite"),
        ({"matrix": Planted()}, "not a torch file of tensors"),
    ],
)
def test_a_bad_steer_file_is_one_clear_error(tmp_path, content, why, capsys):
    path = tmp_path / "steer.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(SteerError, match=why) as err:
        steer.load_steer(path)
    assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)
    assert "code ran" not in capsys.readouterr().out  # weights_only: nothing unpickled


def test_layers_parse_and_resolve_against_the_matrix():
    assert steer.parse_layers("23, 22,22") == (22, 23)
    assert steer.parse_layers(None) is None
    for bad, why in [("a,b", "layer indices"), ("", "empty"), ("-1", ">= 0")]:
        with pytest.raises(SteerError, match=why):
            steer.parse_layers(bad)
    matrix = random_steer((0, 2))
    assert steer.resolve_layers(matrix, None) == (0, 2)
    assert steer.resolve_layers(matrix, [1]) == (1,)
    with pytest.raises(SteerError, match=r"out of range: the steer has 3 layers"):
        steer.resolve_layers(matrix, [3])
    assert steer.SteerSpec(layers=(2, 1)).layers == (1, 2)
    assert steer.SteerSpec().is_default and not steer.SteerSpec(scale=1.5).is_default
    with pytest.raises(SteerError, match="'file' is empty"):
        steer.SteerSpec(file=" ")


def test_the_identity_is_the_steer_actually_applied():
    matrix = random_steer((0, 2))
    same = steer.steer_identity(matrix)
    assert same == steer.steer_identity(matrix.clone(), layers=[0, 2], scale=1.0)
    assert same != steer.steer_identity(matrix, scale=1.5)
    assert same != steer.steer_identity(matrix, layers=[2])
    # Layer 2 scaled by 1.5 in the matrix itself is the same steer as steer_scale on that layer.
    prescaled = matrix.clone()
    prescaled[2] *= 1.5
    assert steer.steer_identity(prescaled, [2]) == steer.steer_identity(matrix, [2], 1.5)
    # Nothing added is the unsteered identity.
    assert steer.steer_identity(None) == steer.steer_identity(torch.zeros(3, 16)) == ""
    assert steer.steer_identity(matrix, scale=0) == steer.steer_identity(matrix, layers=[1]) == ""


# --------------------------------------------------------------------------- the hooks


@pytest.mark.slow  # builds or runs tiny real models
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_decoder_layers_are_the_text_layers_of_every_family(models, family):
    model = models[family]
    assert steer.decoder_layers_path(model) == LAYER_PATHS[family]
    layers = steer.decoder_layers(model)
    assert len(layers) == LAYERS and "DecoderLayer" in type(layers[0]).__name__
    assert steer.text_config(model).hidden_size == HIDDEN
    assert steer.text_config(model.config).num_hidden_layers == LAYERS


@pytest.mark.slow  # builds or runs tiny real models
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_zero_steer_changes_nothing(models, family):
    model, ids = models[family], token_ids()
    base = logits(model, ids)
    with steer.attach_steer(model, torch.zeros(LAYERS, HIDDEN), layers=[0, 1, 2]) as handle:
        assert handle.layers == (0, 1, 2)
        assert torch.equal(logits(model, ids), base)


@pytest.mark.slow  # builds or runs tiny real models
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_steer_shifts_exactly_the_chosen_layers_outputs_by_its_vector(models, family):
    model, ids = models[family], token_ids()
    layers = steer.decoder_layers(model)
    raw: dict[int, object] = {}
    seen: dict[int, object] = {}

    def capture(store, i):
        def hook(_m, _a, out):
            store[i] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        return hook

    matrix = random_steer((0, 2))
    # Hooks run in registration order: `raw` sees each layer's own output, `seen` what the
    # steer hook passed on.
    before = [m.register_forward_hook(capture(raw, i)) for i, m in enumerate(layers)]
    handle = steer.attach_steer(model, matrix, layers=[0, 2], scale=1.5)
    after = [m.register_forward_hook(capture(seen, i)) for i, m in enumerate(layers)]
    try:
        steered = logits(model, ids)
    finally:
        handle.remove()
        for h in before + after:
            h.remove()
    for i in range(LAYERS):
        shift = seen[i] - raw[i]
        expected = 1.5 * matrix[i] if i in (0, 2) else torch.zeros(HIDDEN)
        torch.testing.assert_close(shift, expected.expand_as(shift), atol=1e-5, rtol=0)
    assert not torch.allclose(steered, logits(model, ids))  # the shift reaches the logits
    assert torch.equal(logits(model, ids), logits(model, ids))  # and removing the hooks undid it


@pytest.mark.slow  # builds or runs tiny real models
def test_every_non_zero_row_is_steered_by_default(models):
    handle = steer.attach_steer(models["llama"], random_steer((1,)))
    handle.remove()
    assert handle.layers == (1,)


@pytest.mark.slow  # builds or runs tiny real models
def test_the_hooks_reference_a_trainable_matrix_and_can_be_switched_off(models):
    model, ids = models["qwen3_vl"], token_ids()
    base = logits(model, ids)
    matrix = torch.nn.Parameter(torch.zeros(LAYERS, HIDDEN))
    with steer.attach_steer(model, matrix, layers=[1]) as handle:
        with torch.no_grad():
            matrix[1] = torch.randn(HIDDEN)  # an in-place update reaches the next pass
        assert not torch.allclose(logits(model, ids), base)
        with handle.disabled():
            assert torch.equal(logits(model, ids), base)  # the zero-steer reference policy
        assert handle.enabled
        loss = model(input_ids=ids).logits.logsumexp(-1).mean()
        loss.backward()
    assert matrix.grad is not None
    assert matrix.grad[1].abs().sum() > 0
    assert matrix.grad[0].abs().sum() == 0 and matrix.grad[2].abs().sum() == 0
    assert torch.equal(logits(model, ids), base)


@pytest.mark.slow  # builds or runs tiny real models
def test_a_steer_of_the_wrong_shape_is_refused(models):
    with pytest.raises(SteerError, match=r"does not fit .*3 decoder layers of hidden size 16"):
        steer.attach_steer(models["idefics3"], torch.ones(4, HIDDEN))


def test_a_model_without_recognisable_layers_is_a_clear_error():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 2, "hidden_size": 4})()
            self.stack = torch.nn.ModuleList([torch.nn.Linear(4, 4)] * 2)

    with pytest.raises(SteerError, match="cannot find the text decoder layers of Odd"):
        steer.decoder_layers(Odd())


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for family in ("qwen3_vl", "idefics3"):
        path = tmp_path_factory.mktemp(family)
        models[family].save_pretrained(path)
        out[family] = path
    return out


@pytest.mark.slow  # builds or runs tiny real models
@pytest.mark.parametrize(
    ("family", "prefix"), [("qwen3_vl", "model.language_model."), ("idefics3", "model.text_model.")]
)
def test_export_writes_the_phase_two_layout_that_reads_back(saved, tmp_path, family, prefix):
    matrix = random_steer((1, 2))
    out = steer.export_checkpoint(
        saved[family], matrix, tmp_path / "ckpt", scale_layers=[2], scale=1.5
    )
    config = json.loads((out / "config.json").read_text())
    assert steer.text_config_dict(config)["adapter_layers"] == [1, 2]
    weight_map = json.loads((out / steer.INDEX_NAME).read_text())["weight_map"]
    names = [k for k in weight_map if k.endswith("adapter.steer")]
    assert names == [f"{prefix}layers.1.adapter.steer", f"{prefix}layers.2.adapter.steer"]
    assert not (out / steer.SINGLE_NAME).exists()  # transformers must read the index
    expected = matrix.clone()
    expected[2] *= 1.5
    assert torch.equal(steer.read_checkpoint_steer(out), expected)
    assert steer.read_checkpoint_steer(saved[family]) is None  # the base has no steer
    # The base folder is untouched.
    assert "adapter_layers" not in (saved[family] / "config.json").read_text()


@pytest.mark.slow  # builds or runs tiny real models
def test_transformers_loads_an_exported_checkpoint_as_its_base(saved, models, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = steer.export_checkpoint(saved["qwen3_vl"], random_steer((1,)), tmp_path / "ckpt")
    loaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    ids = token_ids()
    assert torch.equal(logits(loaded, ids), logits(models["qwen3_vl"], ids))


@pytest.mark.slow  # builds or runs tiny real models
def test_a_public_layout_with_all_layers_and_a_missing_vector_reads(saved, tmp_path):
    out = steer.export_checkpoint(saved["qwen3_vl"], random_steer((0, 1, 2)), tmp_path / "c")
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["adapter_layers"] == "all"
    config["text_config"]["adapter_layers"] = [0, 1]  # layer 2's vector is present but not built
    (out / "config.json").write_text(json.dumps(config))
    matrix = steer.read_checkpoint_steer(out)
    assert steer.nonzero_layers(matrix) == (0, 1)
    config["text_config"]["adapter_layers"] = "none"
    (out / "config.json").write_text(json.dumps(config))
    assert steer.read_checkpoint_steer(out) is None


@pytest.mark.slow  # builds or runs tiny real models
def test_export_refuses_what_would_be_a_broken_checkpoint(saved, tmp_path):
    base = saved["idefics3"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    for matrix, out, why in [
        (random_steer((1,)), busy, "not empty"),
        (torch.zeros(LAYERS, HIDDEN), tmp_path / "a", "all zero"),
        (torch.ones(LAYERS + 1, HIDDEN), tmp_path / "b", "does not fit"),
        (random_steer((1,)), base, "another folder"),
    ]:
        with pytest.raises(SteerError, match=why):
            steer.export_checkpoint(base, matrix, out)
    done = steer.export_checkpoint(base, random_steer((1,)), tmp_path / "c")
    with pytest.raises(SteerError, match="already a Phase-Two checkpoint"):
        steer.export_checkpoint(done, random_steer((1,)), tmp_path / "d")


def test_weight_names_map_to_layers():
    assert steer.steer_layer("model.language_model.layers.22.adapter.steer") == 22
    assert steer.steer_layer("model.text_model.layers.3.adapter.steer") == 3
    assert steer.steer_layer("layers.0.adapter.steer") == 0
    assert steer.steer_layer("model.language_model.layers.22.mlp.up_proj.weight") is None
    names = [
        "model.visual.blocks.0.attn.qkv.weight",
        "model.vision_model.encoder.layers.0.mlp.fc1.weight",
        *[f"model.text_model.layers.{i}.mlp.fc1.weight" for i in range(3)],
    ]
    assert steer.layer_prefix(names, 3) == "model.text_model."
    with pytest.raises(SteerError, match="cannot tell"):
        steer.layer_prefix(names, 4)


def test_pickle_module_is_what_torch_raises_for_planted_code(tmp_path):
    # Guard for the except clause in load_steer: weights_only refuses a planted global with an
    # UnpicklingError (were it another type, load_steer would let it escape).
    torch.save({"matrix": Planted()}, tmp_path / "p.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "p.pt", weights_only=True)


# --------------------------------------------------------------------------- the hf backend


def test_hf_steer_options_are_checked_before_anything_loads(tmp_path):
    from taskmem_lab.backends import hf

    with pytest.raises(ConfigError, match=r"option 'steer_layers'.*layer indices"):
        hf.HFParams(steer_layers="22;23")
    with pytest.raises(ConfigError, match=r"option 'steer_scale'.*finite"):
        hf.HFParams(steer_scale=float("inf"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="steer file not found"):
        hf.from_spec(f"{tmp_path}?steer={tmp_path / 'none.pt'}")


@pytest.fixture(scope="module")
def tiny_idefics3(tmp_path_factory) -> Path:
    from taskmem_lab.testing.tiny_vlm import build_tiny_idefics3

    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny_idefics3"))


def ask(spec: str, cache=None):
    from taskmem_lab.backends import make_model
    from taskmem_lab.backends.base import Message, Request, Sampling

    request = Request(
        (Message.text("user", "Describe the new span of the video."),),
        Sampling(temperature=0.0, max_tokens=8),
        purpose="qa",
    )
    model = make_model(f"hf:{spec}" + ("&" if "?" in spec else "?") + "device=cpu", cache)
    return model, model.generate(request)


def steer_file(tmp_path: Path, name: str, rows: tuple[int, ...], magnitude: float = 4.0) -> Path:
    hidden = 32  # the tiny Idefics3's text width
    matrix = torch.zeros(2, hidden)
    g = torch.Generator().manual_seed(len(name))
    for i in rows:
        matrix[i] = magnitude * torch.randn(hidden, generator=g)
    return steer.save_steer(matrix, tmp_path / name)


@pytest.mark.slow  # builds or runs the tiny real model
def test_hf_generation_with_a_steer_differs_and_a_zero_steer_does_not(tiny_idefics3, tmp_path):
    base_model, base = ask(str(tiny_idefics3))
    zero = steer_file(tmp_path, "zero.pt", ())
    one = steer_file(tmp_path, "one.pt", (1,))
    zero_model, zero_reply = ask(f"{tiny_idefics3}?steer={zero}")
    steered_model, steered = ask(f"{tiny_idefics3}?steer={one}")
    assert zero_reply.text == base.text and zero_reply.usage == base.usage
    assert steered.text != base.text
    # Identity: the unsteered models keep the bare model id; the steered one adds the steer hash.
    assert base_model.identity == zero_model.identity == {}
    assert steered_model.identity["steer"] == steer.steer_identity(steer.load_steer(one))
    # Runs record the identity and the response cache keys by it.
    from taskmem_lab.backends.base import identity_key, model_identity

    assert model_identity(steered_model)["steer"] == steered_model.identity["steer"]
    assert model_identity(zero_model) == {"model_id": zero_model.model_id}
    assert identity_key(base_model) == base_model.model_id != identity_key(steered_model)
    assert (
        steered_model.model_id == f"hf:{tiny_idefics3}?device=cpu&steer={quote(str(one), safe='')}"
    )
    # The weights are shared, and hooks never stay on them.
    assert steered_model.load() is base_model.load()
    assert ask(str(tiny_idefics3))[1].text == base.text


@pytest.mark.slow  # builds or runs the tiny real model
def test_a_steered_run_never_reuses_an_unsteered_reply(tiny_idefics3, tmp_path):
    from taskmem_lab.backends import ResponseCache

    cache = ResponseCache(tmp_path / "cache.sqlite")
    path = steer_file(tmp_path, "s.pt", (1,))
    _, first = ask(f"{tiny_idefics3}?steer={path}&steer_scale=0", cache)  # scale 0: unsteered
    _, plain = ask(str(tiny_idefics3), cache)
    _, steered = ask(f"{tiny_idefics3}?steer={path}", cache)
    _, again = ask(f"{tiny_idefics3}?steer={path}", cache)
    assert not first.cached and not plain.cached and plain.text == first.text
    assert not steered.cached and steered.text != plain.text
    assert again.cached and again.text == steered.text
    # The same spec with other steer contents is another key: the file is hashed, not named.
    steer.save_steer(2 * steer.load_steer(path), path)
    _, rewritten = ask(f"{tiny_idefics3}?steer={path}", cache)
    assert not rewritten.cached


@pytest.mark.slow  # builds or runs the tiny real model
def test_hf_on_an_exported_checkpoint_equals_the_base_with_the_steer_file(tiny_idefics3, tmp_path):
    path = steer_file(tmp_path, "layer1.pt", (1,), magnitude=2.0)
    ckpt = steer.export_checkpoint(
        tiny_idefics3, steer.load_steer(path), tmp_path / "ckpt", scale_layers=[1], scale=1.5
    )
    from_file_model, from_file = ask(f"{tiny_idefics3}?steer={path}&steer_scale=1.5")
    ckpt_model, from_ckpt = ask(str(ckpt))
    _, base = ask(str(tiny_idefics3))
    assert from_ckpt.text == from_file.text != base.text
    assert ckpt_model.identity["steer"] == from_file_model.identity["steer"]
    assert ask(f"{ckpt}?steer_scale=0")[1].text == base.text  # its own steer switched off
    with pytest.raises(ConfigError, match="there is no steer"):
        ask(f"{tiny_idefics3}?steer_layers=1")
    with pytest.raises(SteerError, match="out of range"):
        ask(f"{tiny_idefics3}?steer={path}&steer_layers=2")
    wrong = steer.save_steer(torch.ones(3, 32), tmp_path / "wrong.pt")
    with pytest.raises(SteerError, match=r"steer shape \(3, 32\) does not fit"):
        ask(f"{tiny_idefics3}?steer={wrong}")


def test_export_params_are_validated_and_sorted():
    p = steer.SteerExportParams(layers=[23, 22, 22], scale_layer=[22], scale=1.5)
    assert (p.layers, p.scale_layer, p.scale) == ((22, 23), (22,), 1.5)
    for bad, why in [({"layers": (-1,)}, "'layers'"), ({"scale_layer": (True,)}, "'scale_layer'")]:
        with pytest.raises(SteerError, match=why):
            steer.SteerExportParams(**bad)
    with pytest.raises(SteerError, match="'scale'"):
        steer.SteerExportParams(scale=float("nan"))
