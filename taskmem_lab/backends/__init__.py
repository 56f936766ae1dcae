"""Model clients: the `ChatModel` protocol, a registry of backends and the `make_model` factory.

A model spec is `BACKEND:NAME`: `openai:gpt-4o`, `openai:qwen3-vl#think`, `fake`. The registry is
a plain dict from backend prefix to a constructor taking the part after the colon.
"""

from __future__ import annotations

from collections.abc import Callable

from taskmem_lab.backends.base import ChatModel, Message, Reply, Request, Sampling
from taskmem_lab.backends.cache import CachedModel, ResponseCache, open_cache
from taskmem_lab.errors import ModelSpecError


def _openai(name: str) -> ChatModel:
    from taskmem_lab.backends import openai_compat

    return openai_compat.from_spec(name)


def _fake(name: str) -> ChatModel:
    from taskmem_lab.backends import fake

    return fake.from_spec(name)


def _hf(name: str) -> ChatModel:
    from taskmem_lab.backends import hf

    return hf.from_spec(name)


def _vllm(name: str) -> ChatModel:
    from taskmem_lab.backends import vllm

    return vllm.from_spec(name)


BACKENDS: dict[str, Callable[[str], ChatModel]] = {
    "openai": _openai,
    "fake": _fake,
    "hf": _hf,
    "vllm": _vllm,
}


def make_model(spec: str, cache: ResponseCache | None = None) -> ChatModel:
    """A model from its spec, wrapped in the response cache when one is given."""
    prefix, _, name = spec.partition(":")
    if prefix not in BACKENDS:
        known = ", ".join(f"{k}:NAME" for k in BACKENDS)
        raise ModelSpecError(f"unknown model spec {spec!r}: expected one of {known}")
    if prefix != "fake" and not name:
        raise ModelSpecError(f"model spec {spec!r} needs a name after '{prefix}:'")
    model = BACKENDS[prefix](name)
    return CachedModel(model, cache) if cache is not None else model


__all__ = [
    "BACKENDS",
    "CachedModel",
    "ChatModel",
    "Message",
    "Reply",
    "Request",
    "ResponseCache",
    "open_cache",
    "Sampling",
    "make_model",
]
