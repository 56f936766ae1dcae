"""Ask a model for a JSON reply, and ask again when the reply cannot be parsed.

Floor 2: used by the memorizer, perception (ASR, speaker matching), judges and rewards alike.
The re-ask shows the model its own reply and what was wrong with it. A reply that could not be
parsed is dropped from the response cache, so a rerun asks again instead of replaying it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from taskmem_lab.backends.base import ChatModel, Message, Reply, Request
from taskmem_lab.backends.cache import forget
from taskmem_lab.errors import ParseError
from taskmem_lab.prompts import render

T = TypeVar("T")


@dataclass
class Asked:
    """The outcome of asking with re-asks: the parsed value and every reply on the way."""

    value: Any
    replies: list[Reply]
    problems: list[str]


def ask(
    model: ChatModel,
    request: Request,
    parse: Callable[[str], T],
    shape: str,
    reasks: int,
) -> Asked:
    """Ask, parse, and when the reply cannot be parsed, show it back and ask again."""
    replies: list[Reply] = []
    problems: list[str] = []
    for attempt in range(reasks + 1):
        reply = model.generate(request)
        replies.append(reply)
        try:
            return Asked(parse(reply.text), replies, problems)
        except ParseError as exc:
            forget(model, request)
            problems.append(str(exc))
            if attempt == reasks:
                break
            follow = Message.text("user", render("reask", problem=str(exc), shape=shape))
            request = Request(
                messages=(*request.messages, Message.text("assistant", reply.text), follow),
                sampling=request.sampling,
                purpose=request.purpose,  # a re-ask is still the same kind of question
            )
    # Every reply rides along, so a failed clip still records their usage and raw text.
    raise ParseError(
        f"unparseable reply after {reasks + 1} attempts: {'; '.join(problems)}", replies, problems
    )
