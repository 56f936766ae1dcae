"""Backend options carried by a model spec after `?`, parsed into a backend's params dataclass.

Floor 2. `hf:/models/smol?max_new_tokens=256&dtype=float32` names the model `/models/smol` and
sets two fields of `HFParams`. Values are coerced by the dataclass field types (int, float, bool,
str, or any of them with `None`, written `none`); a key the dataclass does not have is an error
naming the allowed keys, so a typo never falls back to a default silently. The params' own
`__post_init__` then checks ranges and choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from taskmem_lab.errors import ConfigError

P = TypeVar("P")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def split_options(name: str) -> tuple[str, dict[str, str]]:
    """`NAME?k=v&k2=v2` -> (`NAME`, {k: v, k2: v2}); values are percent-decoded."""
    base, sep, query = name.partition("?")
    options: dict[str, str] = {}
    if not sep:
        return base, options
    if not query:
        raise ConfigError(f"model spec {name!r}: nothing after '?'; expected key=value pairs")
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(
                f"model spec {name!r}: option {pair!r} is not key=value (separate options with &)"
            )
        if key in options:
            raise ConfigError(f"model spec {name!r}: option {key!r} is given twice")
        options[key] = unquote(value.strip())
    return base, options


def _coerce(value: str, kind: Any, key: str, spec: str) -> Any:
    """`value` as the field type `kind` (a builtin scalar, or `X | None`)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if type(None) in args and value.lower() in _NONE:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported option type {kind!r} for {key}")
        kind = inner[0]
    try:
        if kind is bool:
            low = value.lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError(value)
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if kind is str:
            return value
    except ValueError:
        names = {bool: "true/false", int: "an integer", float: "a number"}
        raise ConfigError(
            f"model spec {spec!r}: option {key}={value!r} must be {names.get(kind, kind.__name__)}"
        ) from None
    raise TypeError(f"unsupported option type {kind!r} for {key}")


def params_from_options(
    cls: type[P],
    options: Mapping[str, str],
    spec: str,
    aliases: Mapping[str, str] | None = None,
) -> P:
    """An instance of the params dataclass `cls` with the given options applied."""
    aliases = aliases or {}
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for raw_key, raw in options.items():
        key = aliases.get(raw_key, raw_key)
        if key not in fields:
            allowed = ", ".join(sorted([*fields, *aliases]))
            raise ConfigError(
                f"model spec {spec!r}: unknown option {raw_key!r}; allowed: {allowed}"
            )
        if key in values:
            raise ConfigError(f"model spec {spec!r}: option {key!r} is given twice (alias)")
        values[key] = _coerce(raw, hints[key], key, spec)
    return cls(**values)


def _render(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return quote(str(value), safe="")


def canonical_options(params: Any) -> str:
    """`k=v&...` for the fields that differ from their defaults, sorted: a stable model-id suffix."""
    changed = []
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value != default:
            changed.append(f"{f.name}={_render(value)}")
    return "&".join(sorted(changed))


def model_id(backend: str, location: str, params: Any) -> str:
    """`backend:location[?options]`, the non-default options included so that two settings of one
    checkpoint never share cached replies."""
    options = canonical_options(params)
    return f"{backend}:{location}" + (f"?{options}" if options else "")


def check_option(ok: bool, cls_name: str, key: str, message: str) -> None:
    """Raise a `ConfigError` naming the option when a params check fails."""
    if not ok:
        raise ConfigError(f"{cls_name} option {key!r}: {message}")
