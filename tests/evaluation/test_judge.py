"""Judging free-form answers: tolerant verdict parsing and the re-ask on an unreadable reply."""

import pytest

from taskmem_lab.backends.base import Reply, Request
from taskmem_lab.errors import ParseError
from taskmem_lab.evaluation.judge import judge, judge_request, parse_verdict


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ('{"correct": "yes", "score": 5, "reason": "same tool"}', (True, 5.0, "same tool")),
        (
            "{'pred': 'no', 'score': 1, 'reason': 'a different object'}",
            (False, 1.0, "a different object"),
        ),
        ("{'pred': 'yes', 'score': 4}", (True, 4.0, "")),
        (
            '```json\n{"correct": "no", "score": "2", "reason": "partly"}\n```',
            (False, 2.0, "partly"),
        ),
        (
            'Here is my grade: {"correct": true, "score": 4.5, "reason": "close"} Hope this helps.',
            (True, 4.5, "close"),
        ),
        ('{"Correct": "Yes", "Score": "4/5", "Reason": "fine"}', (True, 4.0, "fine")),
        ('{"correct": "incorrect", "score": 0, "explanation": "wrong"}', (False, 0.0, "wrong")),
        ("{'correct': 'yes', 'score': 3, 'reason': 'it\\'s close',}", (True, 3.0, "it's close")),
        (
            "correct: yes, score: 5 - the candidate names the same wrench",
            (True, 5.0, "correct: yes, score: 5 - the candidate names the same wrench"),
        ),
    ],
)
def test_judge_replies_in_many_shapes(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("", "empty"),
        ('{"score": 4}', "no 'correct' field"),
        ('{"correct": "yes"}', "no 'score' field"),
        ('{"correct": "maybe", "score": 3}', "must be yes or no"),
        ('{"correct": "yes", "score": 7}', "between 0 and 5"),
        ('{"correct": "yes", "score": "high"}', "must be a number"),
        ("The candidate is right.", "no 'correct' field"),
    ],
)
def test_unreadable_verdicts_say_why(reply, problem):
    with pytest.raises(ParseError, match=problem):
        parse_verdict(reply)


class ReplayModel:
    """Test double: replays canned replies in order and records the requests."""

    model_id = "replay:judge"

    def __init__(self, *texts):
        self.texts = list(texts)
        self.requests: list[Request] = []

    def generate(self, request):
        self.requests.append(request)
        return Reply(self.texts.pop(0), usage={"prompt_tokens": 10, "completion_tokens": 5})


def test_judge_request_is_our_prompt_at_temperature_zero():
    request = judge_request("Which tool?", "A red wrench.", "A wrench")
    system, user = (m.parts[0].text for m in request.messages)
    assert '"score"' in system and '"correct"' in system
    assert "REFERENCE ANSWER:\nA red wrench.\n\nCANDIDATE ANSWER:\nA wrench" in user
    assert request.sampling.temperature == 0.0 and request.purpose == "judge"


def test_an_unreadable_verdict_is_asked_again():
    model = ReplayModel("Looks right to me!", '{"correct": "yes", "score": 5, "reason": "ok"}')
    verdict = judge(model, "Which tool?", "A red wrench.", "A red wrench")
    assert verdict.status == "ok" and verdict.correct is True and verdict.score == 5.0
    assert len(model.requests) == 2 and model.requests[1].purpose == "judge"
    assert "Looks right to me!" in model.requests[1].messages[2].parts[0].text
    assert verdict.usage == {"prompt_tokens": 20, "completion_tokens": 10}
    assert verdict.raw == ["Looks right to me!", '{"correct": "yes", "score": 5, "reason": "ok"}']


def test_a_verdict_that_stays_unreadable_is_recorded_not_raised():
    model = ReplayModel("no idea", "still no idea")
    verdict = judge(model, "Which tool?", "A red wrench.", "Pliers")
    assert verdict.status == "unparseable" and verdict.correct is None and verdict.score is None
    assert len(verdict.problems) == 2 and verdict.to_json()["raw"] == ["no idea", "still no idea"]
