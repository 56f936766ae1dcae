"""`fake`: a deterministic in-process responder for tests and the offline smoke profile.

It never looks at pixels. `fake:reader` answers questions by the rule in `fake_reader` (used by
the smoke profile so its figures have data). It answers by the request's `purpose` marker (the prompt it was built
from) with text derived from the request itself, and every answer starts with `[fake model]` and
carries `Reply.fake = True`, so nothing it writes can pass for model output.
"""

from __future__ import annotations

import hashlib
import json
import re

from taskmem_lab.backends.base import Reply, Request, TextPart, VideoPart, all_text

FAKE_MARK = "[fake model]"
_SPAN = re.compile(r"NEW SPAN: (\S+)-(\S+)")


class FakeModel:
    backend = "fake"
    video_mode = "frames"

    def __init__(self, name: str = "fake") -> None:
        self.model_id = f"fake:{name}"
        self.calls = 0

    def generate(self, request: Request) -> Reply:
        self.calls += 1
        user = request.messages[-1]
        text = all_text(user.parts)
        frames = sum(
            len(p.frames) for m in request.messages for p in m.parts if isinstance(p, VideoPart)
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        span = _SPAN.search(
            all_text([p for m in request.messages for p in m.parts if isinstance(p, TextPart)])
        )
        where = f"{span.group(1)}-{span.group(2)}" if span else "?"
        purpose = request.purpose
        body: dict[str, object]
        if purpose == "qa" and self.model_id == "fake:reader":
            from taskmem_lab.backends.fake_reader import reader_reply

            return Reply(
                text=reader_reply(text),
                usage={"prompt_tokens": len(text.split()), "completion_tokens": 12},
                model=self.model_id,
                backend=self.backend,
                fake=True,
            )
        if purpose == "semantic":
            body = {"knowledge": [f"{FAKE_MARK} statement about {where} ({digest})"]}
        elif purpose in ("episodic", "reask"):
            body = {
                "description": f"{FAKE_MARK} {frames} frames of {where} seen; request {digest}."
            }
        else:
            return Reply(
                text=_other_purpose(request),
                usage={"prompt_tokens": len(text.split()) + 85 * frames, "completion_tokens": 20},
                model=self.model_id,
                backend=self.backend,
                fake=True,
            )
        return Reply(
            text=json.dumps(body),
            usage={"prompt_tokens": len(text.split()) + 85 * frames, "completion_tokens": 20},
            model=self.model_id,
            backend=self.backend,
            fake=True,
        )


def _other_purpose(request: Request) -> str:
    """ASR, speaker matching, QA, judges and rewards: the same deterministic rules as the local
    test server (`testing/fake_openai_server.reply_for`), applied to the request as it would be
    sent, and marked as coming from the fake model."""
    from taskmem_lab.backends.openai_compat import to_openai_messages
    from taskmem_lab.testing.fake_openai_server import MARK, reply_for

    body = {"messages": to_openai_messages(request, "frames", "low")}
    return reply_for(body).replace(MARK, FAKE_MARK)


def from_spec(name: str) -> FakeModel:
    return FakeModel(name or "fake")
