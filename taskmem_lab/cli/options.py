"""Command-line options generated from a stage's parameter dataclass.

Each field of a frozen params dataclass becomes one option: `--field-name`, its type (the
`X | None` of an optional field is `X`), its default, its help (the field's entry in the class
docstring's "Attributes:" section, or `field(metadata={"help": ...})`) and, where the field's
metadata names them, its choices. Booleans are switches: `--name` for a field that defaults to
False, `--no-name` for one that defaults to True. List fields take several values (`nargs`).
The default lives in the dataclass only; `params_from(cls, args)` builds the dataclass back,
by field name, from the parsed arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from functools import cache
from typing import Any, TypeVar, cast

T = TypeVar("T")

_ATTRIBUTE = re.compile(r"^(\s+)([a-z_][a-z0-9_]*(?:\s*,\s*[a-z_][a-z0-9_]*)*):\s*(.*)$")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the "Attributes:" section of `cls`'s docstring."""
    doc = cls.__doc__ or ""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            if out:
                break
            continue
        match = _ATTRIBUTE.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent = len(match.group(1))
            names = [n.strip() for n in match.group(2).split(",")]
            for name in names:
                out[name] = match.group(3).strip()
        elif names:
            for name in names:
                out[name] = f"{out[name]} {line.strip()}".strip()
    return out


def _unwrap(kind: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, whether None was allowed)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return kind, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def flag(name: str) -> str:
    """The option string of a field name (`evidence_pad_s` -> `--evidence-pad-s`)."""
    return "--" + name.replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
    aliases: Mapping[str, Iterable[str]] | None = None,
    helps: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one option per field of the dataclass `cls` to `parser`; returns the field names.

    `only` / `exclude` pick fields; `aliases` adds older option strings for a field (e.g.
    `{"frame_fps": ["--fps"]}`); `helps` replaces a field's help text for this command.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    added = []
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        kind, optional = _unwrap(hints[f.name])
        default = _default(f)
        text = (helps or {}).get(f.name) or f.metadata.get("help") or docs.get(f.name, "")
        text = text.rstrip(".")
        extra = list((aliases or {}).get(f.name, ()))
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        if kind is bool:
            if default:
                names = [flag(f"no_{f.name}"), *extra]
                kwargs.update(action="store_false", help=f"turn off: {text}" if text else None)
            else:
                names = [flag(f.name), *extra]
                kwargs.update(action="store_true", help=text or None)
        else:
            names = [flag(f.name), *extra]
            origin = typing.get_origin(kind)
            if origin in (list, tuple):
                inner = typing.get_args(kind)
                kwargs.update(nargs="*", type=inner[0] if inner else str)
            else:
                kwargs["type"] = kind if kind in (int, float, str) else str
            if "choices" in f.metadata:
                kwargs["choices"] = list(f.metadata["choices"])
            shown = _shown(default, optional)
            kwargs["help"] = f"{text} ({shown})" if shown else (text or None)
            kwargs["metavar"] = None if "choices" in kwargs else f.name.upper()
        parser.add_argument(*names, **kwargs)
        added.append(f.name)
    return added


def _shown(default: Any, optional: bool) -> str:
    if default is None:
        return ""
    if isinstance(default, list | tuple):
        return "default: " + " ".join(str(x) for x in default) if default else ""
    if isinstance(default, str) and not default:
        return ""
    return f"default: {default:g}" if isinstance(default, float) else f"default: {default}"


def params_from(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """An instance of the dataclass `cls` from the parsed options, field by field name.

    Fields the command has no option for keep their dataclass default; `overrides` win.
    """
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cast(Any, cls))
        if hasattr(args, f.name)
    }
    values.update(overrides)
    return cls(**values)
