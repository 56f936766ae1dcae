"""Tolerant parsing of model replies into the JSON objects the prompts ask for.

Pure functions, tested with tables of malformed replies. `json_repair` mends fences, trailing
commas, single quotes and truncated objects; what still does not hold the expected key raises
`ParseError` with a reason the re-ask prompt can quote back to the model.
"""

from __future__ import annotations

import json
from typing import Any

import json_repair

from taskmem_lab.errors import ParseError


def parse_object(text: str) -> dict[str, Any]:
    """The first JSON object in `text`, repaired if needed."""
    if not text or not text.strip():
        raise ParseError("the reply was empty")
    try:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = json_repair.loads(text)
    except RecursionError:
        raise ParseError("the reply is nested too deeply to be a JSON object") from None
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, dict)), None)
    if not isinstance(value, dict):
        raise ParseError("the reply holds no JSON object")
    return value


def parse_description(text: str) -> str:
    """The non-empty `description` string of an episodic reply."""
    obj = parse_object(text)
    desc = obj.get("description")
    if not isinstance(desc, str):
        raise ParseError("the JSON object has no string field 'description'")
    if not desc.strip():
        raise ParseError("the field 'description' is empty")
    return desc.strip()


def parse_knowledge(text: str) -> list[str]:
    """The list of statements of a semantic reply (strings only, blanks dropped)."""
    obj = parse_object(text)
    items = obj.get("knowledge")
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list):
        raise ParseError("the JSON object has no list field 'knowledge'")
    return [s.strip() for s in items if isinstance(s, str) and s.strip()]
