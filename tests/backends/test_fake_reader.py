"""`fake:reader`: the smoke profile's answerer reads the memory by a fixed rule."""

import json

from taskmem_lab.backends import Message, Request, make_model


def qa_text(memory: str, options: str | None) -> str:
    opts = f"OPTIONS:\n{options}\n" if options is not None else ""
    return (
        f"MEMORY (full memory):\n{memory}\n\nQUESTION (asked at 00:01:00):\nWhere is the ball?\n"
        f'{opts}\nReply with {{"answer": "<letter>"}}.'
    )


OPTIONS = (
    "A. Under the kitchen table\nB. In the blue bowl\nC. On the fence\nD. By the door\n"
    "E. Cannot tell from memory"
)


def answer(memory: str, options: str | None = OPTIONS, spec: str = "fake:reader") -> str:
    purpose = "qa_choice" if options is not None else "qa_open"
    request = Request(
        messages=(Message.text("system", "answer"), Message.text("user", qa_text(memory, options))),
        purpose=purpose,
    )
    reply = make_model(spec).generate(request)
    assert reply.fake and "[fake model]" in reply.text
    return json.loads(reply.text)["answer"]


def test_choice_with_shared_words_picks_the_best_option():
    assert answer("[00:00:00-00:00:10]\nA ball rolls under the kitchen table.") == "A"
    assert answer("[00:00:00-00:00:10]\nKeys in a blue bowl.") == "B"


def test_choice_without_shared_words_is_a_fixed_guess_or_an_abstention():
    memories = [
        f"[00:00:0{i}-00:00:10]\n[fake model] {i} frames seen; request {i}." for i in range(9)
    ]
    answers = [answer(m) for m in memories]
    assert answers == [answer(m) for m in memories]  # deterministic
    assert "E" in answers and set(answers) - {"E"}  # some abstain, some guess
    assert answer("") == "E"  # an empty memory is never guessed from


def test_free_form_quotes_the_memory_line_sharing_words():
    memory = "[00:00:00-00:00:10]\nThe ball is under the table.\n[00:00:10-00:00:20]\nRain."
    assert answer(memory, None) == "[fake model] The ball is under the table."


def test_plain_fake_keeps_its_own_rule():
    request = Request(
        messages=(
            Message.text("system", "answer"),
            Message.text("user", qa_text("[00:00:00-00:00:10]\nNothing here.", OPTIONS)),
        ),
        purpose="qa_choice",
    )
    assert "E" in make_model("fake").generate(request).text  # abstains: no option quoted


def test_free_form_reads_fake_entries_too():
    memories = [f"[00:00:0{i}-00:00:10]\n[fake model] entry for span {i}." for i in range(9)]
    answers = [answer(m, None) for m in memories]
    assert any(a.startswith("[fake model] entry for span") for a in answers)
    assert any(a.startswith("Insufficient information") for a in answers)
