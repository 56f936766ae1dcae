"""The `taskmem_steer` vLLM plugin (`backends.vllm_steer`) without vLLM, and on a GPU with it.

Without vLLM: the entry point is declared and resolves to `register`, weight names map to vLLM's
parameter names, the adapter layers follow `adapter_layers`, a steered decoder layer adds its
vector to the hidden states it returns, and the steer weights are taken out of the weight stream
into the adapters. The vLLM-shaped layers here are `fake_` doubles returning `(hidden, residual)`
as vLLM's do. The `gpu` test serves an exported checkpoint with vLLM itself.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

import pytest
import tomllib

from taskmem_lab.backends import vllm_steer
from taskmem_lab.errors import SteerError

ROOT = Path(__file__).resolve().parents[2]
GPU_MODEL_ENV = "TASKMEM_TEST_VLLM_MODEL"
GPU_DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"


def test_the_entry_point_is_declared_and_resolves_to_register():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    plugins = project["project"]["entry-points"]["vllm.general_plugins"]
    target = plugins[vllm_steer.PLUGIN_NAME]
    module, _, function = target.partition(":")
    assert getattr(importlib.import_module(module), function) is vllm_steer.register


def test_checkpoint_steer_names_map_to_vllm_parameters():
    name = vllm_steer.vllm_param_name
    assert name("model.language_model.layers.22.adapter.steer") == (
        "language_model.model.layers.22.adapter.steer"
    )
    assert name("model.language_model.layers.0.adapter.steer") == (
        "language_model.model.layers.0.adapter.steer"
    )
    assert name("model.language_model.layers.22.mlp.down_proj.weight") is None
    assert name("model.visual.blocks.0.attn.qkv.weight") is None
    assert name("lm_head.weight") is None


def test_adapter_layers_follow_the_config():
    assert vllm_steer.adapted_layers(None, 4) == ()
    assert vllm_steer.adapted_layers("none", 4) == ()
    assert vllm_steer.adapted_layers("all", 3) == (0, 1, 2)
    assert vllm_steer.adapted_layers([3, 1, 1], 4) == (1, 3)
    for bad in ([4], [True], "22", [-1]):
        with pytest.raises(SteerError, match="adapter_layers must be"):
            vllm_steer.adapted_layers(bad, 4)
    assert vllm_steer.needs_plugin({"text_config": {"num_hidden_layers": 2, "adapter_layers": [1]}})
    assert not vllm_steer.needs_plugin({"text_config": {"num_hidden_layers": 2}})
    assert vllm_steer.needs_plugin({"adapter_layers": "none", "num_hidden_layers": 2})


def test_register_names_lazy_classes_of_this_module(monkeypatch):
    calls = []
    fake_vllm = types.ModuleType("vllm")
    fake_vllm.ModelRegistry = types.SimpleNamespace(
        register_model=lambda arch, target: calls.append((arch, target))
    )
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    vllm_steer.register()
    assert calls == [
        (arch, f"taskmem_lab.backends.vllm_steer:TaskmemSteer{arch}")
        for arch in ("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration")
    ]
    with pytest.raises(AttributeError):
        vllm_steer.TaskmemSteerLlamaForCausalLM  # noqa: B018 - not an architecture it steers


def test_the_in_process_backend_adds_the_plugin_to_a_plugin_list(monkeypatch):
    from taskmem_lab.backends import vllm as vllm_backend

    registered = []
    monkeypatch.setattr(vllm_steer, "register", lambda: registered.append(True))
    monkeypatch.setenv("VLLM_PLUGINS", "other")
    vllm_backend.enable_steer_plugin()
    assert os.environ["VLLM_PLUGINS"] == "other,taskmem_steer" and registered
    monkeypatch.delenv("VLLM_PLUGINS")
    vllm_backend.enable_steer_plugin()
    assert "VLLM_PLUGINS" not in os.environ  # unset: vLLM loads every installed plugin


# --------------------------------------------------------------------------- with torch

torch = pytest.importorskip("torch")


class fake_vllm_layer(torch.nn.Module):  # noqa: N801 - test doubles are named fake_
    """Returns `(hidden_states, residual)` as vLLM's decoder layers do."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(hidden, hidden)

    def forward(self, positions, hidden_states, residual):
        residual = hidden_states if residual is None else hidden_states + residual
        return self.proj(hidden_states), residual


class PPMissingLayer(torch.nn.Identity):
    """Named as vLLM's placeholder for a layer that another pipeline stage holds."""


def fake_text_model(hidden: int = 8, layers: int = 3, missing: int | None = None):
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(
        PPMissingLayer() if i == missing else fake_vllm_layer(hidden) for i in range(layers)
    )
    return model


def config(adapter_layers, hidden: int = 8, layers: int = 3):
    return types.SimpleNamespace(
        adapter_layers=adapter_layers, num_hidden_layers=layers, hidden_size=hidden
    )


def test_a_steered_layer_adds_its_vector_to_the_hidden_states_it_returns():
    torch.manual_seed(0)
    model = fake_text_model()
    x, positions = torch.randn(5, 8), torch.arange(5)
    before = [layer(positions, x, None) for layer in model.layers]
    vectors = vllm_steer.add_adapters(model, config([0, 2]))
    assert sorted(vectors) == [0, 2]
    with torch.no_grad():
        vectors[2].copy_(torch.arange(8.0))
    after = [layer(positions, x, None) for layer in model.layers]
    for i in range(3):
        shift = after[i][0] - before[i][0]
        expected = torch.arange(8.0) if i == 2 else torch.zeros(8)
        torch.testing.assert_close(shift, expected.expand_as(shift))
        torch.testing.assert_close(after[i][1], before[i][1])  # the residual is untouched
    names = dict(model.named_parameters())
    assert "layers.2.adapter.steer" in names and "layers.1.adapter.steer" not in names
    assert isinstance(model.layers[2], fake_vllm_layer)  # still the layer vLLM built


def test_no_adapter_layers_leaves_the_model_as_it_was():
    model = fake_text_model(missing=1)
    assert vllm_steer.add_adapters(model, config(None)) == {}
    assert sorted(vllm_steer.add_adapters(model, config("all"))) == [0, 2]  # 1: other stage
    assert type(model.layers[1]) is PPMissingLayer


def test_steer_weights_leave_the_stream_and_fill_the_adapters(caplog):
    model = fake_text_model()
    vectors = vllm_steer.add_adapters(model, config([1, 2]))
    stream = [
        ("model.language_model.layers.0.mlp.weight", torch.ones(2)),
        (
            "model.language_model.layers.1.adapter.steer",
            torch.full((8,), 1.5, dtype=torch.bfloat16),
        ),
        ("lm_head.weight", torch.ones(2)),
    ]
    found: dict = {}
    rest = [n for n, _ in vllm_steer.split_steer_weights(iter(stream), found)]
    assert rest == ["model.language_model.layers.0.mlp.weight", "lm_head.weight"]
    loaded = vllm_steer.load_steer_vectors(vectors, found)
    assert loaded == {
        "language_model.model.layers.1.adapter.steer",
        "language_model.model.layers.2.adapter.steer",
    }
    assert torch.equal(vectors[1], torch.full((8,), 1.5))
    assert not vectors[2].any() and "layer 2" in caplog.text  # no stored vector: adds zero
    vllm_steer.load_steer_vectors(vectors, {0: torch.ones(8)})  # not adapted: ignored
    assert "layers [0] are outside adapter_layers" in caplog.text
    with pytest.raises(SteerError, match="has 4 values, hidden size is 8"):
        vllm_steer.load_steer_vectors(vectors, {1: torch.ones(4)})


def test_a_steered_class_needs_vllm():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    vllm_steer._classes.clear()
    with pytest.raises(ImportError):
        vllm_steer.TaskmemSteerQwen3VLForConditionalGeneration  # noqa: B018


@pytest.mark.slow  # builds a tiny real model
def test_the_vllm_backend_identity_carries_a_checkpoints_steer(tmp_path):
    pytest.importorskip("transformers")
    from taskmem_lab.backends import steer
    from taskmem_lab.backends.vllm import VllmModel
    from taskmem_lab.testing.tiny_vlm import tiny_decoder_model

    base = tmp_path / "base"
    tiny_decoder_model("qwen3_vl").save_pretrained(base)
    matrix = torch.zeros(3, 16)
    matrix[1] = 1.0
    ckpt = steer.export_checkpoint(base, matrix, tmp_path / "ckpt")
    assert VllmModel(str(base)).identity == {}
    identity = VllmModel(str(ckpt)).identity
    assert identity == {"model_id": f"vllm:{ckpt}", "steer": steer.steer_identity(matrix)}


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_vllm_serves_an_exported_checkpoint_with_its_steer(tmp_path):
    """A small Qwen3-VL (`$TASKMEM_TEST_VLLM_MODEL`, default Qwen3-VL-2B-Instruct) exported with a
    strong steer on one layer: vLLM's greedy reply differs from the base model's, and the same
    checkpoint with the steer's `adapter_layers` set to "none" answers as the base does."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    pytest.importorskip("vllm")
    pytest.importorskip("qwen_vl_utils")
    from taskmem_lab.backends import make_model, steer, weights
    from taskmem_lab.backends.base import Message, Request, Sampling
    from taskmem_lab.backends.hf import base_folder

    name = os.environ.get(GPU_MODEL_ENV, GPU_DEFAULT_MODEL)
    if not weights.is_local(name) and not weights.is_cached(name):
        pytest.skip(f"{name} is not in the Hugging Face cache ({weights.hf_cache_dir()})")
    base = base_folder(f"hf:{name}")
    text = steer.text_config_dict(json.loads((base / "config.json").read_text()))
    layers, hidden = int(text["num_hidden_layers"]), int(text["hidden_size"])
    matrix = torch.zeros(layers, hidden)
    matrix[layers // 2] = 8.0 * torch.randn(hidden, generator=torch.Generator().manual_seed(0))
    ckpt = steer.export_checkpoint(base, matrix, tmp_path / "ckpt")
    off = tmp_path / "off"
    off.mkdir()
    for item in ckpt.iterdir():
        (off / item.name).symlink_to(item)
    config = json.loads((ckpt / "config.json").read_text())
    steer.text_config_dict(config)["adapter_layers"] = "none"
    (off / "config.json").unlink()
    (off / "config.json").write_text(json.dumps(config))
    question = Request(
        (Message.text("user", "Name three colours of the rainbow."),),
        Sampling(temperature=0.0, max_tokens=24),
    )
    options = "?max_model_len=4096&gpu_memory_utilization=0.25&temperature=0&enforce_eager=true"
    replies = {}
    for label, folder in (("base", base), ("steered", ckpt), ("off", off)):
        model = make_model(f"vllm:{folder}{options}")
        replies[label] = model.generate(question).text
        model.close()
        import gc

        gc.collect()
        torch.cuda.empty_cache()
    assert replies["steered"] != replies["base"]
    assert replies["off"] == replies["base"]
