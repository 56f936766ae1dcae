"""A vLLM plugin that serves Phase-Two checkpoints: steer adapters in Qwen3-VL decoder layers.

Floor 2. Registered as the general plugin `taskmem_steer` (pyproject
`[project.entry-points."vllm.general_plugins"]`), so `VLLM_PLUGINS=taskmem_steer vllm serve CKPT`
(or vLLM with no `VLLM_PLUGINS` set, which loads every installed plugin) runs it in each vLLM
process. `register()` points the architectures `Qwen3VLForConditionalGeneration` and
`Qwen3VLMoeForConditionalGeneration` at subclasses of vLLM's own classes, by lazy `module:Class`
names (nothing is imported until vLLM builds such a model). A subclass builds the model as vLLM
does, then, for each layer its text config's `adapter_layers` names (`"all"`, `"none"` or a list),
gives that decoder layer an `adapter` module holding a `steer` vector and makes the layer add it to
the hidden states it returns, as `backends.steer` does for transformers. A checkpoint without
`adapter_layers` runs exactly as the base model.

Weights named `...layers.<i>.adapter.steer` (`model.language_model.layers.<i>.adapter.steer` in
the public TaskMem checkpoints) are taken out of the weight stream before vLLM's loader sees them
and copied into the vectors (`vllm_param_name` gives the parameter's vLLM name); an adapted layer
with no stored vector adds zero. The `vllm` backend calls `register()` itself for a checkpoint with
`adapter_layers`. Needs vLLM (GPU); every vLLM import is inside a function.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from taskmem_lab.backends.steer import ADAPTER_LAYERS, STEER_SUFFIX, steer_layer
from taskmem_lab.errors import SteerError

log = logging.getLogger(__name__)

PLUGIN_NAME = "taskmem_steer"  # the entry point's name, as VLLM_PLUGINS lists it
# architecture -> (vLLM module, vLLM class); the steered class is named "TaskmemSteer" + class.
ARCHITECTURES = {
    "Qwen3VLForConditionalGeneration": (
        "vllm.model_executor.models.qwen3_vl",
        "Qwen3VLForConditionalGeneration",
    ),
    "Qwen3VLMoeForConditionalGeneration": (
        "vllm.model_executor.models.qwen3_vl_moe",
        "Qwen3VLMoeForConditionalGeneration",
    ),
}
CLASS_PREFIX = "TaskmemSteer"
# vLLM keeps the text model of both architectures at `language_model.model` (its
# `hf_to_vllm_mapper` maps the checkpoint's `model.language_model.` there).
VLLM_TEXT_MODEL = "language_model.model."


def register() -> None:
    """The plugin entry point: route the Qwen3-VL architectures to the steered classes."""
    from vllm import ModelRegistry

    for arch in ARCHITECTURES:
        ModelRegistry.register_model(arch, f"{__name__}:{CLASS_PREFIX}{arch}")


def adapted_layers(value: Any, num_layers: int) -> tuple[int, ...]:
    """The layers that get an adapter, from a text config's `adapter_layers` value."""
    if value is None or value == "none":
        return ()
    if value == "all":
        return tuple(range(num_layers))
    if isinstance(value, list | tuple) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_layers for i in value
    ):
        return tuple(sorted(set(value)))
    raise SteerError(
        f"{ADAPTER_LAYERS} must be 'all', 'none' or a list of layer indices below {num_layers}, "
        f"got {value!r}"
    )


def vllm_param_name(checkpoint_name: str) -> str | None:
    """The vLLM parameter a checkpoint's steer weight loads into, or None for other weights.

    `model.language_model.layers.22.adapter.steer` -> `language_model.model.layers.22.adapter.steer`.
    """
    layer = steer_layer(checkpoint_name)
    if layer is None:
        return None
    return f"{VLLM_TEXT_MODEL}layers.{layer}.{STEER_SUFFIX}"


def split_steer_weights(
    weights: Iterable[tuple[str, Any]], found: dict[int, Any]
) -> Iterator[tuple[str, Any]]:
    """Every weight but the steer vectors, which are put in `found` by layer as they pass."""
    for name, tensor in weights:
        layer = steer_layer(name)
        if layer is None:
            yield name, tensor
        else:
            found[layer] = tensor


def steered_layer_class(base: type) -> type:
    """A subclass of a vLLM decoder layer whose output hidden states get `adapter.steer` added.

    vLLM's layers return `(hidden_states, residual)`, summed by the next layer's fused norm;
    adding the vector to `hidden_states` adds it to the layer's output, as in transformers.
    """

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = base.forward(self, *args, **kwargs)
        steer = self.adapter.steer
        if isinstance(out, tuple):
            return (out[0] + steer, *out[1:])
        return out + steer

    return type(f"{CLASS_PREFIX}{base.__name__}", (base,), {"forward": forward})


def add_adapters(text_model: Any, text_config: Any) -> dict[int, Any]:
    """Give the adapted layers of a vLLM text model their `adapter.steer`; returns them by layer."""
    import torch

    layers = adapted_layers(
        getattr(text_config, ADAPTER_LAYERS, None), int(text_config.num_hidden_layers)
    )
    vectors: dict[int, Any] = {}
    for i in layers:
        layer = text_model.layers[i]
        if type(layer).__name__ == "PPMissingLayer":  # another pipeline stage holds it
            continue
        adapter = torch.nn.Module()
        adapter.steer = torch.nn.Parameter(  # default dtype and device: vLLM sets both
            torch.zeros(int(text_config.hidden_size)), requires_grad=False
        )
        layer.adapter = adapter
        layer.__class__ = steered_layer_class(type(layer))
        vectors[i] = adapter.steer
    if vectors:
        log.info("taskmem_steer: steer adapters on layers %s", sorted(vectors))
    return vectors


def load_steer_vectors(vectors: dict[int, Any], found: dict[int, Any]) -> set[str]:
    """Copy the checkpoint's vectors into the adapters; the vLLM names of every adapter."""
    unexpected = sorted(set(found) - set(vectors))
    if unexpected:  # as transformers ignores weights its model has no place for
        log.warning(
            "taskmem_steer: steer vectors for layers %s are outside %s; ignored",
            unexpected,
            ADAPTER_LAYERS,
        )
    for layer, param in vectors.items():
        if layer not in found:
            log.warning("taskmem_steer: no stored steer for adapted layer %d; it adds zero", layer)
            continue
        tensor = found[layer].reshape(-1)
        if tensor.numel() != param.numel():
            raise SteerError(
                f"steer vector of layer {layer} has {tensor.numel()} values, hidden size is "
                f"{param.numel()}"
            )
        param.data.copy_(tensor.to(dtype=param.dtype, device=param.device))
    return {f"{VLLM_TEXT_MODEL}layers.{i}.{STEER_SUFFIX}" for i in vectors}


def steered_model_class(arch: str) -> type:
    """The steered subclass of vLLM's class for `arch` (imports vLLM)."""
    import importlib

    module_name, class_name = ARCHITECTURES[arch]
    base = getattr(importlib.import_module(module_name), class_name)

    def __init__(self: Any, *, vllm_config: Any, prefix: str = "") -> None:
        base.__init__(self, vllm_config=vllm_config, prefix=prefix)  # vLLM passes its prefix
        text_config = vllm_config.model_config.hf_config.text_config
        self._taskmem_steer = add_adapters(self.language_model.model, text_config)

    def load_weights(self: Any, weights: Iterable[tuple[str, Any]]) -> set[str]:
        found: dict[int, Any] = {}
        loaded = set(base.load_weights(self, split_steer_weights(weights, found)))
        return loaded | load_steer_vectors(self._taskmem_steer, found)

    return type(
        f"{CLASS_PREFIX}{arch}",
        (base,),
        {"__init__": __init__, "load_weights": load_weights, "__module__": __name__},
    )


_classes: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """`TaskmemSteer<arch>`, built on first use: what vLLM's lazy registration imports."""
    arch = name.removeprefix(CLASS_PREFIX)
    if not name.startswith(CLASS_PREFIX) or arch not in ARCHITECTURES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if arch not in _classes:
        _classes[arch] = steered_model_class(arch)
    return _classes[arch]


def needs_plugin(config: dict[str, Any]) -> bool:
    """Whether a `config.json` is a Phase-Two checkpoint's (it sets `adapter_layers`, even to
    "none": its steer weights must still be kept from vLLM's own loader)."""
    from taskmem_lab.backends.steer import adapter_layers

    return adapter_layers(config) is not None
