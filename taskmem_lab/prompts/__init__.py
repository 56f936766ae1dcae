"""Prompt files and their loader.

Prompts are plain text files beside this module, filled with `string.Template` (`$name`), so JSON
examples inside them need no escaping. Each model output row records `prompt_hash(name)`.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from string import Template


@cache
def load_prompt(name: str) -> str:
    """The text of `prompts/<name>.txt`."""
    path = resources.files(__package__).joinpath(f"{name}.txt")
    if not path.is_file():
        raise FileNotFoundError(f"no prompt named {name!r} in taskmem_lab/prompts")
    return path.read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """The prompt with its `$placeholders` filled; a missing value is an error."""
    return Template(load_prompt(name)).substitute(values)


def prompt_hash(name: str) -> str:
    return hashlib.sha256(load_prompt(name).encode()).hexdigest()[:12]
