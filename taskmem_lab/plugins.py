"""User plug-in modules named by environment variables (`TASKMEM_*_BACKEND`).

Floor 0. The original tool let a user replace a perception step with a module of their own; a
plug-in is named by a dotted module name (`my_pkg.faces`) or a path to a `.py` file. Anything that
goes wrong while loading or calling it is a `PluginError` naming the variable and the module: a
broken plug-in must never look like "nothing found".
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskmem_lab.errors import PluginError


def import_plugin(env: str, spec: str) -> Any:
    """The module named by `spec` (dotted name or `.py` path), for the variable `env`."""
    try:
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise PluginError(f"{env}={spec!r}: no such file {path}")
            module_spec = importlib.util.spec_from_file_location(
                f"taskmem_plugin_{path.stem}", path
            )
            if module_spec is None or module_spec.loader is None:
                raise PluginError(f"{env}={spec!r}: cannot load {path} as a Python module")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - any error inside user code is reported, not hidden
        raise PluginError(
            f"{env}={spec!r} could not be imported: {type(exc).__name__}: {exc}"
        ) from exc


def plugin_function(env: str, spec: str, name: str) -> Callable[..., Any]:
    """The callable `name` of the plug-in module `spec`."""
    fn = getattr(import_plugin(env, spec), name, None)
    if not callable(fn):
        raise PluginError(f"{env}={spec!r} has no function {name}()")
    return fn


def call_plugin(env: str, spec: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a plug-in function; whatever it raises becomes a `PluginError`."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - user code: report whatever it raised
        name = getattr(fn, "__name__", "plug-in")
        raise PluginError(f"{env}={spec!r}: {name} failed: {type(exc).__name__}: {exc}") from exc
