"""`fake:reader`: the smoke profile's answerer reads the memory by a fixed rule."""

import json

from taskmem_lab.backends import Message, Request, make_model
from taskmem_lab.backends.fake_reader import reader_reply


def qa_text(memory: str, options: str | None) -> str:
    opts = f"OPTIONS:\n{options}\n" if options is not None else ""
    return (
        f"MEMORY (full memory):\n{memory}\n\nQUESTION (asked at 00:01:00):\nWhere is the ball?\n"
        f'{opts}\nReply with {{"answer": "<letter>"}}.'
    )


OPTIONS = "A. Under the kitchen table\nB. In the blue bowl\nC. On the fence\nD. By the door\nE. Cannot tell from memory"


def answer(text: str) -> str:
    return json.loads(reader_reply(text))["answer"]


def test_choice_with_shared_words_picks_the_best_option():
    assert (
        answer(qa_text("[00:00:00-00:00:10]\nA ball rolls under the kitchen table.", OPTIONS))
        == "A"
    )
    assert answer(qa_text("[00:00:00-00:00:10]\nKeys in a blue bowl.", OPTIONS)) == "B"


def test_choice_without_shared_words_is_a_fixed_guess_or_an_abstention():
    memories = [
        f"[00:00:0{i}-00:00:10]\n[fake model] {i} frames seen; request {i}." for i in range(9)
    ]
    answers = [answer(qa_text(m, OPTIONS)) for m in memories]
    assert answers == [answer(qa_text(m, OPTIONS)) for m in memories]  # deterministic
    assert "E" in answers and set(answers) - {"E"}  # some abstain, some guess
    assert answer(qa_text("", OPTIONS)) == "E"  # an empty memory is never guessed from


def test_free_form_quotes_the_memory_line_sharing_words():
    memory = "[00:00:00-00:00:10]\nThe ball is under the table.\n[00:00:10-00:00:20]\nRain."
    assert answer(qa_text(memory, None)) == "[fake model] The ball is under the table."


def test_reader_spec_answers_qa_requests_and_is_marked_fake():
    model = make_model("fake:reader")
    request = Request(
        messages=(
            Message.text("system", "multiple-choice"),
            Message.text("user", qa_text("ball under the kitchen table", OPTIONS)),
        ),
        purpose="qa",
    )
    reply = model.generate(request)
    assert reply.fake and json.loads(reply.text)["answer"] == "A" and "[fake model]" in reply.text
