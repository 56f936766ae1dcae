"""Endpoint configuration for OpenAI-compatible servers, read from the file in `TASKMEM_API_CONFIG`.

Two formats are read.

Ours (YAML or JSON)::

    endpoints:
      gpt-4o:                       # the name used in a model spec: openai:gpt-4o
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY # the key stays in the environment
        model: gpt-4o               # model name sent to the server (default: the entry name)
        video: frames               # frames (JPEG images) | mp4 (inline video_url)
        max_concurrency: 8
        timeout: 120                # seconds one attempt may take, end to end
        max_retries: 6
        max_call_s: 300             # seconds one call may take, all retries together
      qwen3-vl:
        base_url: http://127.0.0.1:8000/v1
        api_key: EMPTY
        video: mp4
      azure-gpt-4o:
        api_type: azure
        azure_endpoint: https://example.openai.azure.com
        api_version: 2024-10-21
        api_key_env: AZURE_OPENAI_API_KEY

The original `api_config.json`: `{name: {azure_endpoint, api_version, api_key}}` or
`{name: [ {...}, {...} ]}`, one of the list picked at random per request.

Model spec suffixes: `name#effort#verbosity` (reasoning effort, verbosity) and `name#think`
(ask a Qwen-style server to think through `chat_template_kwargs`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from taskmem_lab.errors import ConfigError

ENV_VAR = "TASKMEM_API_CONFIG"
VIDEO_MODES = ("frames", "mp4")


@dataclass(frozen=True)
class Endpoint:
    """One server that can answer for a named model. `api_key` is resolved, never persisted."""

    name: str
    model: str
    api_type: str = "openai"  # "openai" | "azure"
    base_url: str | None = None
    azure_endpoint: str | None = None
    api_version: str | None = None
    api_key: str = ""
    video: str = "frames"
    max_concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 6
    backoff_s: float = 1.0
    image_detail: str = "auto"
    max_call_s: float = 300.0
    max_reply_bytes: int = 8 * 1024 * 1024  # a reply longer than this is refused, not stored

    @property
    def address(self) -> str:
        """The server's address as shown and stored: never with a `user:password@` part."""
        return strip_userinfo(self.base_url or self.azure_endpoint or "https://api.openai.com/v1")

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: the key and any user or password inside the address."""
        found = [self.api_key] if self.api_key and self.api_key != "EMPTY" else []
        for url in (self.base_url, self.azure_endpoint):
            parts = urlsplit(url or "")
            found += [x for x in (parts.username, parts.password) if x]
        return tuple(found)

    @property
    def identity(self) -> dict[str, Any]:
        """What answers for this endpoint: where, which served model, which API, how asked.

        Runs record it and the response cache keys by it (never the key, never timeouts).
        """
        return {
            "api_type": self.api_type,
            "address": self.address.rstrip("/"),
            "api_version": self.api_version,
            "model": self.model,
            "video": self.video,
            "image_detail": self.image_detail,
        }

    def __repr__(self) -> str:  # keep keys out of logs and tracebacks
        return f"Endpoint(name={self.name!r}, model={self.model!r}, address={self.address!r})"


@dataclass(frozen=True)
class SpecOptions:
    """What the `#` suffixes of a model spec ask for."""

    name: str
    effort: str | None = None
    verbosity: str | None = None
    think: bool = False


def strip_userinfo(url: str) -> str:
    """`url` without its `user:password@` part (`http://u:KEY@host/v1` -> `http://host/v1`)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def basic_auth(url: str | None) -> dict[str, str] | None:
    """The `Authorization: Basic` header a `user:password@` address asks for (as the HTTP
    client would send it), so the address itself can go to the client without them."""
    parts = urlsplit(url or "")
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def parse_spec_name(spec: str) -> SpecOptions:
    """`gpt-5#high#low` -> effort high, verbosity low; `qwen3-vl#think` -> think."""
    name, *rest = spec.split("#")
    if not name:
        raise ConfigError(f"model spec {spec!r} has no model name")
    if rest == ["think"]:
        return SpecOptions(name, think=True)
    if len(rest) > 2:
        raise ConfigError(f"model spec {spec!r}: expected name#effort#verbosity or name#think")
    effort = rest[0] or None if rest else None
    verbosity = rest[1] or None if len(rest) > 1 else None
    return SpecOptions(name, effort=effort, verbosity=verbosity)


def read_config(path: str | Path | None = None) -> dict[str, Any]:
    """The raw config from `path` or `$TASKMEM_API_CONFIG`."""
    where = path or os.environ.get(ENV_VAR)
    if not where:
        raise ConfigError(
            f"no endpoint config: set {ENV_VAR} to a YAML/JSON file describing your endpoints "
            "(see docs/models.md, section 'Endpoint files')"
        )
    p = Path(where)
    if not p.is_file():
        raise ConfigError(f"endpoint config not found: {p} (from {ENV_VAR})")
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"endpoint config {p} is not valid JSON/YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"endpoint config {p} is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ConfigError(f"endpoint config {p} must be a mapping of endpoint names")
    return data


def _resolve_key(entry: dict[str, Any], name: str) -> str:
    if entry.get("api_key_env"):
        var = entry["api_key_env"]
        key = os.environ.get(var)
        if not key:
            raise ConfigError(
                f"endpoint {name!r}: environment variable {var} (its API key) is not set"
            )
        return key
    if entry.get("api_key"):
        return str(entry["api_key"])
    raise ConfigError(f"endpoint {name!r}: no API key (give api_key_env or api_key)")


IMAGE_DETAILS = ("auto", "low", "high")
# key: (types, low, high) for the numeric settings; ranges are inclusive.
_NUMBERS: dict[str, tuple[tuple[type, ...], float, float]] = {
    "max_concurrency": ((int,), 1, 1024),
    "timeout": ((int, float), 0.1, 3600),
    "max_retries": ((int,), 0, 20),
    "backoff_s": ((int, float), 0, 600),
    "max_call_s": ((int, float), 1, 24 * 3600),
    "max_reply_bytes": ((int,), 1024, 1024**3),
}
_STRINGS = (
    "api_type",
    "base_url",
    "azure_endpoint",
    "api_version",
    "api_key",
    "api_key_env",
    "model",
    "deployment",
    "deployment_name",
    "video",
    "image_detail",
)
KNOWN_KEYS = frozenset(_NUMBERS) | frozenset(_STRINGS)


def _check_entry(name: str, entry: dict[str, Any]) -> None:
    """One line naming the field for an unknown key, a wrong type or a value out of range."""
    unknown = sorted(str(k) for k in entry if k not in KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"endpoint {name!r}: unknown field {unknown[0]!r} (known: {', '.join(sorted(KNOWN_KEYS))})"
        )
    for key, (types, low, high) in _NUMBERS.items():
        if key not in entry:
            continue
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, types):
            kind = "an integer" if types == (int,) else "a number"
            raise ConfigError(f"endpoint {name!r}: {key} must be {kind}, got {value!r}")
        number = float(cast(float, value))  # an int or a float: checked just above
        if not math.isfinite(number) or not low <= number <= high:
            raise ConfigError(f"endpoint {name!r}: {key} must be in {low}..{high}, got {value!r}")
    for key in _STRINGS:
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            if key == "api_version" and isinstance(entry[key], int | float):
                continue  # YAML reads 2024-10-21 as a date only when unquoted; numbers are fine
            raise ConfigError(
                f"endpoint {name!r}: {key} must be a string, got {type(entry[key]).__name__}"
            )
    if entry.get("image_detail", "auto") not in IMAGE_DETAILS:
        raise ConfigError(
            f"endpoint {name!r}: image_detail must be one of {IMAGE_DETAILS}, "
            f"got {entry['image_detail']!r}"
        )
    for key in ("base_url", "azure_endpoint"):
        url = entry.get(key)
        if url is not None and not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"endpoint {name!r}: {key} must start with http:// or https://")


def _endpoint(name: str, entry: dict[str, Any]) -> Endpoint:
    if not isinstance(entry, dict):
        raise ConfigError(f"endpoint {name!r} must be a mapping")
    if isinstance(entry.get("api_version"), dt.date):
        entry = {**entry, "api_version": entry["api_version"].isoformat()}
    _check_entry(name, entry)
    api_type = entry.get("api_type") or ("azure" if entry.get("azure_endpoint") else "openai")
    if api_type not in ("openai", "azure"):
        raise ConfigError(f"endpoint {name!r}: api_type must be openai or azure, got {api_type!r}")
    if api_type == "azure" and not entry.get("azure_endpoint"):
        raise ConfigError(f"endpoint {name!r}: azure endpoints need azure_endpoint")
    video = entry.get("video", "frames")
    if video not in VIDEO_MODES:
        raise ConfigError(f"endpoint {name!r}: video must be one of {VIDEO_MODES}, got {video!r}")
    extra = {k: entry[k] for k in (*_NUMBERS, "image_detail") if k in entry}
    api_version = entry.get("api_version")
    return Endpoint(
        name=name,
        model=str(
            entry.get("model") or entry.get("deployment") or entry.get("deployment_name") or name
        ),
        api_type=api_type,
        base_url=entry.get("base_url"),
        azure_endpoint=entry.get("azure_endpoint"),
        api_version=str(api_version)
        if api_version
        else ("2024-10-21" if api_type == "azure" else None),
        api_key=_resolve_key(entry, name),
        video=video,
        **extra,
    )


def endpoints_for(spec_name: str, config: dict[str, Any]) -> list[Endpoint]:
    """Endpoints that serve `spec_name` (full spec first, then the name without suffixes)."""
    table = config.get("endpoints", config)
    if not isinstance(table, dict):
        raise ConfigError("endpoint config: 'endpoints' must be a mapping")
    base = parse_spec_name(spec_name).name
    for key in (spec_name, base):
        if key in table:
            entries = table[key]
            entries = entries if isinstance(entries, list) else [entries]
            if not entries:
                raise ConfigError(f"endpoint {key!r} has an empty list")
            return [_endpoint(key, e) for e in entries]
    known = ", ".join(sorted(table)) or "none"
    raise ConfigError(f"no endpoint named {base!r} in the endpoint config (known: {known})")
