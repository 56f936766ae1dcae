"""Where local-model weights come from: a directory, or a Hugging Face hub id in the local cache.

Floor 2, shared by the `hf` and `vllm` backends. A name that looks like a path (`/`, `./`, `../`,
`~`) or exists on disk must be a directory holding a `config.json`. Anything else is a hub id that
the loading library downloads on first use; when the hub is switched off (`HF_HUB_OFFLINE`,
`TRANSFORMERS_OFFLINE`) and the id is not in the cache, the error says so before any loading
starts, naming the model and the cache directory. Failures while loading are turned into the same
kind of message by `load_error`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

from taskmem_lab.errors import ConfigError

T = TypeVar("T")

_TRUTHY = {"1", "true", "yes", "on"}


def hf_cache_dir() -> str:
    """The hub cache directory, read from the environment at call time (as huggingface_hub does)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def hub_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in _TRUTHY
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def is_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def cached_folder(repo_id: str, revision: str | None = None) -> str | None:
    """The cached snapshot folder of a hub id (where its `config.json` is), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            repo_id, "config.json", cache_dir=hf_cache_dir(), revision=revision
        )
    except ValueError:  # not a valid repo id
        return None
    return os.path.dirname(found) if isinstance(found, str) else None


def is_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the hub id's `config.json` is in the local cache (no network access)."""
    return cached_folder(repo_id, revision) is not None


def not_available(name: str, backend: str, why: str) -> str:
    return (
        f"{backend} model {name!r} {why}. The Hugging Face cache is {hf_cache_dir()} "
        f"(HF_HOME / HF_HUB_CACHE). Download it on a connected machine (`hf download {name}`) "
        f"and copy that cache here, or pass a local directory as {backend}:/path/to/model"
    )


def locate(name: str, backend: str, revision: str | None = None) -> str:
    """The directory or hub id to load; `ConfigError` when it cannot be available."""
    if is_local(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{backend} model directory not found: {path}")
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{backend} model directory {path} has no config.json "
                "(expected a checkpoint saved with save_pretrained)"
            )
        return str(path.resolve())
    if hub_offline() and not is_cached(name, revision):
        raise ConfigError(
            not_available(name, backend, "is not in the local cache and the hub is offline")
        )
    return name


def load_error(name: str, backend: str, exc: BaseException) -> ConfigError:
    """A `ConfigError` for a failure while loading weights or processor files."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if is_local(name):
        return ConfigError(f"{backend} model {name!r} could not be loaded: {first}")
    return ConfigError(not_available(name, backend, f"could not be loaded ({first})"))


class SharedWeights(Generic[T]):
    """Loaded weights keyed by their load settings, shared by every model instance that asks.

    An answerer and a judge on one checkpoint differ only in sampling, so they hold one copy of
    the weights (or one engine); `drop` forgets a copy, which is freed once no instance holds it.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, T] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The copy for `key`, loaded with `load()` by the first caller (others wait for it)."""
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)
